"""Published vs ours: each recipe's ``published:`` figure beside our mean and interval for the same
metric, the difference, whether it lies inside the interval, and how the attack was realised."""

from __future__ import annotations

import fnmatch
import re

import numpy as np
import pandas as pd

from mmbench.report.collect import is_number
from mmbench.report.labels import METRIC_ALIASES, is_percent
from mmbench.report.robustness import curve_label, level_metric


def published_metric(entry: dict) -> str:
    """Our metric name for a recipe's ``published:`` entry."""
    metric = str(entry["metric"]).strip()
    if "attack" in entry and "level" in entry:
        curve = curve_label(entry.get("protocol", "custom"), entry.get("protocol_version", "1"), entry["attack"],
                             entry.get("modalities", "all"), entry.get("fraction", 1.0))
        return level_metric(curve, float(entry["level"]))
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
                   "published_std": published_fraction({**e, "value": std}, metric) if is_number(std) else np.nan,
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
