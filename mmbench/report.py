"""Leaderboards from run folders: one row per dataset x method, mean ± std over seeds.

``collect`` reads every complete run folder into pandas tables; ``leaderboard`` aggregates
them; ``write_leaderboard`` writes ``leaderboard.csv`` (numbers) and ``leaderboard.md``.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from mmbench.registry import METHODS
from mmbench.results import run_folders


def method_label(name: str, params: dict) -> str:
    """``name``, plus the parameters that differ from the method's defaults: ``unimodal(modality=image)``."""
    try:
        defaults = asdict(METHODS.get(name).Params())
    except Exception:  # noqa: BLE001 - a plugin that is gone: show every parameter
        defaults = {}
    changed = {k: v for k, v in params.items() if k not in defaults or defaults[k] != v}
    return f"{name}({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else name


def dataset_label(dataset: str, modalities: list[str] | None) -> str:
    return f"{dataset}[{'+'.join(modalities)}]" if modalities else dataset


def collect(results_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, attacks): one row per complete run, and every attack row joined to its run's labels."""
    runs, attacks = [], []
    for folder in run_folders(results_dir):
        s = folder.read_summary()
        cfg = folder.read_config()
        row = {"run_id": s["run_id"], "dataset": dataset_label(cfg.data.dataset, cfg.data.modalities),
               "method": method_label(s["method"], s.get("method_params", {})), "seed": s["seed"],
               "best_epoch": s["best_epoch"], "val_acc": s["val_acc"],
               **{f"test_{k}": v for k, v in s["test"].items()},
               "train_seconds": s["train_seconds"], "num_parameters": s["num_parameters"]}
        runs.append(row)
        a = folder.read_attack()
        if not a.empty:
            a = a.assign(dataset=row["dataset"], method=row["method"])
            attacks.append(a)
    return pd.DataFrame(runs), (pd.concat(attacks, ignore_index=True) if attacks else pd.DataFrame())


def leaderboard(runs: pd.DataFrame, attacks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean and std over seeds per dataset x method, best fused accuracy first within a dataset.

    Columns: ``n``, ``<metric>_mean`` / ``<metric>_std`` for test accuracy, macro-F1, every
    per-modality accuracy, and ``<attack>@<level>`` (all modalities corrupted) or
    ``<attack>:<modalities>@<level>`` accuracies: per run the mean over attack seeds, then
    mean and std over training seeds.
    """
    if runs.empty:
        return pd.DataFrame()
    metrics = [c for c in runs.columns if c.startswith("test_") and c != "test_loss"] + ["train_seconds"]
    grouped = runs.groupby(["dataset", "method"], sort=False)
    table = grouped.size().rename("n").to_frame()
    for m in metrics:
        table[f"{m}_mean"] = grouped[m].mean()
        table[f"{m}_std"] = grouped[m].std(ddof=1)
    if attacks is not None and not attacks.empty:
        mods = attacks["modalities"].astype(str).map(lambda m: "" if m == "all" else f":{m}")
        attacks = attacks.assign(column=attacks["attack"] + mods + "@" + attacks["level"].map(lambda v: f"{v:g}"))
        per_run = attacks.groupby(["dataset", "method", "run_id", "column"])["acc"].mean()
        across = per_run.groupby(["dataset", "method", "column"])
        for stat in ("mean", "std"):
            wide = getattr(across, stat)().unstack("column")
            wide.columns = [f"{c}_{stat}" for c in wide.columns]
            table = table.join(wide)
    table = table.reset_index()
    table = table.sort_values(["dataset", "test_acc_mean"], ascending=[True, False], kind="stable")
    return table.reset_index(drop=True)


def display_columns(table: pd.DataFrame) -> list[str]:
    """Metric stems shown in Markdown and the terminal, in order."""
    stems = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    order = ["test_acc", "test_f1"]
    heads = sorted(s for s in stems if s.startswith("test_acc_") and "masked" not in s)
    attacks = [s for s in stems if "@" in s]
    return [s for s in order if s in stems] + heads + attacks


def format_cell(mean: float, std: float, n: int, sep: str = " ± ") -> str:
    """Percent ``mean ± std``; ``–`` when missing, the mean alone for a single seed."""
    if mean is None or np.isnan(mean):
        return "–"
    if n < 2 or std is None or np.isnan(std):
        return f"{mean * 100:.1f}"
    return f"{mean * 100:.1f}{sep}{std * 100:.1f}"


def pretty_header(stem: str) -> str:
    if stem == "test_acc":
        return "acc"
    if stem == "test_f1":
        return "macro-F1"
    if stem.startswith("test_acc_"):
        return f"acc[{stem[len('test_acc_'):]}]"
    return stem


def formatted(table: pd.DataFrame, sep: str = " ± ") -> pd.DataFrame:
    """Strings ``mean ± std`` (percent) per displayed metric, for Markdown and the terminal."""
    out = table[["dataset", "method", "n"]].copy()
    for stem in display_columns(table):
        out[pretty_header(stem)] = [format_cell(m, s, n, sep) for m, s, n in
                                    zip(table[f"{stem}_mean"], table[f"{stem}_std"], table["n"])]
    return out


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_leaderboard(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                      dataset: str | None = None, method: str | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Write ``leaderboard.csv`` and ``leaderboard.md``; returns the table and the paths written."""
    from mmbench.results import atomic_write_csv, atomic_write_text

    runs, attacks = collect(results_dir)
    if not runs.empty:
        keep = np.ones(len(runs), dtype=bool)
        if dataset:
            keep &= runs["dataset"].str.startswith(dataset)
        if method:
            keep &= runs["method"].str.startswith(method)
        runs = runs[keep]
        if not attacks.empty:
            attacks = attacks[attacks["run_id"].isin(runs["run_id"])]
    table = leaderboard(runs, attacks)
    out = Path(out_dir or results_dir)
    paths = [out / "leaderboard.csv", out / "leaderboard.md"]
    if table.empty:
        return table, []
    atomic_write_csv(paths[0], table)
    md = ("# mmbench leaderboard\n\nTest metrics in %, mean ± std over n training seeds "
          "(checkpoint chosen on validation). Attack columns `attack@level` (all modalities corrupted) or `attack:modalities@level` average over "
          "training seeds and attack seeds.\n\n" + to_markdown(formatted(table)))
    atomic_write_text(paths[1], md)
    return table, paths
