"""MBSD: unimodal heads trained beside the fusion, with confidence-gap-weighted self-distillation.

BalanceBenchmark (Xu, Cui, Huang, Wang, Hu, arXiv 2502.10816) lists MBSD among its objective methods;
its implementation (GeWu-Lab/BalanceBenchmark @ 4c1482f, ``balancemm/trainer/MBSD_trainer.py``,
settings in ``configs/trainer_config.yaml``) is the reference here: the original authors' code was not
found and the paper was not checked against it (``docs/methods/mbsd.md``).

From BalanceBenchmark's ``training_step``, inside the window ``modulation_starts <= epoch <=
modulation_ends`` (0 and 80: the whole run):
- loss ``CE(fused) + sum_m CE(unimodal_m) + L_RS + L_KL``; outside the window ``CE(fused)`` alone;
- for a pair of modalities with true-class probabilities ``p_a, p_b``: per-sample weight
  ``w = |p_a - p_b|`` where at least one of the two predicts the label, else 0; ``p_s = max``, ``p_w = min``;
- ``L_KL = mean_batch(w * kl_div(p_s, p_w))`` with ``kl_div(x, t) = t * (log t - x)`` (``torch``'s
  ``F.kl_div``, whose first argument is read as a log-probability, called on probabilities);
- ``L_RS = mean_batch(w * mean_classes((u_a - u_b)^2))`` with ``u`` the unimodal logits for two
  modalities and the unimodal softmax probabilities for three; with three modalities both terms are
  the mean over the three pairs (mmbench: over all pairs for any number);
- gradients flow through ``w``, ``p_s`` and ``p_w`` (they are built from graph tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE
from mmbench.methods.base import Method
from mmbench.registry import METHODS


def distillation_terms(unimodal_logits: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_KL, L_RS)``, each the mean over modality pairs (BalanceBenchmark's rule, module docstring)."""
    probs = [F.softmax(z, 1) for z in unimodal_logits]
    responses = unimodal_logits if len(unimodal_logits) == 2 else probs
    num_classes = unimodal_logits[0].shape[1]
    kl, rs = [], []
    for a, b in combinations(range(len(probs)), 2):
        pa, pb = (probs[m].gather(1, labels[:, None]).squeeze(1) for m in (a, b))
        either_right = (probs[a].argmax(1) == labels) | (probs[b].argmax(1) == labels)
        w = torch.where(either_right, (pa - pb).abs(), torch.zeros_like(pa))
        kl.append((w * F.kl_div(torch.maximum(pa, pb), torch.minimum(pa, pb), reduction="none")).mean())
        rs.append((w * (responses[a] - responses[b]).pow(2).sum(1) / num_classes).mean())
    return torch.stack(kl).mean(), torch.stack(rs).mean()


@METHODS.register("mbsd")
class MBSD(Method):
    """MBSD (BalanceBenchmark's objective method): unimodal CEs plus confidence-gap-weighted distillation terms."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        modulation_starts: Annotated[int, NON_NEGATIVE] = 0
        modulation_ends: Annotated[int, NON_NEGATIVE] = 80

    def loss(self, model, batch, out, state):
        fused = F.cross_entropy(out.logits, batch.labels)
        if not self.params.modulation_starts <= state.epoch <= self.params.modulation_ends:
            return fused, {}
        logits = list(out.unimodal_logits.values())
        unimodal = sum(F.cross_entropy(z, batch.labels) for z in logits)
        kl, rs = distillation_terms(logits, batch.labels)
        return fused + unimodal + rs + kl, {"loss_kl": kl.item(), "loss_rs": rs.item()}
