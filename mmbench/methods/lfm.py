"""LFM: classification and modality-gap alignment objectives mixed by a dynamic weight.

Yang, Wan, Jiang, Xu. *Facilitating Multimodal Classification via Dynamically Learning Modality Gap*.
NeurIPS 2024. Official code: https://github.com/njustkmg/NeurIPS24-LFM (commit ad44fa0,
``Crema_epoch.py``, ``Crema_epoch_learnable.py``); BalanceBenchmark (GeWu-Lab/BalanceBenchmark @ 4c1482f,
``balancemm/trainer/LFM_trainer.py``, ``configs/trainer_config.yaml``) ports the learnable weighting.

From the official code:
- loss ``2 * (a_cls * CE(fused) + a_align * A)`` with ``A`` the mean over modality pairs of
  ``0.5 * (KL(m || p) + KL(m || q))``, ``p, q`` the two unimodal softmax predictions and ``m`` their
  mean (``F.kl_div(p.log(), m, "batchmean")``: the divergence *from* the mixture); the release's model is
  two linear heads whose logits are averaged (mmbench's ``late`` fusion; BalanceBenchmark uses its
  concat head); ``a_cls + a_align = 1``;
- ``weighting="fitted"`` (``Crema_epoch.py``, the README's command): ``a_cls`` is a degree-5 polynomial
  of the epoch fitted to a learnt trajectory (``getAlpha_Learnable_Fitted``: 0.20 at epoch 0, 0.54 at 100);
- ``weighting="learnable"`` (``Crema_epoch_learnable.py``): at the start of every epoch, on a small batch
  of training samples held out of training, ``a_align -= lr_alpha * mean(H_0 g)`` where ``g`` is the
  gradient of the CE and ``H_0 g`` the first parameter tensor's rows of the Hessian-vector product of the
  loss ``a_cls * CE + a_align * A`` with ``g``; ``a_align`` is clipped to [0.05, 0.95] and ``lr_alpha``
  (1e-4) halves every 20 epochs; the release starts at ``a_align`` 0.95, BalanceBenchmark at 0.05
  (``align_init``). The release holds 16 training samples out and uses 8 of them, BalanceBenchmark a
  quarter of its first validation batch (8 of 32).

Deviation (learnable weighting only): mmbench holds out a stratified share ``holdout`` of the training split,
at least one sample per class (0.25%: the release's 16 samples of CREMA-D's 6,698), and uses its first
``alpha_samples``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UNIT
from mmbench.methods.base import Method, check_choices
from mmbench.registry import METHODS

WEIGHTINGS = ("fitted", "learnable")
#: ``a_cls`` as a polynomial of the epoch, lowest degree first (NeurIPS24-LFM ``Crema_epoch.py`` @ ad44fa0)
FITTED = (2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08, -5.39717505e-11)
CLIP = (0.05, 0.95)


def alignment(unimodal_logits: list[torch.Tensor]) -> torch.Tensor:
    """Mean over modality pairs of ``0.5 * (KL(m || p) + KL(m || q))``, ``m = (p + q) / 2`` (batch means)."""
    probs = [F.softmax(z, -1) for z in unimodal_logits]
    terms = []
    for p, q in combinations(probs, 2):
        m = 0.5 * p + 0.5 * q
        terms.append(0.5 * (F.kl_div(p.log(), m, reduction="batchmean") + F.kl_div(q.log(), m, reduction="batchmean")))
    return torch.stack(terms).mean()


def fitted_weight(epoch: int) -> float:
    """``a_cls`` of the fitted schedule at ``epoch``."""
    return sum(c * epoch**i for i, c in enumerate(FITTED))


def hypergradient(model, batch, a_cls: float, a_align: float) -> float:
    """Mean over the first parameter tensor of the Hessian-vector product of ``a_cls * CE + a_align * A``
    with the CE's gradient (the release's ``alpha_grad``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(batch)
    ce = F.cross_entropy(out.logits, batch.labels)
    total = a_cls * ce + a_align * alignment(list(out.unimodal_logits.values()))
    theta = torch.autograd.grad(total, params, create_graph=True, allow_unused=True)
    cls = torch.autograd.grad(ce, params, retain_graph=True, create_graph=True, allow_unused=True)
    used = [(t, c) for t, c in zip(theta, cls) if t is not None and c is not None]
    if theta[0] is None or cls[0] is None:  # the first parameter takes no part in the loss: its product is 0
        return 0.0
    hvp = torch.autograd.grad([t for t, _ in used], params[0], grad_outputs=[c for _, c in used], allow_unused=True)[0]
    return 0.0 if hvp is None else hvp.mean().item()


@METHODS.register("lfm")
class LFM(Method):
    """LFM (NeurIPS 2024): CE and unimodal-prediction alignment, weighted by a fitted or learnt schedule."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        weighting: str = "fitted"  # fitted | learnable
        align_init: Annotated[float, UNIT] = 0.95
        lr_alpha: Annotated[float, NON_NEGATIVE] = 1e-4
        alpha_samples: Annotated[int, AT_LEAST_ONE] = 8
        holdout: Annotated[float, POSITIVE] = 0.0025

        def __post_init__(self):
            check_choices(self, weighting=WEIGHTINGS)
            if self.holdout >= 1:
                raise ValueError(f"holdout must be below 1, got {self.holdout}")

    def __init__(self, params=None):
        super().__init__(params)
        self.a_align = self.params.align_init  # learnable weighting: the current alignment weight

    def holdout_fraction(self) -> float:
        return self.params.holdout if self.params.weighting == "learnable" else 0.0

    def weights(self, epoch: int) -> tuple[float, float]:
        """``(a_cls, a_align)`` for ``epoch``."""
        if self.params.weighting == "fitted":
            a_cls = fitted_weight(epoch)
            return a_cls, 1.0 - a_cls
        return 1.0 - self.a_align, self.a_align

    def on_epoch_start(self, state):
        if self.params.weighting != "learnable":
            return
        p = self.params
        batch = state.holdout.index(slice(0, p.alpha_samples))
        grad = hypergradient(state.model, batch, *self.weights(state.epoch))
        lr = p.lr_alpha / 2 ** (state.epoch // 20)
        self.a_align = min(CLIP[1], max(CLIP[0], self.a_align - lr * grad))
        state.epoch_logs["alpha_grad"] = grad

    def loss(self, model, batch, out, state):
        a_cls, a_align = self.weights(state.epoch)
        ce = F.cross_entropy(out.logits, batch.labels)
        align = alignment(list(out.unimodal_logits.values()))
        return 2 * (a_cls * ce + a_align * align), {"loss_align": align.item(), "weight_align": a_align}
