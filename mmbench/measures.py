"""Per-modality scores: how much each modality contributes or dominates (vectorised, on tensors).

- :func:`true_class_prob`: per-sample softmax probability of the true class;
- :func:`unimodal_scores`, :func:`score_ratios`: each modality's batch confidence, and its ratio over
  the others' (OGM-GE's rule, PMR's rho); :func:`imbalance_ratios`: the same ratio over a whole epoch;
- :func:`coalition_values`: ``v(S)`` for every subset of modalities by re-fusing detached features;
- :func:`shapley_values`, :func:`imbalance_degree`: exact Shapley values of a coalition value function
  and how unequal they are.
"""

from __future__ import annotations

import torch

from mmbench.models.multimodal import MultimodalModel


def true_class_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``softmax(logits)[y]`` (keeps the graph: detach for a measurement)."""
    return torch.softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)


def unimodal_scores(unimodal_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s_m = sum_batch softmax(logits_m)[y]`` (OGM-GE Eq. 8, a batch sum), detached."""
    return {m: true_class_prob(z.detach(), labels).sum() for m, z in unimodal_logits.items()}


def score_ratios(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """``rho_m = s_m / mean_{j != m} s_j``; for two modalities ``s_a / s_v`` and its inverse."""
    names = list(scores)
    return {m: (scores[m] / torch.stack([scores[j] for j in names if j != m]).mean().clamp_min(1e-12)).item()
            for m in names}


def imbalance_ratios(true_prob: torch.Tensor, modalities: list[str]) -> dict[str, float]:
    """OGM-GE's ratio over a whole epoch: ``sum_i p_im / mean_{j != m} sum_i p_ij`` (true-class
    probabilities of the unimodal heads); empty when fewer than two modalities have heads."""
    sums = torch.nansum(true_prob, 0)
    seen = [j for j in range(len(modalities)) if not torch.isnan(true_prob[:, j]).all()]
    if len(seen) < 2:
        return {}
    ratios = score_ratios({modalities[j]: sums[j] for j in seen})
    return {f"imbalance_ratio_{m}": rho for m, rho in ratios.items()}


@torch.no_grad()
def coalition_values(model: MultimodalModel, features: dict[str, torch.Tensor], labels: torch.Tensor,
                     ) -> dict[frozenset, float]:
    """``v(S)`` = batch mean of the true-class probability of the fused prediction when only the
    modalities in ``S`` are kept (the others zeroed), for every ``S``, from already computed features."""
    logits = model.fuse_coalitions({m: f.detach() for m, f in features.items()})
    return {s: true_class_prob(z, labels).mean().item() for s, z in logits.items()}


def shapley_values(value: dict[frozenset, float], players: list[str]) -> dict[str, float]:
    """Exact Shapley values from a coalition value function over all ``2^M`` subsets.

    ``phi_m = sum_{S subset of M without m} |S|! (M-|S|-1)! / M! * [v(S + m) - v(S)]``.
    """
    from itertools import combinations
    from math import factorial

    n = len(players)
    phi = {}
    for m in players:
        others = [p for p in players if p != m]
        total = 0.0
        for size in range(n):
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            for subset in combinations(others, size):
                s = frozenset(subset)
                total += weight * (value[s | {m}] - value[s])
        phi[m] = total
    return phi


def imbalance_degree(phi: dict[str, float]) -> float:
    """``(max_m phi_m - min_m phi_m) / sum_m |phi_m|``: 0 when every modality contributes equally,
    1 when one modality carries the whole contribution and another none (or a negative share)."""
    total = sum(abs(v) for v in phi.values())
    return (max(phi.values()) - min(phi.values())) / total if total > 0 else 0.0
