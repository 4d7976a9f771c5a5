"""G-Blending (Gradient-Blending): per-head loss weights from overfitting-to-generalisation ratios.

Wang, Tran, Feiszli. *What Makes Training Multi-modal Classification Networks Hard?*
CVPR 2020, arXiv 1905.12681. No official code; the formulas were read in two third-party
implementations: MultiBench (https://github.com/pliang279/MultiBench @ 49f9be2,
``training_structures/gradient_blend.py``) and BalanceMM
(https://github.com/GeWu-Lab/BalanceBenchmark @ 4c1482f, ``balancemm/trainer/GBlending_trainer.py``).
What is taken from where, the deviations and the differential check: ``docs/methods/gblending.md``.

The rule (paper; both implementations):
- one head per modality plus the fused head, loss ``sum_k w_k CE_k`` with ``sum_k w_k = 1``;
- over a super-epoch of ``n`` epochs, each head's generalisation gain
  ``G_k = Lval_k(start) - Lval_k(end)`` and overfitting increase
  ``O_k = (Lval_k - Ltrain_k)(end) - (Lval_k - Ltrain_k)(start)``;
- ``w_k = |G_k| / O_k^2``, normalised to sum 1 (``abs`` as BalanceMM and MultiBench's
  ``delta=True`` branch), re-estimated every ``super_epoch`` epochs ("online" G-Blend).

Estimators (``estimator``):
- ``heldout`` (default; the paper's, MultiBench's and BalanceMM's): at the start of every
  super-epoch (the first included), a copy of the model is trained for each head alone for
  ``super_epoch`` epochs (a unimodal head with its encoder, the fused head with all encoders and
  the fusion) by the trainer (``state.fit_copy``), on the training split minus a stratified
  ``holdout`` share kept out of the whole run (MultiBench's ``v_rate`` 0.08); ``G`` and ``O``
  come from each copy's mean losses on the training part and the held-out part before and after.
  The copies are discarded; the run's model then trains ``super_epoch`` epochs with those weights.
- ``trajectory`` (an mmbench reconstruction, cheaper: no copies): every head's losses on
  ``train`` and ``val`` are measured on the blended run itself at each super-epoch boundary and
  set the next super-epoch's weights; the first super-epoch uses equal weights.

Also mmbench's: losses are per-sample means in eval mode (BalanceMM sums batch losses);
``O_k^2`` is floored at 1e-12 and if every ``G_k`` is zero the previous weights are kept;
MultiBench's default ``delta=False`` form (end values instead of differences) and its fine-tuning
of the fused head after each block (``finetune_epoch``) are not reproduced; prediction is the
fused head's. More than two modalities: one head per modality, as in the paper.

Defaults: ``super_epoch`` 10 (BalanceMM; MultiBench uses 20). The weights and each head's
``G`` and ``O`` are logged (``w_fused``, ``w_<m>``, ``G_<head>``, ``O_<head>``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import AT_LEAST_ONE, Range
from mmbench.evaluation import eval_mode, predict
from mmbench.methods.base import Method, check_choices
from mmbench.models.multimodal import with_unimodal_heads
from mmbench.registry import METHODS

FUSED = "fused"


def blend_weights(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
                  ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """``(train, val)`` mean losses per head at a super-epoch's start and end -> ``(w, G, O)``."""
    gain = {k: before[k][1] - after[k][1] for k in before}
    overfit = {k: (after[k][1] - after[k][0]) - (before[k][1] - before[k][0]) for k in before}
    raw = {k: abs(gain[k]) / max(overfit[k] ** 2, 1e-12) for k in before}
    total = sum(raw.values())
    return ({k: v / total for k, v in raw.items()} if total > 0 else {}), gain, overfit


def head_logits(model, batch, head: str) -> torch.Tensor:
    """The logits of one head: the fused one, or a modality's own head with only its encoder run."""
    if head == FUSED:
        return model(batch).logits
    return model(batch, mask=[m for m in model.modalities if m != head]).unimodal_logits[head]


@torch.no_grad()
def head_loss(model, head: str, data, batch_size: int) -> float:
    """Mean cross-entropy of one head over ``data``, eval mode."""
    with eval_mode(model):
        total = sum(F.cross_entropy(head_logits(model, b, head), b.labels, reduction="sum")
                    for b in data.batches(batch_size))
    return total.item() / len(data)


@METHODS.register("gblending")
class GBlending(Method):
    """G-Blending (CVPR 2020): per-head losses weighted by G/O^2, re-estimated every super-epoch."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        super_epoch: Annotated[int, AT_LEAST_ONE] = 10  # epochs between re-estimations (and each copy's training length)
        estimator: str = "heldout"  # heldout: copies per head on held-out train data | trajectory (mmbench)
        holdout: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.08  # heldout: share of train kept out (MultiBench v_rate)

        def __post_init__(self):
            check_choices(self, estimator=("heldout", "trajectory"))

    def __init__(self, params=None):
        super().__init__(params)
        self.weights: dict[str, float] | None = None  # None: equal weights
        self._start: dict[str, tuple[float, float]] | None = None  # trajectory: losses at the super-epoch's start

    def build_model(self, spec):
        return with_unimodal_heads(spec)

    def holdout_fraction(self) -> float:
        return self.params.holdout if self.params.estimator == "heldout" else 0.0

    def on_epoch_start(self, state):
        if state.epoch % self.params.super_epoch:
            return
        if self.params.estimator == "heldout":
            weights, gain, overfit = self.estimate(state)
        else:
            now = self.head_losses(state.model, state)
            weights, gain, overfit = blend_weights(self._start, now) if self._start is not None else ({}, {}, {})
            self._start = now
        self.weights = weights or self.weights
        state.epoch_logs.update({f"G_{k}": v for k, v in gain.items()})
        state.epoch_logs.update({f"O_{k}": v for k, v in overfit.items()})

    def estimate(self, state):
        """``(w, G, O)`` from a copy per head trained ``super_epoch`` epochs on ``state.train``,
        its losses measured on ``state.train`` and ``state.holdout`` before and after."""
        size = state.batch_size * 4
        before, after = {}, {}
        for head in [*state.model.modalities, FUSED]:
            model = copy.deepcopy(state.model)
            before[head] = (head_loss(model, head, state.train, size), head_loss(model, head, state.holdout, size))
            state.fit_copy(model, lambda m, b, h=head: F.cross_entropy(head_logits(m, b, h), b.labels),
                           state.train, self.params.super_epoch)
            after[head] = (head_loss(model, head, state.train, size), head_loss(model, head, state.holdout, size))
        return blend_weights(before, after)

    def head_losses(self, model, state) -> dict[str, tuple[float, float]]:
        """Trajectory estimator: mean cross-entropy of every head on ``train`` and ``val`` (eval mode)."""
        losses = {}
        with eval_mode(model):
            for split in (state.train, state.val):
                fused, unimodal = predict(model, self, split, state.batch_size * 4)
                for k, z in {FUSED: fused, **unimodal}.items():
                    losses.setdefault(k, []).append(F.cross_entropy(z, split.labels).item())
        return {k: (v[0], v[1]) for k, v in losses.items()}

    def loss(self, model, batch, out, state):
        losses = {FUSED: F.cross_entropy(out.logits, batch.labels)}
        losses.update({m: F.cross_entropy(z, batch.labels) for m, z in out.unimodal_logits.items()})
        weights = self.weights or {k: 1.0 / len(losses) for k in losses}
        total = sum(weights[k] * v for k, v in losses.items())
        return total, {**{f"w_{k}": weights[k] for k in losses}, **{f"loss_{k}": v.item() for k, v in losses.items()}}
