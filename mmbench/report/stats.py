"""Statistics behind the leaderboard: confidence intervals and paired tests (numpy and scipy.stats).

- :func:`t_interval`: the two-sided Student-t interval of a mean, ``mean ± t_{1-a/2, n-1} · s / √n``;
- :func:`bootstrap_interval`: the percentile bootstrap interval of a mean (seeded, so reports are
  reproducible). With 3 seeds there are only 10 distinct resampled means: the interval is too
  narrow, which is why the t-interval is the default;
- :func:`paired_tests`: a method against the reference method on the same training seeds: the
  paired t-test and the Wilcoxon signed-rank test (exact for small n). The Wilcoxon test cannot
  go below ``p = 2 / 2^n`` (n = 5 seeds: 0.0625), so with few seeds only the t-test can reject;
- :func:`holm`: Holm's step-down correction over the methods compared with one reference.

Degenerate cases are answered, not left to warnings: identical results give ``p = 1``; a
constant non-zero difference gives ``p = 0`` for the t-test; fewer than two pairs give ``nan``.

The t distribution comes from ``scipy.special`` and the exact Wilcoxon null distribution is counted
here; ``scipy.stats`` (slow to import) is loaded only for a Wilcoxon test with ties or zero differences.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean; ``(nan, nan)`` with fewer than two values."""
    from scipy.special import stdtrit  # the t quantile

    x = _finite(values)
    n = len(x)
    if n < 2:
        return float("nan"), float("nan")
    mean, sem = x.mean(), x.std(ddof=1) / np.sqrt(n)
    half = stdtrit(n - 1, 0.5 + confidence / 2) * sem
    return float(mean - half), float(mean + half)


def bootstrap_interval(values, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; ``(nan, nan)`` with fewer than two values."""
    x = _finite(values)
    n = len(x)
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def interval(values, method: str = "t", confidence: float = CONFIDENCE) -> tuple[float, float]:
    if method == "t":
        return t_interval(values, confidence)
    if method == "bootstrap":
        return bootstrap_interval(values, confidence)
    raise ValueError(f"unknown interval method {method!r}")


@dataclass(frozen=True)
class PairedResult:
    n: int  # number of pairs (seeds present in both)
    diff: float  # mean of (method - reference)
    p_t: float  # paired t-test, two-sided
    p_w: float  # Wilcoxon signed-rank, two-sided


def _paired_t(d: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test on the differences ``d`` (``scipy.stats.ttest_rel``)."""
    from scipy.special import stdtr  # the t distribution function

    t = d.mean() / np.sqrt(d.var(ddof=1) / len(d))
    return float(min(1.0, 2 * stdtr(len(d) - 1, -abs(t))))


def _wilcoxon(d: np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test on ``d``: exact (the null distribution of the
    rank sum counted over the 2^n sign patterns) without ties or zeros and n <= 50, as
    ``scipy.stats.wilcoxon`` does; otherwise ``scipy.stats.wilcoxon`` itself."""
    n, abs_d = len(d), np.abs(d)
    if n > 50 or np.any(d == 0) or len(np.unique(abs_d)) < n:
        from scipy import stats

        return float(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    ranks = np.empty(n)
    ranks[np.argsort(abs_d)] = np.arange(1, n + 1)
    r_plus = int(ranks[d > 0].sum())
    counts = np.zeros(n * (n + 1) // 2 + 1)  # sign patterns per rank sum
    counts[0] = 1
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    pmf = counts / 2.0 ** n
    return float(min(1.0, 2 * min(pmf[r_plus:].sum(), pmf[:r_plus + 1].sum())))


def paired_tests(x, y) -> PairedResult:
    """Two-sided paired t-test and Wilcoxon signed-rank test of ``x`` against ``y`` (same order)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n == 0:
        return PairedResult(0, float("nan"), float("nan"), float("nan"))
    d = x - y
    diff = float(d.mean())
    if n < 2:
        return PairedResult(n, diff, float("nan"), float("nan"))
    scale = max(1.0, float(np.max(np.abs(np.concatenate([x, y])))))
    if np.all(np.abs(d) <= 1e-12 * scale):
        return PairedResult(n, 0.0, 1.0, 1.0)  # identical: no evidence of a difference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_t = 0.0 if np.ptp(d) <= 1e-12 * scale else _paired_t(d)  # 0: the same non-zero difference on every seed
        try:
            p_w = _wilcoxon(d)
        except ValueError:
            p_w = float("nan")
    return PairedResult(n, diff, p_t, p_w)


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values (same order; ``nan`` stays ``nan`` and does not count)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
