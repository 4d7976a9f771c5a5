"""Paired rounds: time two (or more) sides in alternation, so a load change on a shared machine hits all alike.

Each round runs side ``a`` then side ``b`` (then any further side) once; a figure is the median over
rounds of the per-pair ratio ``b / a``, reported with its spread (the lowest and highest per-pair ratio). Used by
``attack_throughput.py``, ``method_overhead.py`` and ``train_throughput.py --compare``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

MIN_ROUNDS = 5


@dataclass(frozen=True)
class Ratio:
    """The median of per-pair ratios and their range."""

    median: float
    low: float
    high: float
    pairs: int

    @classmethod
    def of(cls, a: list[float], b: list[float]) -> Ratio:
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        return cls(statistics.median(ratios), min(ratios), max(ratios), len(ratios))

    def __str__(self) -> str:
        return f"{self.median:.2f}x [{self.low:.2f}-{self.high:.2f}, {self.pairs} pairs]"


def rounds(*sides: Callable[[], object], n: int) -> tuple[list, ...]:
    """``n`` rounds, each calling every side once in order; one list of results per side, in round order."""
    out: tuple[list, ...] = tuple([] for _ in sides)
    for _ in range(n):
        for results, side in zip(out, sides, strict=True):
            results.append(side())
    return out


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """``fn`` as a callable that returns its wall seconds."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def paired_seconds(a: Callable[[], object], b: Callable[[], object], n: int) -> tuple[float, Ratio]:
    """One untimed warm-up of each side, then ``n`` timed rounds: (median seconds of ``b``, ratio ``b / a``)."""
    a(), b()
    ta, tb = rounds(timed(a), timed(b), n=n)
    return statistics.median(tb), Ratio.of(ta, tb)
