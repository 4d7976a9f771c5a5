"""G-Blending (Gradient-Blending): per-head loss weights from overfitting-to-generalisation ratios.

Wang, Tran, Feiszli. *What Makes Training Multi-modal Classification Networks Hard?*
CVPR 2020, arXiv 1905.12681. No official code; the formulas were read in two third-party
implementations: MultiBench (https://github.com/pliang279/MultiBench,
``training_structures/gradient_blend.py``) and BalanceMM
(https://github.com/GeWu-Lab/BalanceBenchmark, ``balancemm/trainer/GBlending_trainer.py``).

The rule (paper; both implementations):
- one head per modality plus the fused head, loss ``sum_k w_k CE_k`` with ``sum_k w_k = 1``;
- over a super-epoch of ``n`` epochs, each head's generalisation gain
  ``G_k = Lval_k(start) - Lval_k(end)`` and overfitting increase
  ``O_k = (Lval_k - Ltrain_k)(end) - (Lval_k - Ltrain_k)(start)``;
- ``w_k = |G_k| / O_k^2``, normalised to sum 1 (``abs`` as BalanceMM and MultiBench's
  ``delta=True`` branch; MultiBench's default ``delta=False`` uses the end values instead of the
  differences, not reproduced), re-estimated every ``super_epoch`` epochs ("online" G-Blend).

mmbench choices and reconstructions, documented:
- *Where the losses come from* [mmbench reconstruction]. Both implementations train a copy of
  each head's model alone for ``super_epoch`` epochs to measure ``G`` and ``O``. mmbench does not
  run a training loop inside a method: it measures every head's mean cross-entropy on ``train``
  and ``val`` (eval mode) at each super-epoch boundary of the blended training itself, and sets
  the next super-epoch's weights from the last one. The first super-epoch uses equal weights.
- *Which data.* ``val`` is mmbench's validation split (carved from train, never test); MultiBench
  holds out 8 % of train, BalanceMM measures on its "validation" loader, which is the test set.
- *Means, not sums.* BalanceMM adds up per-batch losses, so its ``O`` mixes a sum over the train
  batches with a sum over the val batches; mmbench uses per-sample means on both splits.
- ``O_k^2`` is floored at 1e-12; if every ``G_k`` is zero the previous weights are kept.
- MultiBench's fine-tuning of the fused head after each block (``finetune_epoch``) is omitted;
  prediction is the fused head's.
- *More than two modalities*: one head per modality, as in the paper (three streams on Kinetics).

Defaults: ``super_epoch`` 10 (BalanceMM; MultiBench uses 20). The weights and each head's
``G`` and ``O`` are logged (``w_fused``, ``w_<m>``, ``G_<head>``, ``O_<head>``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from mmbench.evaluation import predict
from mmbench.methods.base import Method
from mmbench.methods.modulation import eval_mode, with_unimodal_heads
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


@METHODS.register("gblending")
class GBlending(Method):
    """G-Blending (CVPR 2020): per-head losses weighted by G/O^2, re-estimated every super-epoch."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        super_epoch: int = 10  # epochs between weight re-estimations

        def __post_init__(self):
            if self.super_epoch < 1:
                raise ValueError(f"super_epoch must be at least 1, got {self.super_epoch}")

    def __init__(self, params=None):
        super().__init__(params)
        self.weights: dict[str, float] | None = None  # None: equal weights
        self._start: dict[str, tuple[float, float]] | None = None  # losses at the super-epoch's start

    def build_model(self, spec):
        return with_unimodal_heads(spec)

    def head_losses(self, model, state) -> dict[str, tuple[float, float]]:
        """Mean cross-entropy of every head on ``train`` and ``val`` (eval mode, no gradient)."""
        losses = {}
        with eval_mode(model):
            for split in (state.train, state.val):
                fused, unimodal = predict(model, self, split, state.batch_size * 4)
                for k, z in {FUSED: fused, **unimodal}.items():
                    losses.setdefault(k, []).append(F.cross_entropy(z, split.labels).item())
        return {k: (v[0], v[1]) for k, v in losses.items()}

    def on_epoch_start(self, state):
        if state.epoch % self.params.super_epoch:
            return
        now = self.head_losses(state.model, state)
        if self._start is not None:
            weights, gain, overfit = blend_weights(self._start, now)
            self.weights = weights or self.weights
            state.epoch_logs.update({f"G_{k}": v for k, v in gain.items()})
            state.epoch_logs.update({f"O_{k}": v for k, v in overfit.items()})
        self._start = now

    def loss(self, model, batch, out, state):
        losses = {FUSED: F.cross_entropy(out.logits, batch.labels)}
        losses.update({m: F.cross_entropy(z, batch.labels) for m, z in out.unimodal_logits.items()})
        weights = self.weights or {k: 1.0 / len(losses) for k in losses}
        total = sum(weights[k] * v for k, v in losses.items())
        return total, {**{f"w_{k}": weights[k] for k in losses}, **{f"loss_{k}": v.item() for k, v in losses.items()}}
