"""CML: Calibrating Multimodal Learning.

Ma, Zhang, Wu, Zhu, Hu, Zhang. *Calibrating Multimodal Learning*. ICML 2023, arXiv 2306.01265.
Official code: https://github.com/QingyangZhang/CML (commit 9d2496e), written for incomplete
multi-view models (MIWAE, CPM-Nets); BalanceBenchmark (GeWu-Lab/BalanceBenchmark @ 4c1482f,
``balancemm/trainer/CML_trainer.py``) adapts it to late-fusion classifiers.

The principle: a prediction should not become *more* confident when a modality is removed.
From the official code (``miwae/train.py``, stage 2):
- every sample gets its own random removal order; version ``k`` (``k = 0..M-1``) of a sample has the
  first ``k`` modalities of its order removed, so each version is a subset of the previous one;
- loss ``mean_k CE(z_k, y) + lam * sum_k R_k`` with ``R_k`` summed over the batch per sample:
  ``relu(c_{k+1} - c_k)`` where version ``k``'s prediction is right (gradient to both), plus
  ``relu(c_{k+1} - sg(c_k))`` where both are wrong (``c``: max softmax probability; ``sg``: stop-gradient);
- ``lam = beta / 100`` with the README's ``--beta 10``: 0.1 (also BalanceBenchmark's ``lam``);
  ``epsilon`` (the hinge's margin) 0.

``variant="balancemm"``: BalanceBenchmark's adaptation: one random removal order per epoch for all
samples, and ``R_k = relu(sum_batch (c_{k+1} - c_k))`` (a hinge on the batch sum, no correctness terms).

Reconstructed (mmbench's design, ``docs/methods/cml.md``): on a late-fusion classifier a removed modality's
*features* are zeros (mmbench's masking; for the concat head this is BalanceBenchmark's
``out - unimodal_m + b / M``); the release replaces missing *inputs* and imputes them with MIWAE.
Evaluation is the plain fused prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE
from mmbench.methods.base import Method, check_choices
from mmbench.registry import METHODS

VARIANTS = ("release", "balancemm")


def confidence_penalty(full: torch.Tensor, partial: torch.Tensor, labels: torch.Tensor, epsilon: float,
                       variant: str) -> torch.Tensor:
    """``R`` for one removal step: ``full``/``partial`` are the logits before and after it."""
    p_full, p_part = F.softmax(full, 1), F.softmax(partial, 1)
    c_full, pred_full = p_full.max(1)
    c_part, pred_part = p_part.max(1)
    if variant == "balancemm":
        return F.relu((c_part - c_full).sum())
    right = (pred_full == labels).to(full.dtype)
    both_wrong = ((pred_full != labels) & (pred_part != labels)).to(full.dtype)
    return (F.relu((c_part - c_full) * right - epsilon) + F.relu((c_part - c_full.detach()) * both_wrong - epsilon)).sum()


@METHODS.register("cml")
class CML(Method):
    """CML (ICML 2023): penalise confidence that rises when a modality is removed (reconstructed for late fusion)."""

    reconstructed = ("a removed modality's features are zeros (the release imputes missing inputs with MIWAE)",)

    @dataclass(frozen=True)
    class Params:
        lam: Annotated[float, NON_NEGATIVE] = 0.1
        epsilon: Annotated[float, NON_NEGATIVE] = 0.0
        variant: str = "release"  # release | balancemm

        def __post_init__(self):
            check_choices(self, variant=VARIANTS)

    def __init__(self, params=None):
        super().__init__(params)
        self.order: list[int] | None = None  # balancemm: this epoch's removal order

    def on_epoch_start(self, state):
        if self.params.variant == "balancemm":
            self.order = torch.randperm(len(state.train.modalities), generator=_cpu(state.generator)).tolist()

    def loss(self, model, batch, out, state):
        p, names, labels = self.params, list(out.features), batch.labels
        n, m = len(labels), len(names)
        if p.variant == "balancemm":
            order = torch.tensor(self.order if self.order is not None else list(range(m)), device=labels.device)
            order = order.expand(n, m)
        else:
            order = torch.rand(n, m, generator=state.generator, device=state.generator.device).argsort(1)
            order = order.to(labels.device)
        keep = torch.ones(n, m, dtype=out.logits.dtype, device=labels.device)
        logits, ce, penalty = out.logits, F.cross_entropy(out.logits, labels), out.logits.new_zeros(())
        for k in range(m - 1):
            keep = keep.scatter(1, order[:, k:k + 1], 0.0)
            partial, _ = model.fuse({name: out.features[name] * keep[:, j:j + 1] for j, name in enumerate(names)})
            ce = ce + F.cross_entropy(partial, labels)
            penalty = penalty + confidence_penalty(logits, partial, labels, p.epsilon, p.variant)
            logits = partial
        return ce / m + p.lam * penalty, {"confidence_penalty": penalty.item()}


def _cpu(generator: torch.Generator) -> torch.Generator:
    """A CPU generator seeded from ``generator`` (``randperm`` on a small count)."""
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)
