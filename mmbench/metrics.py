"""Classification metrics on label tensors (vectorised, no per-sample Python)."""

from __future__ import annotations

import torch


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return (pred == labels).float().mean().item() if len(labels) else float("nan")


def true_class_prob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``softmax(logits)[y]`` (keeps the graph: detach for a measurement)."""
    return torch.softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[true, predicted]`` counts."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``labels`` or ``pred``."""
    cm = confusion_matrix(pred, labels, num_classes).double()
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted
    seen = denom > 0
    f1 = torch.where(seen, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    return (f1[seen].mean().item()) if seen.any() else float("nan")


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
