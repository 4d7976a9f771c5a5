"""Robustness of an accuracy-vs-noise-level curve (``docs/protocols.md``): MultiBench's relative and
effective robustness, the area under the curve over the actual levels, the worst level.

Plain Python on lists of numbers (no torch), so the report can use them.
"""

from __future__ import annotations


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
