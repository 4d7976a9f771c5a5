"""Reading run folders into tables: one row per complete run (labels, test metrics, cost, config)
and the attack rows joined to their run; filters; the runs left out, counted by status.
Run-folder I/O itself is :mod:`mmbench.results`."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmbench.errors import MMBenchError
from mmbench.report.labels import dataset_label, is_cost, run_method_label
from mmbench.results import RecordAltered, run_folders, run_statuses


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _flatten_test(test: dict, prefix: str = "test") -> dict[str, float]:
    """Every numeric key under ``summary["test"]`` (nested dicts joined with ``_``)."""
    out = {}
    for k, v in test.items():
        if isinstance(v, dict):
            out.update(_flatten_test(v, f"{prefix}_{k}"))
        elif is_number(v):
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


def read_runs(results_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """:func:`collect` plus the warnings: folders skipped or left out, attack rows ignored."""
    runs, attacks, warnings = [], [], []
    for folder in run_folders(results_dir):
        try:
            s = folder.check_record()
            cfg = folder.read_config()
            row = {"run_id": s.get("run_id", folder.run_id),
                   "dataset": dataset_label(cfg.data.dataset, cfg.data.modalities),
                   "method": run_method_label(s),
                   "seed": s["seed"],
                   "best_epoch": s.get("best_epoch"), "val_acc": s.get("val_acc"),
                   **_flatten_test(s.get("test", {})),
                   **{k: float(v) for k, v in s.items() if is_number(v) and is_cost(k)},
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
    attacks = pd.concat(attacks, ignore_index=True) if attacks else pd.DataFrame()
    if not attacks.empty:
        attacks["method"] = attacks["run_id"].map(runs.set_index("run_id")["method"])
    return runs, attacks, warnings


def collect(results_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, attacks): one row per complete run, and every attack row joined to its run's labels.

    ``method`` is the leaderboard's row label (the same in ``leaderboard.csv``, ``stats.csv``,
    ``runs.csv`` and the JSON), as the run recorded it at train time (``summary.json``'s ``label``):
    the method's name plus its non-default parameters and, for a method that uses the configured
    fusion, a fusion other than its dataset's default, e.g. ``joint(fusion=late)``;
    ``groupby("method")`` never pools two configurations. The bare registry name is
    ``config.method.name``.

    Run columns: ``run_id, dataset, method, seed, best_epoch, val_acc``, ``test_<key>`` for every
    numeric key of ``summary["test"]``, cost (``num_parameters``, ``seconds_per_epoch``,
    ``train_seconds``, ``peak*``/``*memory*``), ``path``, ``published`` and ``config.<key>``.
    """
    runs, attacks, _ = read_runs(results_dir)
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


def incomplete_statuses(results_dir: str | os.PathLike, dataset: str | None = None,
                        method: str | None = None) -> dict[str, int]:
    """How many runs that pass the filters are not complete, by status (failed, diverged, running,
    interrupted): the tables read complete runs only, these are counted so nothing goes missing unseen."""
    table = run_statuses(results_dir)
    if table.empty:
        return {}
    labels = pd.Series([dataset_label(d, m) if isinstance(d, str) else "" for d, m in
                        zip(table["dataset"], table["modalities"])], index=table.index, dtype=object)
    keep = _matches(labels, dataset) & _matches(table["method"].fillna("").astype(str), method)
    return {str(k): int(v) for k, v in table[keep]["status"].value_counts().items()}
