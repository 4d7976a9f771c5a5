"""The analysis: runs grouped into blocks and entries, the tidy run × metric table (test metrics,
cost, attack levels, robustness), per-group statistics with paired tests against the reference,
the wide leaderboard, and :func:`build_report`, which ties them to published figures and warnings.

``long``: one row per run × metric (``runs.csv``). ``stats``: one row per group (dataset × method
by default, ``--group-by``) × metric: ``n`` training seeds, mean, std, 95% interval (Student t, or
percentile bootstrap), rank within the block, best marked, and the paired comparison with the
reference method on the same seeds (paired t-test and Wilcoxon signed-rank p-values,
Holm-corrected over the methods of a block; not for cost, whose parameter counts are deterministic
and timings depend on the load). ``wide``: ``stats`` with one row per group (``leaderboard.csv``).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mmbench.errors import MMBenchError
from mmbench.registry import unknown_name_message
from mmbench.report.collect import filter_runs, incomplete_statuses, read_runs
from mmbench.report.labels import (
    METRIC_ALIASES,
    direction,
    is_cost,
    metric_kind,
    metric_order,
    reference_for,
)
from mmbench.report.published import published_table
from mmbench.report.robustness import attack_curves, effective_reference, level_metric, robustness_rows
from mmbench.report.stats import CONFIDENCE, holm, interval, paired_tests
from mmbench.results import incomplete_note

CI_METHODS = ("t", "bootstrap")
DEFAULT_GROUP_BY = ("dataset", "method")


# ---------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------


@dataclass
class Grouping:
    """Row keys: ``entry`` names a row inside a ``block`` (a leaderboard table)."""

    names: list[str]  # as the user wrote them
    columns: list[str]  # run-table columns
    entry: str  # column whose values are compared (method, unless --group-by leaves it out)
    blocks: list[str]  # the other columns

    @property
    def entry_name(self) -> str:
        return self.names[self.columns.index(self.entry)]


def resolve_grouping(runs: pd.DataFrame, names: list[str] | tuple[str, ...] | None) -> Grouping:
    names = list(names or DEFAULT_GROUP_BY)
    columns = []
    for name in names:
        for candidate in (name, f"config.{name}"):
            if candidate in runs.columns:
                columns.append(candidate)
                break
        else:
            options = [c for c in runs.columns if c.startswith("config.") or c in ("dataset", "method", "seed")]
            options = list(dict.fromkeys(c[len("config."):] if c.startswith("config.") else c for c in options))
            raise MMBenchError(unknown_name_message("--group-by key", name, options))
    entry = "method" if "method" in columns else columns[-1]
    return Grouping(names, columns, entry, [c for c in columns if c != entry])


def _block_labels(df: pd.DataFrame, grouping: Grouping) -> pd.Series:
    if not grouping.blocks:
        return pd.Series("all", index=df.index)
    parts = []
    for col, name in zip(grouping.columns, grouping.names):
        if col in grouping.blocks:
            parts.append(df[col].astype(str) if col == "dataset" else f"{name}=" + df[col].astype(str))
    label = parts[0]
    for p in parts[1:]:
        label = label + " · " + p
    return label


def _mixing_warnings(runs: pd.DataFrame, grouping: Grouping) -> list[str]:
    """Groups that lump runs of different configurations (besides the seed) or repeat a seed."""
    out = []
    cfg_cols = [c for c in runs.columns if c.startswith("config.") and c not in grouping.columns
                and c not in ("config.seed", "config.device")]
    for key, g in runs.groupby(["block", "entry"], sort=False):
        varying = [c[len("config."):] for c in cfg_cols if g[c].astype(str).nunique() > 1]
        if varying:
            out.append(f"{key[0]} / {key[1]}: runs differ in {', '.join(varying[:4])}"
                       f"{' …' if len(varying) > 4 else ''}; split them with --group-by "
                       f"{','.join(grouping.names + varying[:1])}")
        elif g["seed"].duplicated().any():
            out.append(f"{key[0]} / {key[1]}: several runs share a seed; their values are averaged per seed "
                       "for the paired tests")
    return out

# ---------------------------------------------------------------------------------------
# Tidy table, statistics, leaderboard
# ---------------------------------------------------------------------------------------


def run_metric_columns(runs: pd.DataFrame) -> list[str]:
    cols = [c for c in runs.columns if c.startswith("test_") or c == "val_acc" or (is_cost(c) and c != "path")]
    return [c for c in cols if pd.api.types.is_numeric_dtype(runs[c])]


def long_table(runs: pd.DataFrame, curves: pd.DataFrame, grouping: Grouping, reference: str | None) -> pd.DataFrame:
    """One row per run × metric (values in their own units: accuracies as fractions)."""
    keys = ["run_id", "block", "entry", "seed", *grouping.columns]
    keys = list(dict.fromkeys(keys))
    metrics = run_metric_columns(runs)
    base = runs[keys + metrics].melt(id_vars=keys, var_name="metric", value_name="value")
    base = base.dropna(subset=["value"])
    frames = [base.assign(kind=base["metric"].map(metric_kind))]
    if not curves.empty:
        c = curves.join(runs.set_index("run_id")[[k for k in keys if k != "run_id"]], on="run_id", how="inner")
        c = c.assign(metric=[level_metric(cv, lv) for cv, lv in zip(c["curve"], c["level"])], value=c["acc"],
                     kind="attack")
        frames.append(c[keys + ["metric", "value", "kind", "curve", "protocol", "attack", "modalities", "level",
                                "n_attack_seeds"]])
        rob = pd.DataFrame(robustness_rows(runs, curves, reference))
        if not rob.empty:
            rob = rob.join(runs.set_index("run_id")[[k for k in keys if k != "run_id"]], on="run_id", how="inner")
            frames.append(rob.assign(kind="robustness"))
    out = pd.concat(frames, ignore_index=True)
    cols = keys + ["metric", "value", "kind", "curve", "protocol", "attack", "modalities", "level", "n_attack_seeds"]
    for col in cols:
        if col not in out.columns:
            out[col] = np.nan
    return out[cols]


def aggregate(long: pd.DataFrame, grouping: Grouping, reference: str | None = "joint", ci: str = "t",
              alpha: float = 0.05, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per block × entry × metric: n, mean, std, interval, rank, best, paired tests vs the reference."""
    if ci not in CI_METHODS:
        raise MMBenchError(unknown_name_message("--ci", ci, list(CI_METHODS)))
    group_cols = ["block", "entry", *[c for c in grouping.columns]]
    group_cols = list(dict.fromkeys(group_cols))
    rows = []
    for key, g in long.groupby(group_cols + ["metric"], sort=False, dropna=False):
        values = g["value"].to_numpy(float)
        values = values[np.isfinite(values)]
        n = len(values)
        lo, hi = interval(values, ci, confidence)
        rows.append({**dict(zip(group_cols, key[:-1])), "metric": key[-1], "kind": g["kind"].iloc[0], "n": n,
                     "mean": float(values.mean()) if n else np.nan,
                     "std": float(values.std(ddof=1)) if n > 1 else np.nan,
                     "ci_low": lo, "ci_high": hi,
                     "min": float(values.min()) if n else np.nan, "max": float(values.max()) if n else np.nan})
    stats = pd.DataFrame(rows)
    if stats.empty:
        return stats
    # ranks and best per block and metric
    stats["direction"] = stats["metric"].map(direction)
    ascending = stats["direction"] < 0
    rank_hi = stats["mean"].where(~ascending, -stats["mean"]).where(stats["direction"] != 0)
    stats["rank"] = rank_hi.groupby([stats["block"], stats["metric"]], sort=False).rank(ascending=False, method="min")
    stats["best"] = stats["rank"] == 1
    # paired comparison with the reference, by seed (several runs with one seed: their mean)
    seed_means = long.groupby(["block", "entry", "metric", "seed"], sort=False)["value"].mean().dropna()
    per_seed = {k: v.droplevel([0, 1, 2]) for k, v in seed_means.groupby(level=[0, 1, 2], sort=False)}
    refs = {b: reference_for(g["entry"], reference) for b, g in long.groupby("block", sort=False)}
    m = len(stats)
    out = {"reference": [None] * m, "n_pairs": np.full(m, np.nan), "diff": np.full(m, np.nan),
           "p_t": np.full(m, np.nan), "p_w": np.full(m, np.nan), "p_t_holm": np.full(m, np.nan)}
    blocks, entries, metrics = stats["block"].tolist(), stats["entry"].tolist(), stats["metric"].tolist()
    compared: dict[tuple[str, str], list[int]] = {}
    kinds = stats["kind"].tolist()
    for i in range(m):
        if kinds[i] == "cost":  # parameter counts are deterministic and timings depend on the machine's load
            continue
        ref = refs.get(blocks[i])
        ref_values = per_seed.get((blocks[i], ref, metrics[i]))
        if ref is None or ref_values is None:
            continue
        out["reference"][i] = ref
        if entries[i] == ref:
            continue
        mine = per_seed.get((blocks[i], entries[i], metrics[i]), pd.Series(dtype=float))
        seeds = mine.index.intersection(ref_values.index)
        res = paired_tests(mine[seeds].to_numpy(), ref_values[seeds].to_numpy())
        out["n_pairs"][i], out["diff"][i], out["p_t"][i], out["p_w"][i] = res.n, res.diff, res.p_t, res.p_w
        compared.setdefault((blocks[i], metrics[i]), []).append(i)
    for idx in compared.values():
        out["p_t_holm"][idx] = holm(out["p_t"][idx])
    for col, values in out.items():
        stats[col] = values
    stats["significant"] = stats["p_t_holm"] < alpha
    stats["few_seeds"] = stats["n"] < 3
    return stats


def widen(stats: pd.DataFrame, grouping: Grouping, primary: str = "test_acc") -> pd.DataFrame:
    """One row per group; ``<metric>_<stat>`` columns; best ``primary`` first within a block."""
    if stats.empty:
        return pd.DataFrame()
    group_cols = list(dict.fromkeys(["block", "entry", *grouping.columns]))
    index = stats[group_cols].drop_duplicates()
    n = stats[stats["metric"] == primary].set_index(group_cols)["n"] if primary in set(stats["metric"]) else None
    table = index.set_index(group_cols)
    table["n"] = n if n is not None else stats.groupby(group_cols)["n"].max()
    metrics = list(dict.fromkeys(stats["metric"]))
    wide_stats = ["mean", "std", "ci_low", "ci_high", "n", "rank", "p_t", "p_w", "p_t_holm"]
    piv = stats.set_index(group_cols + ["metric"])[wide_stats].unstack("metric")
    cols = {}
    for m in metrics:
        for s in wide_stats:
            if (s, m) in piv.columns:
                cols[f"{m}_{s}" if s != "n" else f"{m}_n"] = piv[(s, m)]
    table = table.join(pd.DataFrame(cols, index=piv.index))
    table = table.reset_index()
    sort_col = f"{primary}_mean" if f"{primary}_mean" in table.columns else None
    if sort_col:
        table = table.sort_values(["block", sort_col], ascending=[True, direction(primary) < 0], kind="stable",
                                  na_position="last")
    table[grouping.entry] = table["entry"]  # the row's label: e.g. joint(fusion=late), not the bare method name
    table = table.drop(columns=[c for c in ("block", "entry") if c not in grouping.columns])
    front = [c for c in grouping.columns] + ["n"]
    return table[front + [c for c in table.columns if c not in front]].reset_index(drop=True)


def leaderboard(runs: pd.DataFrame, attacks: pd.DataFrame | None = None, group_by=None, reference: str | None = "joint",
                ci: str = "t", alpha: float = 0.05, primary: str = "test_acc") -> pd.DataFrame:
    """Mean, std, interval, rank and paired p-values over seeds per dataset × method, best first.

    Columns: the group keys, ``n``, and ``<metric>_mean|std|ci_low|ci_high|n|rank|p_t|p_w|p_t_holm`` for
    every metric of :func:`long_table` (e.g. ``test_acc``, ``gaussian@1``, ``robust_rel[gaussian]``).
    """
    if runs.empty:
        return pd.DataFrame()
    grouping = resolve_grouping(runs, group_by)
    runs = _with_blocks(runs, grouping)
    curves = attack_curves(attacks if attacks is not None else pd.DataFrame())
    stats = aggregate(long_table(runs, curves, grouping, reference), grouping, reference, ci, alpha)
    return widen(stats, grouping, primary)


def _with_blocks(runs: pd.DataFrame, grouping: Grouping) -> pd.DataFrame:
    entry = runs[grouping.entry].astype(str)
    if grouping.entry == "method" and "config.model.fusion" in grouping.columns:  # fusion is a key of its own
        entry = pd.Series([_without_fusion(e, f) for e, f in zip(entry, runs["config.model.fusion"])],
                          index=entry.index)
        runs = runs.assign(method=entry)
    return runs.assign(block=_block_labels(runs, grouping), entry=entry)


def _without_fusion(label: str, fusion: Any) -> str:
    """``joint(fusion=late)`` -> ``joint``; ``ogm_ge(alpha=0.1, fusion=gated)`` -> ``ogm_ge(alpha=0.1)``."""
    for suffix, rest in ((f"(fusion={fusion})", ""), (f", fusion={fusion})", ")")):
        if label.endswith(suffix):
            return label[:-len(suffix)] + rest
    return label

# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


@dataclass
class ReportOptions:
    dataset: str | None = None  # comma-separated prefixes or wildcards
    method: str | None = None
    metrics: list[str] | None = None  # names, aliases or wildcards; the first ranks rows
    group_by: list[str] | None = None  # default dataset, method
    reference: str | None = "joint"
    ci: str = "t"  # t | bootstrap
    alpha: float = 0.05
    confidence: float = CONFIDENCE

    def __post_init__(self):
        for name in ("alpha", "confidence"):
            value = getattr(self, name)
            if not 0 < value < 1:  # NaN fails too
                raise MMBenchError(f"--{name} must be in (0, 1), got {value:g}")


@dataclass
class Report:
    results_dir: str
    options: ReportOptions
    grouping: Grouping
    runs: pd.DataFrame
    attacks: pd.DataFrame
    curves: pd.DataFrame
    long: pd.DataFrame
    stats: pd.DataFrame
    wide: pd.DataFrame
    published: pd.DataFrame
    primary: str
    warnings: list[str] = field(default_factory=list)
    generated: str = ""
    statuses: dict[str, int] = field(default_factory=dict)  # runs left out: failed, diverged, running, interrupted

    @property
    def blocks(self) -> list[str]:
        return list(dict.fromkeys(self.stats["block"])) if not self.stats.empty else []

    @property
    def empty(self) -> bool:
        return self.runs.empty


def select_metrics(available: list[str], specs: list[str] | None) -> list[str]:
    """Resolve ``--metric`` names, aliases and wildcards against the measured metrics (in the user's order)."""
    if not specs:
        return available
    chosen = []
    for spec in (s.strip() for part in specs for s in str(part).split(",") if s.strip()):
        spec = METRIC_ALIASES.get(spec.lower(), spec)
        for candidate in (spec, f"test_{spec}"):
            hits = [m for m in available if fnmatch.fnmatchcase(m, candidate)]
            if hits:
                chosen += [h for h in hits if h not in chosen]
                break
        else:
            raise MMBenchError(unknown_name_message("--metric", spec, available))
    return chosen


def build_report(results_dir: str | os.PathLike, options: ReportOptions | None = None) -> Report:
    """Read, filter, aggregate and compare; nothing is written."""
    options = options or ReportOptions()
    runs, attacks, warnings = read_runs(results_dir)
    runs, attacks = filter_runs(runs, attacks, options.dataset, options.method)
    statuses = incomplete_statuses(results_dir, options.dataset, options.method)
    note = incomplete_note(statuses)
    warnings += [note] if note else []
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if runs.empty:
        grouping = Grouping(list(DEFAULT_GROUP_BY), list(DEFAULT_GROUP_BY), "method", ["dataset"])
        empty = pd.DataFrame()
        return Report(str(results_dir), options, grouping, runs, attacks, empty, empty, empty, empty, empty,
                      "test_acc", warnings, generated, statuses)
    grouping = resolve_grouping(runs, options.group_by)
    runs = _with_blocks(runs, grouping)
    warnings += _mixing_warnings(runs, grouping)
    curves = attack_curves(attacks)
    long = long_table(runs, curves, grouping, options.reference)
    available = list(dict.fromkeys(sorted(long["metric"].unique(), key=_metric_sort_key)))
    chosen = select_metrics(available, options.metrics)
    long = long[long["metric"].isin(chosen)].reset_index(drop=True)
    primary = chosen[0] if options.metrics else ("test_acc" if "test_acc" in chosen else chosen[0])
    stats = aggregate(long, grouping, options.reference, options.ci, options.alpha, options.confidence)
    wide = widen(stats, grouping, primary)
    published = published_table(runs, stats, attacks)
    warnings += _stat_warnings(stats, primary, options.reference, options.ci)
    warnings += _robust_reference_warnings(runs, curves, options.reference)
    return Report(str(results_dir), options, grouping, runs, attacks, curves, long, stats, wide, published, primary,
                  warnings, generated, statuses)


def _metric_sort_key(metric: str) -> tuple:
    kind = {"test": 0, "attack": 2, "robustness": 1, "cost": 3, "val": 4}[metric_kind(metric)]
    if kind == 0:
        return (0, *metric_order(metric))
    if metric_kind(metric) == "attack":
        curve, _, level = metric.rpartition("@")
        return (2, curve, float(level))
    return (kind, 0, metric)


def _robust_reference_warnings(runs: pd.DataFrame, curves: pd.DataFrame, reference: str | None) -> list[str]:
    """Blocks under attack whose effective robustness is not relative to late fusion."""
    if curves.empty:
        return []
    attacked = set(curves["run_id"])
    out = []
    for block, g in runs.groupby("block", sort=False):
        if not attacked & set(g["run_id"]):
            continue
        entry, late = effective_reference(g, reference)
        if not late:
            instead = f"relative to {entry!r}" if entry is not None else "not computed"
            out.append(f"{block}: no late-fusion runs, so effective robustness is {instead}; train the reference "
                       "with mmbench train --method joint --set model.fusion=late")
    return out


def _stat_warnings(stats: pd.DataFrame, primary: str, reference: str | None, ci: str) -> list[str]:
    out = []
    p = stats[stats["metric"] == primary]
    few = p[p["n"] < 3]
    if not few.empty:
        names = ", ".join(f"{b} / {e} (n={n})" for b, e, n in zip(few["block"], few["entry"], few["n"]))
        out.append(f"fewer than 3 seeds for {names}: intervals and p-values are unreliable; train more seeds")
    if reference:
        missing = [b for b, g in p.groupby("block", sort=False) if g["reference"].isna().all()]
        if missing:
            out.append(f"reference {reference!r} is not in {', '.join(missing)}: no paired tests there "
                       "(choose one with --reference)")
    if ci == "bootstrap" and not p.empty and (p["n"] < 10).any():
        out.append("bootstrap intervals with fewer than 10 seeds are too narrow; prefer --ci t")
    return out
