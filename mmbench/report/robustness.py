"""Robustness per attack curve: accuracy-vs-level curves from the attack rows, and their scores.

f_i is a run's accuracy at level i (mean over attack seeds), f_0 the clean accuracy (the test
accuracy when the sweep has no level 0); see ``docs/protocols.md``:

- ``clean`` = f_0; ``worst`` = min_i f_i;
- ``relative`` = trapezoid area under f over the levels divided by the level range: the mean
  accuracy along the curve. MultiBench's relative robustness (Δx = 0.1 over 0 … 0.9) equals
  this times the range; mmbench does not min-max normalise against MultiBench's 18 reference models;
- ``effective`` = mean_i [(f_i − f_0) − (R_i − R_0)], R the late-fusion mean curve on the same
  block and attack: MultiBench's effective robustness divided by the number of levels. Late
  fusion is the block's ``joint`` runs with ``model.fusion=late`` (:func:`late_fusion_entry`);
  a block without them falls back to the ``--reference`` method, with a warning. Positive: the
  method degrades more slowly than late fusion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mmbench.report.labels import reference_for


def _curve(levels, accs) -> tuple[list[float], list[float]]:
    levels, accs = [float(v) for v in levels], [float(v) for v in accs]
    if len(levels) != len(accs) or not levels:
        raise ValueError(f"a curve needs one accuracy per level, got {len(levels)} levels and {len(accs)} values")
    order = sorted(range(len(levels)), key=levels.__getitem__)
    return [levels[i] for i in order], [accs[i] for i in order]


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


def curve_label(protocol: Any, version: Any, attack: str, modalities: Any, fraction: Any) -> str:
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
    a["curve"] = [curve_label(*v) for v in zip(a["protocol"], a["protocol_version"], a["attack"],
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


def level_metric(curve: str, level: float) -> str:
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
