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


# -- robustness of an accuracy-vs-noise-level curve (protocols.md §1.4) ----------------------


def _curve(levels, accs) -> tuple[list[float], list[float]]:
    levels, accs = [float(v) for v in levels], [float(v) for v in accs]
    if len(levels) != len(accs) or not levels:
        raise ValueError(f"a curve needs one accuracy per level, got {len(levels)} levels and {len(accs)} values")
    order = sorted(range(len(levels)), key=levels.__getitem__)
    return [levels[i] for i in order], [accs[i] for i in order]


def relative_robustness(accs, step: float = 0.1) -> float:
    """MultiBench's relative robustness: the trapezoid area under the curve with a fixed ``step``.

    ``RR = sum_{i=0}^{n-1} step * (f_i + f_{i+1}) / 2`` for scores ``f_0 … f_n`` at successive
    noise levels (MultiBench: 0.0, 0.1, … so ``step = 0.1``), before MultiBench's min-max
    normalisation against its reference models (:func:`minmax_normalise`). A single score gives 0.
    """
    f = [float(v) for v in accs]
    return float(sum(step * (a + b) / 2 for a, b in zip(f[:-1], f[1:])))


def effective_robustness(accs, reference) -> float:
    """MultiBench's effective robustness: the summed gap to the reference (late-fusion) curve shifted to the same clean score.

    ``ER = sum_{i=0}^{n} [f_i - (LF_i + f_0 - LF_0)]``, with ``f`` and ``LF`` at the same levels,
    index 0 the clean level. Positive: the method degrades more slowly than the reference.
    """
    f, r = [float(v) for v in accs], [float(v) for v in reference]
    if len(f) != len(r) or not f:
        raise ValueError(f"effective robustness needs both curves at the same levels, got {len(f)} and {len(r)} values")
    return float(sum(fi - (ri + f[0] - r[0]) for fi, ri in zip(f, r)))


def robustness_auc(levels, accs, normalize: bool = True) -> float:
    """Area under the accuracy-vs-level curve over the actual levels (trapezoid, levels sorted).

    With ``normalize`` the area is divided by the level range: the mean accuracy along the
    curve, comparable across sweeps of different ranges (MultiBench's RR over 0 … 0.9 equals the
    unnormalised area). A curve with one level gives that level's accuracy (normalised) or 0.
    """
    x, y = _curve(levels, accs)
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(x[:-1], x[1:], y[:-1], y[1:]))
    if not normalize:
        return float(area)
    width = x[-1] - x[0]
    return float(area / width) if width > 0 else y[0]


def worst_level(levels, accs) -> tuple[float, float]:
    """``(level, accuracy)`` of the curve's lowest accuracy (the lowest level among ties)."""
    x, y = _curve(levels, accs)
    i = min(range(len(y)), key=lambda k: (y[k], x[k]))
    return x[i], y[i]


def minmax_normalise(value: float, references) -> float:
    """MultiBench's normalisation: a score's position in [0, 1] between the reference models' min and max."""
    refs = [float(v) for v in references]
    lo, hi = min(refs), max(refs)
    return float((value - lo) / (hi - lo)) if hi > lo else float("nan")
