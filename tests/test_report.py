"""Leaderboard aggregates, checked against values computed here from fixture run folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mmbench.config import resolve
from mmbench.report import collect, leaderboard, method_label, write_leaderboard


def _fake_run(results, method, seed, acc, heads, sets=(), attack=None):
    cfg = resolve(flags={"method.name": method, "seed": seed, "output.results_dir": str(results)}, sets=list(sets))
    folder = results / "runs" / cfg.run_id()
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    test = {"acc": acc, "f1": acc - 0.01, "loss": 1.0, **{f"acc_{m}": v for m, v in heads.items()}}
    (folder / "summary.json").write_text(json.dumps({
        "run_id": cfg.run_id(), "method": method, "method_params": cfg.method.params, "seed": seed,
        "best_epoch": 1, "val_acc": acc, "test": test, "train_seconds": 1.0, "num_parameters": 10}))
    if attack:
        pd.DataFrame([{"run_id": cfg.run_id(), "attack": "gaussian", "modalities": "all", "level": lv,
                       "attack_seed": s, "acc": a} for (lv, s), a in attack.items()]).to_csv(folder / "attack.csv", index=False)
    return folder


def test_mean_std_n_over_seeds(tmp_path):
    accs = [0.8, 0.7, 0.9]
    for seed, a in enumerate(accs):
        _fake_run(tmp_path, "joint", seed, a, {"vector": a - 0.1, "image": 0.2},
                  attack={(1.0, 0): a - 0.2, (1.0, 1): a - 0.4})
    _fake_run(tmp_path, "unimodal", 0, 0.6, {"image": 0.6}, sets=["method.modality=image"])
    (tmp_path / "runs" / "half-written").mkdir()  # a run without summary.json is ignored
    table = leaderboard(*collect(tmp_path)).set_index("method")
    joint = table.loc["joint"]
    assert joint["n"] == 3
    assert joint["test_acc_mean"] == pytest.approx(np.mean(accs))
    assert joint["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))
    assert joint["test_acc_vector_mean"] == pytest.approx(np.mean(accs) - 0.1)
    per_run = [a - 0.3 for a in accs]  # mean over the two attack seeds
    assert joint["gaussian@1_mean"] == pytest.approx(np.mean(per_run))
    assert joint["gaussian@1_std"] == pytest.approx(np.std(per_run, ddof=1))
    uni = table.loc["unimodal(modality=image)"]
    assert uni["n"] == 1 and np.isnan(uni["test_acc_std"]) and np.isnan(uni["test_acc_vector_mean"])
    assert list(table.index) == ["joint", "unimodal(modality=image)"]  # best fused accuracy first


def test_written_formats_parse(tmp_path):
    for seed in range(2):
        _fake_run(tmp_path, "joint", seed, 0.5 + seed / 10, {"vector": 0.5})
    _, paths = write_leaderboard(tmp_path)
    csv = pd.read_csv(paths[0])
    assert csv.loc[0, "test_acc_mean"] == pytest.approx(0.55)
    md = paths[1].read_text().splitlines()
    rows = [line for line in md if line.startswith("| synthetic")]
    assert len(rows) == 1 and "55.0 ± 7.1" in rows[0]


def test_method_label_shows_non_default_parameters():
    assert method_label("ogm_ge", {"alpha": 0.8, "mode": "OGM_GE", "modulation_starts": 0,
                                   "modulation_ends": 50, "scope": "weights"}) == "ogm_ge"
    assert method_label("ogm_ge", {"alpha": 0.1}) == "ogm_ge(alpha=0.1)"
