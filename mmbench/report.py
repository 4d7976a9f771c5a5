"""Leaderboards from run folders, with honest statistics, plots and publishable formats.

Flow: :func:`collect` reads every complete run folder into a runs table (one row per run) and
the attack rows; :func:`build_report` turns them into

- ``long``: one row per run × metric (the tidy table, ``runs.csv``): test metrics (every numeric
  key of ``summary.json["test"]``), cost (parameters, seconds, peak memory), accuracy under each
  attack level (mean over attack seeds) and robustness scores per attack curve;
- ``stats``: one row per group (dataset × method by default, ``--group-by``) × metric: ``n``
  training seeds, mean, std, 95% interval (Student t, or percentile bootstrap), rank within the
  block, best marked, and the paired comparison with the reference method on the same seeds
  (paired t-test and Wilcoxon signed-rank p-values, Holm-corrected over the methods of a block;
  not for cost, whose parameter counts are deterministic and timings depend on the load);
- ``wide``: ``stats`` with one row per group (``leaderboard.csv``);
- ``published``: the recipes' ``published:`` figures beside ours, with the difference and
  whether the published value lies inside our interval.

Robustness per attack curve (``docs/protocols.md``; f_i is a run's accuracy at level i, mean
over attack seeds, f_0 the clean accuracy; the test accuracy when the sweep has no level 0):

- ``clean`` = f_0; ``worst`` = min_i f_i;
- ``relative`` = trapezoid area under f over the levels divided by the level range: the mean
  accuracy along the curve. MultiBench's relative robustness (Δx = 0.1 over 0 … 0.9) equals
  this times the range; mmbench does not min-max normalise against MultiBench's 18 reference models;
- ``effective`` = mean_i [(f_i − f_0) − (R_i − R_0)], R the late-fusion mean curve on the same
  block and attack: MultiBench's effective robustness divided by the number of levels. Late
  fusion is the block's ``joint`` runs with ``model.fusion=late`` (:func:`late_fusion_entry`);
  a block without them falls back to the ``--reference`` method, with a warning. Positive: the
  method degrades more slowly than late fusion.

Row labels: a method that uses the configured fusion (no architecture of its own) and was trained
with a fusion other than its dataset's default is labelled with it, e.g. ``joint(fusion=late)``,
unless ``model.fusion`` is one of the ``--group-by`` keys.

Writers: :func:`write_report` (CSV, Markdown, HTML, LaTeX, JSON, PNG plots) and
:func:`write_leaderboard` (CSV and Markdown, the quick path without plots).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmbench.errors import MMBenchError
from mmbench.registry import METHODS, unknown_name_message
from mmbench.results import RecordAltered, incomplete_note, run_folders, run_statuses
from mmbench.robustness import effective_robustness, robustness_auc, worst_level
from mmbench.stats import CONFIDENCE, holm, interval, paired_tests

FORMATS = ("csv", "md", "html", "latex", "json")
DEFAULT_FORMATS = ("csv", "md", "html")
CI_METHODS = ("t", "bootstrap")
DEFAULT_GROUP_BY = ("dataset", "method")
METRIC_ALIASES = {"acc": "test_acc", "accuracy": "test_acc", "f1": "test_f1", "macro_f1": "test_f1",
                  "macro-f1": "test_f1", "params": "num_parameters", "parameters": "num_parameters"}
COST_COLUMNS = ("num_parameters", "seconds_per_epoch", "train_seconds")
ROBUST_KINDS = {"clean": "clean", "rel": "relative", "eff": "effective", "worst": "worst"}
SECTION_TITLES = {"leaderboard": "Leaderboard", "modalities": "Per modality", "robustness": "Robustness under attack",
                  "cost": "Cost", "published": "Published vs reproduced"}
MARK = "†"  # significant difference from the reference
WARN = "⚠"  # fewer than 3 seeds
RECONSTRUCTED = "‡"  # the method has parts mmbench reconstructed


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------


def method_label(name: str, params: dict, reconstructed: list[str] | None = None) -> str:
    """``name``, plus the parameters that differ from the method's defaults: ``unimodal(modality=image)``;
    a method with parts mmbench reconstructed (``reconstructed``: the list a run's ``summary.json``
    records; None, as for runs older than that record: the method class's) gets the mark ``‡``."""
    try:
        cls = METHODS.get(name)
        defaults = json.loads(json.dumps(asdict(cls.Params())))  # tuples compare as saved: lists
    except Exception:  # noqa: BLE001 - a plugin that is gone: show every parameter
        cls, defaults = None, {}
    if reconstructed is None:
        reconstructed = list(getattr(cls, "reconstructed", ()))
    params = json.loads(json.dumps(params, default=str))  # tuples as lists on both sides, as summary.json has them
    # "reconstructed" was a parameter in runs older than the class attribute: not a changed setting
    changed = {k: v for k, v in params.items() if k != "reconstructed" and (k not in defaults or defaults[k] != v)}
    base = name + (RECONSTRUCTED if reconstructed else "")
    return f"{base}({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else base


def dataset_label(dataset: str, modalities: list[str] | None) -> str:
    return f"{dataset}[{'+'.join(modalities)}]" if modalities else dataset


# ---------------------------------------------------------------------------------------
# Metric names and kinds
# ---------------------------------------------------------------------------------------


def is_cost(metric: str) -> bool:
    return metric in COST_COLUMNS or bool(re.search(r"peak|memory|flops", metric))


def metric_kind(metric: str) -> str:
    """``test``, ``attack`` (accuracy at one level), ``robustness``, ``cost`` or ``val``."""
    if metric.startswith("robust_"):
        return "robustness"
    if "@" in metric:
        return "attack"
    if is_cost(metric):
        return "cost"
    if metric.startswith("test_"):
        return "test"
    return "val"


def direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 no better side (ranks and best marks skip it)."""
    if is_cost(metric) or "loss" in metric or "imbalance" in metric:
        return -1
    if "shapley" in metric:
        return 0
    return 1


def is_percent(metric: str) -> bool:
    """Shown in percent: accuracies, F1, probes, Shapley contributions (accuracy points), attacks."""
    if metric_kind(metric) in ("attack", "robustness"):
        return True
    return metric_kind(metric) in ("test", "val") and bool(re.search(r"acc|f1|probe|shapley", metric))


def pretty_header(stem: str) -> str:
    if stem == "test_acc":
        return "acc"
    if stem == "test_f1":
        return "macro-F1"
    for prefix, name in (("test_acc_masked_", "only"), ("test_acc_", "acc"), ("test_probe_", "probe"),
                         ("test_shapley_", "φ")):
        if stem.startswith(prefix):
            return f"{name}[{stem[len(prefix):]}]"
    if stem.startswith("robust_"):
        m = re.match(r"robust_(\w+)\[(.*)\]$", stem)
        if m:
            return f"{m.group(2)} {m.group(1)}{'.' if m.group(1) in ('rel', 'eff') else ''}"
    if stem == "num_parameters":
        return "params"
    if stem == "seconds_per_epoch":
        return "s/epoch"
    if stem == "train_seconds":
        return "train s"
    if stem.startswith("test_"):
        return stem[len("test_"):]
    return stem


def _main_order(metric: str) -> tuple:
    order = [("test_acc", 0), ("test_f1", 1), ("test_acc_masked_", 3), ("test_acc_", 2), ("test_probe_", 4),
             ("test_shapley_", 5), ("test_imbalance", 6)]
    for prefix, rank in order:
        if metric == prefix or (prefix.endswith("_") and metric.startswith(prefix)):
            return (rank, metric)
    return (7, metric)


# ---------------------------------------------------------------------------------------
# Reading run folders
# ---------------------------------------------------------------------------------------


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _flatten_test(test: dict, prefix: str = "test") -> dict[str, float]:
    """Every numeric key under ``summary["test"]`` (nested dicts joined with ``_``)."""
    out = {}
    for k, v in test.items():
        if isinstance(v, dict):
            out.update(_flatten_test(v, f"{prefix}_{k}"))
        elif _numeric(v):
            out[f"{prefix}_{k}"] = float(v)
    return out


def _flatten_config(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in ("output", "published"):
            continue
        if isinstance(v, dict) and v and key not in ("model.encoders",):
            out.update(_flatten_config(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = "+".join(map(str, v))
        elif isinstance(v, dict):
            out[key] = json.dumps(v, sort_keys=True)
        else:
            out[key] = v
    return out


def _valid_levels(attacks: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, str | None]:
    """The attack rows whose level is a finite number >= 0, and a note naming what was skipped."""
    if attacks.empty or "level" not in attacks.columns:
        return attacks, None
    level = pd.to_numeric(attacks["level"], errors="coerce")
    ok = np.isfinite(level) & (level >= 0)
    if ok.all():
        return attacks, None
    bad = ", ".join(dict.fromkeys(str(v) for v in attacks.loc[~ok, "level"]).keys())
    return (attacks[ok].reset_index(drop=True),
            f"skipped {int((~ok).sum())} rows of {path} with a level that is not a finite number >= 0 ({bad[:80]})")


def _collect(results_dir) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    runs, attacks, warnings = [], [], []
    for folder in run_folders(results_dir):
        try:
            s = folder.check_record()
            cfg = folder.read_config()
            row = {"run_id": s.get("run_id", folder.run_id),
                   "dataset": dataset_label(cfg.data.dataset, cfg.data.modalities),
                   "method": method_label(s["method"], s.get("method_params", {}), s.get("reconstructed")),
                   "seed": s["seed"],
                   "best_epoch": s.get("best_epoch"), "val_acc": s.get("val_acc"),
                   **_flatten_test(s.get("test", {})),
                   **{k: float(v) for k, v in s.items() if _numeric(v) and is_cost(k)},
                   "path": str(folder.path), "published": list(cfg.published or []),
                   **{f"config.{k}": v for k, v in _flatten_config(cfg.to_dict()).items()}}
        except RecordAltered as e:  # counted among the runs left out (status "altered"); named here
            warnings.append(f"left out {e}")
            continue
        except (MMBenchError, ValueError, OSError, KeyError, TypeError) as e:  # one damaged folder: skip it, say so
            warnings.append(f"skipped {folder.path}: {type(e).__name__}: {e}")
            continue
        runs.append(row)
        try:
            a = folder.read_attack()
        except (MMBenchError, OSError) as e:
            warnings.append(f"ignored {folder.path / 'attack.csv'}: {e}")
            a = pd.DataFrame()
        a, note = _valid_levels(a, folder.path / "attack.csv")
        warnings += [note] if note else []
        if not a.empty:
            attacks.append(a.assign(run_id=row["run_id"], dataset=row["dataset"], seed=row["seed"]))
    runs = pd.DataFrame(runs)
    if not runs.empty:
        runs["method"] = _with_fusion(runs, runs["method"])
    attacks = pd.concat(attacks, ignore_index=True) if attacks else pd.DataFrame()
    if not attacks.empty:
        attacks["method"] = attacks["run_id"].map(runs.set_index("run_id")["method"])
    return runs, attacks, warnings


def collect(results_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, attacks): one row per complete run, and every attack row joined to its run's labels.

    ``method`` is the leaderboard's row label (the same in ``leaderboard.csv``, ``stats.csv``,
    ``runs.csv`` and the JSON): the method's name plus its non-default parameters and, for a
    method that uses the configured fusion, a fusion other than its dataset's default, e.g.
    ``joint(fusion=late)``; ``groupby("method")`` never pools two configurations. The bare
    registry name is ``config.method.name``.

    Run columns: ``run_id, dataset, method, seed, best_epoch, val_acc``, ``test_<key>`` for every
    numeric key of ``summary["test"]``, cost (``num_parameters``, ``seconds_per_epoch``,
    ``train_seconds``, ``peak*``/``*memory*``), ``path``, ``published`` and ``config.<key>``.
    """
    runs, attacks, _ = _collect(results_dir)
    return runs, attacks


def _matches(values: pd.Series, spec: str | None) -> np.ndarray:
    """Comma-separated prefixes or wildcard patterns."""
    if not spec:
        return np.ones(len(values), dtype=bool)
    keep = np.zeros(len(values), dtype=bool)
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if any(c in part for c in "*?["):
            keep |= values.map(lambda v, p=part: fnmatch.fnmatchcase(str(v), p)).to_numpy(bool)
        else:
            keep |= values.astype(str).str.startswith(part).to_numpy(bool)
    return keep


def filter_runs(runs: pd.DataFrame, attacks: pd.DataFrame, dataset: str | None = None,
                method: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    if runs.empty:
        return runs, attacks
    keep = _matches(runs["dataset"], dataset) & _matches(runs["method"], method)
    runs = runs[keep].reset_index(drop=True)
    if not attacks.empty:
        attacks = attacks[attacks["run_id"].isin(runs["run_id"])].reset_index(drop=True)
    return runs, attacks


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
# Attack curves and robustness
# ---------------------------------------------------------------------------------------


def _curve_label(protocol: Any, version: Any, attack: str, modalities: Any, fraction: Any) -> str:
    label = str(attack)
    if isinstance(protocol, str) and protocol not in ("", "custom"):
        label = f"{protocol}{'' if str(version) in ('1', 'nan', '') else f'.v{version}'}/{label}"
    if isinstance(modalities, str) and modalities not in ("", "all", "nan"):
        label += f":{modalities}"
    try:
        frac = float(fraction)
    except (TypeError, ValueError):
        frac = 1.0
    if math.isfinite(frac) and frac != 1.0:
        label += f"(frac={frac:g})"
    return label


def attack_curves(attacks: pd.DataFrame) -> pd.DataFrame:
    """Per run × attack curve × level: accuracy averaged over attack seeds (``acc``, ``n_attack_seeds``)."""
    cols = ["run_id", "curve", "protocol", "attack", "modalities", "fraction", "level", "acc", "n_attack_seeds"]
    if attacks is None or attacks.empty or "acc" not in attacks.columns:
        return pd.DataFrame(columns=cols)
    a = attacks.copy()
    for col, default in (("protocol", "custom"), ("protocol_version", "1"), ("modalities", "all"), ("fraction", 1.0)):
        if col not in a.columns:
            a[col] = default
    a["curve"] = [_curve_label(*v) for v in zip(a["protocol"], a["protocol_version"], a["attack"],
                                                   a["modalities"], a["fraction"])]
    a["level"] = a["level"].astype(float)
    for col, default in (("protocol", "custom"), ("modalities", "all")):
        a[col] = a[col].fillna(default).astype(str)
    a["fraction"] = pd.to_numeric(a["fraction"], errors="coerce").fillna(1.0)
    g = a.groupby(["run_id", "curve", "protocol", "attack", "modalities", "fraction", "level"], sort=True,
                  dropna=False)["acc"]
    out = g.agg(acc="mean", n_attack_seeds="count").reset_index()
    out["protocol"] = out["protocol"].astype(str)
    out["modalities"] = out["modalities"].astype(str)
    return out[cols]


def _level_metric(curve: str, level: float) -> str:
    return f"{curve}@{level:g}"


def robustness_rows(runs: pd.DataFrame, curves: pd.DataFrame, reference: str | None) -> list[dict]:
    """Per run × curve: ``robust_clean``, ``robust_rel``, ``robust_eff``, ``robust_worst`` (see module doc)."""
    if curves.empty:
        return []
    meta = runs.set_index("run_id")[["block", "entry", "test_acc"]]
    c = curves.join(meta, on="run_id")
    full = {}  # (run_id, curve) -> (levels, accs) with the clean point first
    for (run_id, curve), g in c.groupby(["run_id", "curve"], sort=False):
        levels, accs = g["level"].to_numpy(float), g["acc"].to_numpy(float)
        if not np.any(levels == 0) and np.isfinite(g["test_acc"].iloc[0]):
            levels, accs = np.r_[0.0, levels], np.r_[g["test_acc"].iloc[0], accs]
        order = np.argsort(levels)
        full[run_id, curve] = (levels[order], accs[order], g["block"].iloc[0], g["entry"].iloc[0],
                               g.iloc[0][["protocol", "attack", "modalities"]].to_dict())
    # the reference's mean curve per block and attack curve: late fusion, else the --reference
    ref_curves: dict[tuple[str, str], pd.Series] = {}
    refs = {b: effective_reference(g, reference)[0] for b, g in runs.groupby("block", sort=False)}
    if any(r is not None for r in refs.values()):
        by_key: dict[tuple[str, str], list[pd.Series]] = {}
        for (_run, curve), (levels, accs, block, entry, _) in full.items():
            if entry == refs.get(block):
                by_key.setdefault((block, curve), []).append(pd.Series(accs, index=levels))
        for key, series in by_key.items():
            ref_curves[key] = pd.concat(series, axis=1).mean(axis=1)
    rows = []
    for (run_id, curve), (levels, accs, block, _entry, info) in full.items():
        clean, worst = accs[0], worst_level(levels, accs)[1]
        rel = robustness_auc(levels, accs)
        eff = float("nan")
        ref = ref_curves.get((block, curve))
        if ref is not None and 0.0 in ref.index and levels[0] == 0:
            common = [lv for lv in levels if lv in ref.index]  # sorted, the clean level first
            eff = effective_robustness(pd.Series(accs, index=levels)[common], ref[common]) / len(common)
        for short, value in (("clean", clean), ("rel", rel), ("eff", eff), ("worst", worst)):
            rows.append({"run_id": run_id, "metric": f"robust_{short}[{curve}]", "value": float(value),
                         "curve": curve, **info})
    return rows


# ---------------------------------------------------------------------------------------
# Tidy table, statistics, leaderboard
# ---------------------------------------------------------------------------------------


def late_fusion_entry(runs: pd.DataFrame) -> str | None:
    """The entry of one block's runs that is late fusion: ``joint`` runs with ``model.fusion=late``
    (MultiBench's reference for effective robustness); ``None`` when there is none or more than one."""
    if not {"config.method.name", "config.model.fusion", "entry"} <= set(runs.columns):
        return None
    late = runs[(runs["config.method.name"] == "joint") & (runs["config.model.fusion"] == "late")]
    entries = list(dict.fromkeys(late["entry"]))
    return entries[0] if len(entries) == 1 else None


def effective_reference(runs: pd.DataFrame, reference: str | None) -> tuple[str | None, bool]:
    """(entry, is late fusion): the reference of effective robustness in one block's runs."""
    late = late_fusion_entry(runs)
    if late is not None:
        return late, True
    return reference_for(runs["entry"], reference), False


def reference_for(entries, reference: str | None) -> str | None:
    """The entry of a block that is the reference: the exact label, else the one label of that method."""
    entries = list(dict.fromkeys(entries))
    if reference is None:
        return None
    if reference in entries:
        return reference
    same_base = [e for e in entries if str(e).split("(")[0].rstrip(RECONSTRUCTED) == reference]
    return same_base[0] if len(same_base) == 1 else None


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
        c = c.assign(metric=[_level_metric(cv, lv) for cv, lv in zip(c["curve"], c["level"])], value=c["acc"],
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


def _with_fusion(runs: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Method labels plus ``fusion=F`` for runs of a method that uses the configured fusion, trained
    with a fusion other than its dataset's default: ``joint(fusion=late)``, ``ogm_ge(alpha=0.1, fusion=gated)``.
    Methods with an architecture of their own (``build_model``) keep their label."""
    if not {"config.method.name", "config.model.fusion", "config.data.dataset"} <= set(runs.columns):
        return labels
    from mmbench.config import ModelConfig, dataset_defaults
    from mmbench.methods.base import Method

    default_fusion = {d: str((dataset_defaults(d).get("model") or {}).get("fusion", ModelConfig.fusion))
                      for d in set(map(str, runs["config.data.dataset"]))}

    def generic(name: str) -> bool:
        try:
            return getattr(METHODS.get(name), "build_model", None) is Method.build_model
        except Exception:  # noqa: BLE001 - a plugin that is gone
            return False

    out = []
    for label, name, fusion, dataset in zip(labels, runs["config.method.name"], runs["config.model.fusion"],
                                            runs["config.data.dataset"]):
        if isinstance(fusion, str) and fusion != default_fusion[str(dataset)] and generic(str(name)):
            label = f"{label[:-1]}, fusion={fusion})" if label.endswith(")") else f"{label}(fusion={fusion})"
        out.append(label)
    return pd.Series(out, index=labels.index)


# ---------------------------------------------------------------------------------------
# Published vs reproduced
# ---------------------------------------------------------------------------------------


def published_metric(entry: dict) -> str:
    """Our metric name for a recipe's ``published:`` entry."""
    metric = str(entry["metric"]).strip()
    if "attack" in entry and "level" in entry:
        curve = _curve_label(entry.get("protocol", "custom"), entry.get("protocol_version", "1"), entry["attack"],
                             entry.get("modalities", "all"), entry.get("fraction", 1.0))
        return _level_metric(curve, float(entry["level"]))
    metric = METRIC_ALIASES.get(metric.lower(), metric)
    if not metric.startswith("test_") and re.match(r"(acc|f1|probe|shapley|imbalance)", metric):
        metric = "test_" + metric
    return metric


def published_fraction(entry: dict, metric: str) -> float:
    """The published value on our scale (fractions for accuracies): ``unit: percent`` or a value above 1."""
    value = float(entry["value"])
    unit = str(entry.get("unit", "")).lower()
    if unit in ("%", "percent", "pct") or (not unit and is_percent(metric) and value > 1):
        return value / 100
    return value


def _as_attacked(attacks: pd.DataFrame | None, run_ids: list[str], entry: dict, metric: str) -> tuple[float, str]:
    """For a published attack entry: the realised share of samples whose text changed (``hit_text``)
    in our matching rows, and a note when they attacked images of another size than the protocol's."""
    if attacks is None or attacks.empty or "attack" not in entry or "level" not in entry:
        return np.nan, ""
    a = attacks[attacks["run_id"].isin(run_ids) & (attacks["attack"] == entry["attack"])
                & (attacks["level"].astype(float) == float(entry["level"]))]
    if "protocol" in entry and "protocol" in a:
        a = a[a["protocol"] == entry["protocol"]]
    version = re.match(r"[^/]*?\.v([^/]*)/", metric)
    if version and "protocol_version" in a:
        a = a[a["protocol_version"].astype(str) == version.group(1)]
    share = float(a["hit_text"].mean()) if "hit_text" in a and a["hit_text"].notna().any() else np.nan
    note = ""
    if {"image_size", "protocol_image_size"} <= set(a.columns):
        sizes = a[["image_size", "protocol_image_size"]].dropna().astype(str)
        off = sizes[(sizes["protocol_image_size"] != "") & (sizes["image_size"] != sizes["protocol_image_size"])]
        if not off.empty:
            note = f"attacked at {off['image_size'].iloc[0]}, protocol {off['protocol_image_size'].iloc[0]}"
    return share, note


def published_table(runs: pd.DataFrame, stats: pd.DataFrame, attacks: pd.DataFrame | None = None) -> pd.DataFrame:
    cols = ["block", "entry", "metric", "published", "published_std", "source", "mean", "ci_low", "ci_high", "n",
            "diff", "inside_ci", "note", "text_share", "resolution"]
    rows = []
    if runs.empty or "published" not in runs.columns:
        return pd.DataFrame(columns=cols)
    index = stats.set_index(["block", "entry", "metric"]) if not stats.empty else None
    seen = set()
    for run in runs.itertuples(index=False):
        for e in run.published or []:
            metric = published_metric(e)
            key = (run.block, run.entry, metric, float(e["value"]), str(e.get("source")))
            if key in seen:
                continue
            seen.add(key)
            pub = published_fraction(e, metric)
            std = e.get("std")
            row = {"block": run.block, "entry": run.entry, "metric": metric, "published": pub,
                   "published_std": published_fraction({**e, "value": std}, metric) if _numeric(std) else np.nan,
                   "source": str(e.get("source", "")), "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                   "n": 0, "diff": np.nan, "inside_ci": None, "note": "", "text_share": np.nan, "resolution": ""}
            if index is not None and (run.block, run.entry, metric) not in index.index and "protocol" in e \
                    and "protocol_version" not in e:  # any version of the protocol, when only one was run
                head, _, rest = metric.partition("/")
                measured = [m for b, en, m in index.index if b == run.block and en == run.entry
                            and (m == metric or fnmatch.fnmatchcase(m, f"{head}.v*/{rest}"))]
                metric = measured[0] if len(measured) == 1 else metric
                row["metric"] = metric
            if index is not None and (run.block, run.entry, metric) in index.index:
                s = index.loc[(run.block, run.entry, metric)]
                row.update(mean=s["mean"], ci_low=s["ci_low"], ci_high=s["ci_high"], n=int(s["n"]),
                           diff=s["mean"] - pub)
                if np.isfinite(s["ci_low"]):
                    row["inside_ci"] = bool(s["ci_low"] <= pub <= s["ci_high"])
                else:
                    row["note"] = "one seed: no interval"
            else:
                row["note"] = f"{metric} not measured"
            ids = runs.loc[(runs["block"] == run.block) & (runs["entry"] == run.entry), "run_id"].tolist()
            row["text_share"], row["resolution"] = _as_attacked(attacks, ids, e, metric)
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)


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
    runs, attacks, warnings = _collect(results_dir)
    runs, attacks = filter_runs(runs, attacks, options.dataset, options.method)
    statuses = incomplete_statuses(results_dir, options)
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


def incomplete_statuses(results_dir: str | os.PathLike, options: ReportOptions) -> dict[str, int]:
    """How many runs that pass the filters are not complete, by status (failed, diverged, running,
    interrupted): the tables read complete runs only, these are counted so nothing goes missing unseen."""
    table = run_statuses(results_dir)
    if table.empty:
        return {}
    labels = pd.Series([dataset_label(d, m) if isinstance(d, str) else "" for d, m in
                        zip(table["dataset"], table["modalities"])], index=table.index, dtype=object)
    keep = _matches(labels, options.dataset) & _matches(table["method"].fillna("").astype(str), options.method)
    return {str(k): int(v) for k, v in table[keep]["status"].value_counts().items()}


def _metric_sort_key(metric: str) -> tuple:
    kind = {"test": 0, "attack": 2, "robustness": 1, "cost": 3, "val": 4}[metric_kind(metric)]
    if kind == 0:
        return (0, *_main_order(metric))
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


# ---------------------------------------------------------------------------------------
# Display tables (shared by Markdown, HTML, LaTeX and the terminal)
# ---------------------------------------------------------------------------------------


@dataclass
class Cell:
    text: str
    sort: float | str | None = None  # numeric sort key (HTML)
    best: bool = False
    mark: str = ""  # MARK when significantly different from the reference
    tip: str = ""  # interval, n, p-values
    warn: bool = False  # fewer than 3 seeds


@dataclass
class DisplayTable:
    block: str
    section: str  # leaderboard | robustness | cost | published
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    numeric: list[bool] = field(default_factory=list)  # right-aligned columns


def format_value(metric: str, value: float) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if is_percent(metric):
        return _no_negative_zero(f"{value * 100:.1f}")
    if metric == "num_parameters":
        return _si(value)
    if metric.endswith("_bytes"):
        return f"{value / 2**20:.0f} MB"
    if metric.endswith("_mb"):
        return f"{value:.0f} MB"
    if metric.endswith("_gb"):
        return f"{value:.2f} GB"
    return f"{value:.3g}"


def _no_negative_zero(text: str) -> str:
    """``-0.0`` (a small negative rounded) reads as a sign that is not there: ``0.0``."""
    return text[1:] if re.fullmatch(r"-0\.0*", text) else text


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def format_cell(mean: float, std: float, n: int, sep: str = " ± ", metric: str = "test_acc") -> str:
    """``mean ± std`` (percent for accuracies); ``–`` when missing, the mean alone for a single seed
    (or when every seed gave the same value of a non-percent metric, e.g. the parameter count)."""
    if mean is None or not np.isfinite(mean):
        return "–"
    if n < 2 or std is None or not np.isfinite(std):
        return format_value(metric, mean)
    if is_percent(metric):
        return f"{_no_negative_zero(f'{mean * 100:.1f}')}{sep}{std * 100:.1f}"
    if std == 0 or metric == "num_parameters" or re.search(r"_(bytes|mb|gb)$", metric):
        return format_value(metric, mean) + (f"{sep}{format_value(metric, std)}" if std and metric != "num_parameters" else "")
    decimals = int(min(6, max(0, 1 - math.floor(math.log10(abs(std))))))
    return f"{mean:.{decimals}f}{sep}{std:.{decimals}f}"


def format_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_interval(metric: str, lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "–"
    return f"[{format_value(metric, lo)}, {format_value(metric, hi)}]"


def _stat_cell(s: pd.Series | None, metric: str) -> Cell:
    if s is None or not np.isfinite(s["mean"]):
        return Cell("–", float("nan"))
    tip = [f"n={int(s['n'])}", f"95% CI {format_interval(metric, s['ci_low'], s['ci_high'])}"]
    if np.isfinite(s["p_t"]):
        diff = format_value(metric, s["diff"]) if is_percent(metric) else f"{s['diff']:.3g}"
        tip.append(f"vs {s['reference']}: Δ={diff} p(t)={format_p(s['p_t'])} p(W)={format_p(s['p_w'])} Holm p={format_p(s['p_t_holm'])}")
    return Cell(format_cell(s["mean"], s["std"], int(s["n"]), metric=metric), float(s["mean"]), bool(s["best"]),
                MARK if bool(s["significant"]) else "", "; ".join(tip), bool(s["n"] < 3))


def display_tables(report: Report) -> list[DisplayTable]:
    """Per block: the leaderboard (primary metric with interval and p-values, and macro-F1), the
    per-modality table (heads, masked, probes, Shapley, imbalance and any other test metric),
    robustness per attack curve, and cost; plus published vs reproduced."""
    if report.stats.empty:
        return []
    stats, primary = report.stats, report.primary
    ci_name = "95% CI" if report.options.ci == "t" else "95% CI (boot)"
    metrics = list(dict.fromkeys(report.long["metric"]))
    tests = sorted([m for m in metrics if metric_kind(m) == "test" and m != "test_loss" and m != primary],
                   key=_main_order)
    main = [m for m in tests if m == "test_f1" or (primary != "test_acc" and m == "test_acc")]
    per_modality = [m for m in tests if m not in main]
    robust = [m for m in metrics if metric_kind(m) in ("robustness", "attack") and m != primary]
    robust = sorted(robust, key=_robust_order)
    cost = [m for m in metrics if metric_kind(m) == "cost" and m != primary]
    cost = sorted(cost, key=lambda m: (COST_COLUMNS.index(m) if m in COST_COLUMNS else 9, m))
    entry_name = report.grouping.entry_name
    tables = []
    for block, b in stats.groupby("block", sort=False):
        by = {(e, m): row for e, m, row in zip(b["entry"], b["metric"], (r for _, r in b.iterrows()))}
        p_rows = b[b["metric"] == primary].sort_values(["rank", "mean"], ascending=[True, direction(primary) < 0],
                                                       na_position="last")
        entries = list(dict.fromkeys(list(p_rows["entry"]) + list(b["entry"])))
        headers = ["rank", entry_name, "n", pretty_header(primary), ci_name, "Δ ref", "p (t)", "p (W)"]
        headers += [pretty_header(m) for m in main]
        rows = []
        for e in entries:
            s = by.get((e, primary))
            n = int(s["n"]) if s is not None else 0
            rank = s["rank"] if s is not None else float("nan")
            row = [Cell(f"{rank:.0f}" if np.isfinite(rank) else "–", rank if np.isfinite(rank) else float("nan")),
                   Cell(str(e), str(e)), Cell(str(n), n, warn=n < 3), _stat_cell(s, primary)]
            if s is not None:
                row.append(Cell(format_interval(primary, s["ci_low"], s["ci_high"]), float(s["ci_low"])))
                ref = s["entry"] == s["reference"]
                diff = "ref" if ref else (format_value(primary, s["diff"]) if np.isfinite(s["diff"]) else "–")
                if diff not in ("ref", "–") and is_percent(primary) and s["diff"] > 0:
                    diff = "+" + diff
                row += [Cell(diff, float(s["diff"]) if np.isfinite(s["diff"]) else float("nan")),
                        Cell(format_p(s["p_t"]), float(s["p_t"]), tip=f"Holm-corrected {format_p(s['p_t_holm'])}"),
                        Cell(format_p(s["p_w"]), float(s["p_w"]))]
            else:
                row += [Cell("–", float("nan")) for _ in range(4)]
            row += [_stat_cell(by.get((e, m)), m) for m in main]
            rows.append(row)
        tables.append(DisplayTable(block, "leaderboard", f"{block}: leaderboard", headers, rows,
                                   [True, False] + [True] * (len(headers) - 2)))
        for section, ms in (("modalities", per_modality), ("robustness", robust), ("cost", cost)):
            present = [m for m in ms if any((e, m) in by for e in entries)]
            if not present:
                continue
            headers = [entry_name, "n"] + [pretty_header(m) for m in present]
            rows = []
            for e in entries:
                ns = [int(by[e, m]["n"]) for m in present if (e, m) in by]
                n = max(ns) if ns else 0
                rows.append([Cell(str(e), str(e)), Cell(str(n), n, warn=0 < n < 3)]
                            + [_stat_cell(by.get((e, m)), m) for m in present])
            tables.append(DisplayTable(block, section, f"{block}: {SECTION_TITLES[section].lower()}", headers, rows,
                                       [False] + [True] * (len(headers) - 1)))
    if not report.published.empty:
        tables.append(published_display(report))
    return tables


def _robust_order(metric: str) -> tuple:
    if metric_kind(metric) == "robustness":
        m = re.match(r"robust_(\w+)\[(.*)\]$", metric)
        short, curve = (m.group(1), m.group(2)) if m else ("", metric)
        return (curve, 0, ["clean", "rel", "eff", "worst"].index(short) if short in ROBUST_KINDS else 9, 0.0)
    curve, _, level = metric.rpartition("@")
    return (curve, 1, 0, float(level))


def published_display(report: Report) -> DisplayTable:
    entry_name = report.grouping.entry_name
    headers = ["block", entry_name, "metric", "published", "ours (mean)", "95% CI", "n", "ours − published",
               "inside CI", "as attacked", "source"]
    rows = []
    for r in report.published.itertuples(index=False):
        pub = format_value(r.metric, r.published)
        if np.isfinite(r.published_std):
            pub += f" ± {format_value(r.metric, r.published_std)}"
        diff = format_value(r.metric, r.diff) if np.isfinite(r.diff) else "–"
        if diff != "–" and r.diff > 0:
            diff = "+" + diff
        inside = "yes" if r.inside_ci is True else ("no" if r.inside_ci is False else (r.note or "–"))
        attacked = "; ".join(([f"text on {r.text_share:.0%}"] if np.isfinite(r.text_share) else [])
                             + ([r.resolution] if r.resolution else [])) or "–"
        rows.append([Cell(r.block, r.block), Cell(r.entry, r.entry), Cell(pretty_header(r.metric), r.metric),
                     Cell(pub, r.published), Cell(format_value(r.metric, r.mean), r.mean),
                     Cell(format_interval(r.metric, r.ci_low, r.ci_high), r.ci_low), Cell(str(r.n), r.n, warn=0 < r.n < 3),
                     Cell(diff, r.diff), Cell(inside, inside, best=r.inside_ci is True),
                     Cell(attacked, attacked, warn=bool(r.resolution)), Cell(r.source, r.source)])
    return DisplayTable("", "published", "published vs reproduced", headers, rows,
                        [False, False, False, True, True, True, True, True, False, False, False])


def legend(report: Report) -> list[str]:
    """How to read the tables, in plain sentences (Markdown, HTML and LaTeX captions)."""
    o = report.options
    ci = ("Student-t" if o.ci == "t" else "percentile bootstrap (10,000 resamples, seed 0)")
    ref = o.reference or "none"
    return [
        "Cells: test-split metric, mean ± std over n training seeds (checkpoint chosen on validation); "
        "accuracies, F1, probes, Shapley values and attack accuracies in %.",
        f"95% CI: {ci} interval of the mean over seeds.",
        f"{MARK}: differs from the reference method '{ref}' on the same seeds: paired t-test, Holm-corrected over the "
        f"methods of the table, p < {o.alpha:g}. p (t) and p (W) are the raw paired t-test and Wilcoxon signed-rank "
        "p-values (the Wilcoxon test cannot go below 2/2^n: 0.25 with 3 seeds, 0.0625 with 5).",
        "Bold: best mean in the column for its table (lower is better for cost); rank is by the "
        f"first metric ({pretty_header(report.primary)}); ties share a rank.",
        f"{WARN}: fewer than 3 seeds — intervals and p-values are unreliable.",
        f"{RECONSTRUCTED}: the method has reconstructed parts, which neither its official code nor its paper's "
        "available text specifies, or defaults that depart from them (the method class's 'reconstructed' list, "
        "recorded in each run's summary.json, and docs/methods/ list them).",
        "acc[m]: the unimodal head of m inside the fused model; only[m]: the fused model with every modality "
        "but m masked; probe[m]: linear probe on the frozen encoder of m; φ[m]: Shapley contribution of m to "
        "test accuracy (percentage points); imbalance: Shapley imbalance degree (max φ − min φ) / Σ|φ|, "
        "unitless, 0 = every modality contributes equally, 1 = one modality carries everything.",
        "Robustness per attack curve: clean = accuracy at level 0; rel. = area under the accuracy-vs-level curve "
        "divided by the level range (mean accuracy along the curve); eff. = mean over levels of the drop from "
        "clean minus late fusion's drop (MultiBench's effective robustness / number of levels; late fusion = joint "
        f"with model.fusion=late, else '{ref}'; positive: degrades more slowly); worst = lowest accuracy "
        "over the levels; attack@level = accuracy at that level, mean over attack seeds per run.",
    ]


def terminal_tables(report: Report) -> list[tuple[str, pd.DataFrame]]:
    """(title, table of strings) for the terminal, per block: leaderboard, per modality, and robustness
    without the per-level columns."""
    out = []
    for t in display_tables(report):
        if t.section not in ("leaderboard", "modalities", "robustness"):
            continue
        keep = [i for i, h in enumerate(t.headers) if "@" not in h]
        df = pd.DataFrame([[_plain(r[i]) for i in keep] for r in t.rows], columns=[t.headers[i] for i in keep])
        df = df.loc[:, [c for c in df.columns if (df[c] != "–").any() or c == t.headers[keep[0]]]]
        out.append((f"{t.title} (%, mean ± std)", df))
    return out


def _plain(c: Cell) -> str:
    return c.text + c.mark + (f" {WARN}" if c.warn and c.text.isdigit() else "")


# ---------------------------------------------------------------------------------------
# Tidy output
# ---------------------------------------------------------------------------------------


def _labelled(report: Report, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the rows' labels (as in the tables) in the compared column (``method`` by default),
    and without the internal ``block`` / ``entry`` keys: one label column with one name in every file."""
    if df.empty or "entry" not in df.columns:
        return df
    labelled = df.assign(**{report.grouping.entry: df["entry"]})
    return labelled.drop(columns=[c for c in ("block", "entry") if c not in report.grouping.columns])


def tidy_runs(report: Report) -> pd.DataFrame:
    """``runs.csv``: one row per run × metric, labelled as the tables are."""
    return _labelled(report, report.long)


def tidy_stats(report: Report) -> pd.DataFrame:
    """``stats.csv``: one row per group × metric, labelled as the tables are."""
    return _labelled(report, report.stats)


# ---------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------


@dataclass
class PlotImage:
    block: str
    kind: str  # dynamics | robustness | shapley | coefficients | gap
    title: str
    caption: str
    png: bytes
    filename: str


def load_histories(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's ``metrics.csv`` with its block, entry and seed."""
    frames = []
    for run in runs.itertuples(index=False):
        path = Path(run.path) / "metrics.csv"
        if not path.exists():
            continue
        try:
            h = pd.read_csv(path)
        except (ValueError, OSError):
            continue
        frames.append(h.assign(run_id=run.run_id, block=run.block, method=run.entry, seed=run.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def make_plots(report: Report, dpi: int = 110) -> list[PlotImage]:
    """Per block: imbalance dynamics, robustness curves, Shapley bars, method coefficients, gap histograms."""
    from mmbench import plots

    if report.runs.empty:
        return []
    out = []
    histories = load_histories(report.runs)
    curves = report.curves.join(report.runs.set_index("run_id")[["block", "entry", "seed"]], on="run_id",
                                how="inner") if not report.curves.empty else pd.DataFrame()
    for block in report.blocks:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", block).strip("_") or "all"
        runs = report.runs[report.runs["block"] == block]
        figs = []
        if not histories.empty:
            h = histories[histories["block"] == block]
            figs.append(("dynamics", plots.plot_modality_dynamics(h, f"{block}: validation accuracy per modality"),
                         "Validation accuracy of each unimodal head (colour) and of the fused prediction (black, "
                         "dashed) over epochs: line = mean over seeds, band = ±1 std. A head that stays low while "
                         "the other rises is the under-trained modality."))
            figs.append(("coefficients", plots.plot_coefficients(h, f"{block}: method coefficients during training"),
                         "Per-epoch mean of each logged coefficient_/weight_/ratio_ column (e.g. OGM-GE's k and "
                         "ρ per modality): mean over seeds, band = ±1 std."))
        if not curves.empty:
            c = curves[curves["block"] == block].rename(columns={"entry": "method"})
            figs.append(("robustness", plots.plot_robustness_curves(c, f"{block}: accuracy under attack"),
                         "Test accuracy against the attack level per method: line = mean over training seeds "
                         "(each the mean over attack seeds), band = ±1 std over training seeds."))
        figs.append(("shapley", plots.plot_shapley_bars(runs.drop(columns="method").assign(method=runs["entry"]),
                                                        f"{block}: Shapley contribution per modality"),
                     "Exact Shapley value of each modality for test accuracy (masking), mean ± std over seeds."))
        gaps, seen = [], set()
        for run in runs.sort_values(["entry", "seed"]).itertuples(index=False):
            if run.entry in seen:
                continue
            gap = plots.load_gap_file(Path(run.path) / "gap.npz")
            if gap is not None:
                seen.add(run.entry)
                gaps.append((f"{run.entry}, seed {run.seed}, {gap.what}", gap.samples, gap.xlabel, gap.modalities))
        if gaps:
            figs.append(("gap", plots.plot_gap_histograms(gaps, f"{block}: modality gap with a 2-component GMM"),
                         "Histogram of the per-sample modality gap (from the run's gap.npz: the trainer's "
                         "true-class probabilities on the training split at the last epoch; one run per method, "
                         "lowest seed) with a 2-component Gaussian mixture fitted on it as gmm_gap does by default "
                         "(scikit-learn, seed 0): each component dashed, named by the modality that dominates its "
                         "samples (the sign of its mean; 'near balance' when |mean| ≤ 0.1), mixture solid; "
                         "G ∈ [−1, 1]."))
        for kind, fig, caption in figs:
            if fig is None:
                continue
            title = fig.get_suptitle() if hasattr(fig, "get_suptitle") else kind
            out.append(PlotImage(block, kind, title, caption, plots.figure_png(fig, dpi), f"{slug}_{kind}.png"))
    return out


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def parse_formats(values: list[str] | tuple[str, ...] | None) -> list[str]:
    """``["csv,md", "html"]`` -> ``["csv", "md", "html"]``; ``tex`` and ``markdown`` are accepted."""
    aliases = {"tex": "latex", "markdown": "md"}
    out = []
    for v in values or DEFAULT_FORMATS:
        for f in (x.strip().lower() for x in str(v).split(",") if x.strip()):
            f = aliases.get(f, f)
            if f not in FORMATS:
                raise MMBenchError(unknown_name_message("--format", f, list(FORMATS)))
            if f not in out:
                out.append(f)
    return out


def write_report(report: Report, out_dir: str | os.PathLike, formats: list[str] | None = None,
                 plots: bool = True) -> list[Path]:
    """Write the chosen formats (and ``plots/*.png``) to ``out_dir``; returns the paths written."""
    from mmbench.results import atomic_write_bytes, atomic_write_csv, atomic_write_text

    formats = parse_formats(formats)
    out = Path(out_dir)
    paths: list[Path] = []
    if report.empty or report.stats.empty:
        return paths
    tables = display_tables(report)
    if "csv" in formats:
        for name, df in (("leaderboard.csv", report.wide), ("stats.csv", tidy_stats(report)), ("runs.csv", tidy_runs(report))):
            atomic_write_csv(out / name, df)
            paths.append(out / name)
        if not report.published.empty:
            atomic_write_csv(out / "published.csv", report.published.rename(columns={"entry": report.grouping.entry}))
            paths.append(out / "published.csv")
    from mmbench.report_formats import render_json, render_latex, render_markdown

    if "md" in formats:
        atomic_write_text(out / "leaderboard.md", render_markdown(report, tables))
        paths.append(out / "leaderboard.md")
    if "latex" in formats:
        atomic_write_text(out / "leaderboard.tex", render_latex(report, tables))
        paths.append(out / "leaderboard.tex")
    if "json" in formats:
        atomic_write_text(out / "leaderboard.json", render_json(report))
        paths.append(out / "leaderboard.json")
    images = make_plots(report) if plots else []
    for img in images:
        atomic_write_bytes(out / "plots" / img.filename, img.png)
        paths.append(out / "plots" / img.filename)
    if "html" in formats:
        from mmbench.report_html import render_html

        atomic_write_text(out / "report.html", render_html(report, tables, images, [p.name for p in paths]))
        paths.append(out / "report.html")
    return paths


def write_leaderboard(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      dataset: str | None = None, method: str | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Write ``leaderboard.csv`` (+ ``stats.csv``, ``runs.csv``) and ``leaderboard.md``; returns the table and paths."""
    report = build_report(results_dir, ReportOptions(dataset=dataset, method=method))
    paths = write_report(report, out_dir or results_dir, ["csv", "md"], plots=False)
    return report.wide, paths

