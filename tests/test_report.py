"""The report: aggregates, intervals and paired tests checked against values computed here (numpy and
scipy directly) from run folders written by hand; constructed cases with known answers; every output
format parsed; the HTML rendered in headless Chromium when it is installed."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.config import resolve
from mmbench.errors import MMBenchError
from mmbench.methods.base import method_label, run_label
from mmbench.report import (
    ReportOptions,
    build_report,
    collect,
    display_tables,
    leaderboard,
    reference_for,
    tidy_runs,
    write_report,
)
from mmbench.report.renderers import render_latex, render_markdown
from mmbench.report.stats import bootstrap_interval, holm, paired_tests, t_interval
from mmbench.results import RunFolder


def _fake_run(results, method, seed, acc, heads, sets=(), attack=None, test_extra=None, summary_extra=None,
              published=None, history=None, dataset=None, protocol=None):
    flags = {"method.name": method, "seed": seed, "output.results_dir": str(results)}
    if dataset:
        flags["data.dataset"] = dataset
    cfg = resolve(flags=flags, sets=list(sets))
    cfg.published = list(published or [])
    run = RunFolder(results / "runs" / cfg.run_id())
    folder = run.path
    run.write_config(cfg)
    run.write_metrics(history if history is not None else [])
    test = {"acc": acc, "f1": acc - 0.01, "loss": 1.0, **{f"acc_{m}": v for m, v in heads.items()}, **(test_extra or {})}
    if attack:
        pd.DataFrame([{"run_id": cfg.run_id(), "attack": "gaussian", "modalities": "all", "level": lv,
                       "attack_seed": s, "acc": a, **(protocol or {})}
                      for (lv, s), a in attack.items()]).to_csv(folder / "attack.csv", index=False)
    run.write_summary({
        "run_id": cfg.run_id(), "method": method, "method_params": cfg.method.params, "label": run_label(cfg), "seed": seed,
        "best_epoch": 1, "val_acc": acc, "test": test, "train_seconds": 1.0, "num_parameters": 10,
        "sha256": run.checksums(["config.yaml", "metrics.csv"]), **(summary_extra or {})})
    return folder


def _stats(report, method, metric, block=None):
    s = report.stats
    s = s[(s["entry"] == method) & (s["metric"] == metric)]
    if block is not None:
        s = s[s["block"] == block]
    assert len(s) == 1, (method, metric, len(s))
    return s.iloc[0]


# ---------------------------------------------------------------------------------------
# Aggregates and intervals
# ---------------------------------------------------------------------------------------


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
    half = sps.t.ppf(0.975, 2) * np.std(accs, ddof=1) / np.sqrt(3)
    assert joint["test_acc_ci_low"] == pytest.approx(np.mean(accs) - half)
    assert joint["test_acc_ci_high"] == pytest.approx(np.mean(accs) + half)
    assert joint["test_acc_vector_mean"] == pytest.approx(np.mean(accs) - 0.1)
    per_run = [a - 0.3 for a in accs]  # mean over the two attack seeds
    assert joint["gaussian@1_mean"] == pytest.approx(np.mean(per_run))
    assert joint["gaussian@1_std"] == pytest.approx(np.std(per_run, ddof=1))
    uni = table.loc["unimodal(modality=image)"]
    assert uni["n"] == 1 and np.isnan(uni["test_acc_std"]) and np.isnan(uni["test_acc_vector_mean"])
    assert np.isnan(uni["test_acc_ci_low"])  # one seed: no interval
    assert list(table.index) == ["joint", "unimodal(modality=image)"]  # best fused accuracy first
    assert table.loc["joint", "test_acc_rank"] == 1 and table.loc["unimodal(modality=image)", "test_acc_rank"] == 2


def test_t_and_bootstrap_intervals_against_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(0.7, 0.05, size=7)
    lo, hi = t_interval(x)
    ref = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert (lo, hi) == pytest.approx(ref)
    assert np.isnan(t_interval([0.5])).all()  # one value: no interval
    b1, b2 = bootstrap_interval(x), bootstrap_interval(x)
    assert b1 == b2 and b1[0] < x.mean() < b1[1]  # seeded, contains the mean
    big = rng.normal(0.0, 1.0, size=400)
    tb, bb = t_interval(big), bootstrap_interval(big)
    assert bb == pytest.approx(tb, abs=0.03)  # the two agree for a large normal sample


def test_bootstrap_option_reaches_the_table(tmp_path):
    for seed, a in enumerate([0.6, 0.65, 0.7, 0.62]):
        _fake_run(tmp_path, "joint", seed, a, {})
    r = build_report(tmp_path, ReportOptions(ci="bootstrap"))
    s = _stats(r, "joint", "test_acc")
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(bootstrap_interval([0.6, 0.65, 0.7, 0.62]))
    assert any("bootstrap" in w for w in r.warnings)
    with pytest.raises(MMBenchError, match="did you mean bootstrap"):
        build_report(tmp_path, ReportOptions(ci="boot"))


# ---------------------------------------------------------------------------------------
# Paired significance
# ---------------------------------------------------------------------------------------


def test_paired_tests_equal_scipy_stats_on_random_and_tied_inputs():
    rng = np.random.default_rng(0)
    for n in [2, 3, 4, 5, 7, 10, 20, 50, 60]:
        for tied in (False, True):
            x, y = rng.normal(0.7, 0.05, n), rng.normal(0.68, 0.05, n)
            if tied:  # accuracies on a small test set: the differences tie and some are zero
                x, y = np.round(x, 2), np.round(y, 2)
            r = paired_tests(x, y)
            assert r.p_t == pytest.approx(sps.ttest_rel(x, y).pvalue, rel=1e-9), (n, tied)
            d = x - y
            if np.any(d != 0):
                assert r.p_w == pytest.approx(sps.wilcoxon(d, zero_method="wilcox").pvalue, rel=1e-9), (n, tied)
    for n in range(2, 12):
        assert t_interval(np.arange(n, dtype=float)) == pytest.approx(
            sps.t.interval(0.95, n - 1, loc=(n - 1) / 2, scale=sps.sem(np.arange(n, dtype=float))))


def test_paired_tests_known_answers():
    base = np.array([0.61, 0.64, 0.58, 0.70, 0.66, 0.59, 0.63, 0.68])
    better = base + 0.05 + 0.001 * np.arange(8)  # always better, distinct differences
    r = paired_tests(better, base)
    assert r.n == 8 and r.diff == pytest.approx(0.0535)
    assert r.p_t == pytest.approx(sps.ttest_rel(better, base).pvalue) and r.p_t < 1e-6
    assert r.p_w == pytest.approx(2 / 2**8)  # exact: every sign positive
    same = paired_tests(base, base.copy())
    assert same.p_t == 1.0 and same.p_w == 1.0 and same.diff == 0
    const = paired_tests(np.array([2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0]))  # exactly +1 on every seed
    assert const.p_t == 0.0 and const.p_w == pytest.approx(0.25)
    one = paired_tests([0.5], [0.4])
    assert one.n == 1 and np.isnan(one.p_t) and np.isnan(one.p_w)
    noise = paired_tests(base, base[::-1])
    assert noise.p_t == pytest.approx(sps.ttest_rel(base, base[::-1]).pvalue)
    assert noise.p_w == pytest.approx(sps.wilcoxon(base - base[::-1]).pvalue)


def test_holm_against_hand_computation():
    p = np.array([0.01, 0.04, np.nan, 0.03])
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    np.testing.assert_allclose(holm(p), [0.03, 0.06, np.nan, 0.06])


def test_significance_against_the_reference_paired_by_seed(tmp_path):
    joint = {0: 0.70, 1: 0.74, 2: 0.69, 3: 0.72, 4: 0.71}
    better = {s: a + 0.05 + 0.002 * s for s, a in joint.items()} | {5: 0.9}  # seed 5 has no joint partner
    for s, a in joint.items():
        _fake_run(tmp_path, "joint", s, a, {})
        _fake_run(tmp_path, "joint_uni", s, a, {})  # identical to joint
    for s, a in better.items():
        _fake_run(tmp_path, "ogm_ge", s, a, {})
    r = build_report(tmp_path)
    og = _stats(r, "ogm_ge", "test_acc")
    x = np.array([better[s] for s in range(5)])
    y = np.array([joint[s] for s in range(5)])
    assert og["n"] == 6 and og["n_pairs"] == 5
    assert og["p_t"] == pytest.approx(sps.ttest_rel(x, y).pvalue)
    assert og["p_w"] == pytest.approx(sps.wilcoxon(x - y).pvalue)
    assert og["p_t_holm"] == pytest.approx(min(1.0, 2 * og["p_t"]))  # two methods compared with joint
    assert og["significant"] and og["rank"] == 1 and og["best"]
    same = _stats(r, "joint_uni", "test_acc")
    assert same["p_t"] == 1.0 and same["p_w"] == 1.0 and not same["significant"]
    ref = _stats(r, "joint", "test_acc")
    assert ref["reference"] == "joint" and np.isnan(ref["p_t"])
    row = next(line for line in render_markdown(r).splitlines() if "| ogm_ge |" in line)
    assert "†" in row  # the marker
    # another reference
    r2 = build_report(tmp_path, ReportOptions(reference="ogm_ge"))
    assert _stats(r2, "joint", "test_acc")["reference"] == "ogm_ge"
    r3 = build_report(tmp_path, ReportOptions(reference="nothing"))
    assert any("'nothing' is not in" in w for w in r3.warnings)


def test_fewer_than_three_seeds_warns(tmp_path):
    for s in range(2):
        _fake_run(tmp_path, "joint", s, 0.5 + s / 10, {})
    r = build_report(tmp_path)
    assert any("fewer than 3 seeds" in w and "joint (n=2)" in w for w in r.warnings)
    assert bool(_stats(r, "joint", "test_acc")["few_seeds"])


def test_damaged_run_is_skipped_with_a_warning(tmp_path):
    for s in range(3):
        _fake_run(tmp_path, "joint", s, 0.7, {})
    bad = _fake_run(tmp_path, "ogm_ge", 0, 0.7, {})
    (bad / "summary.json").write_text("{not json")
    r = build_report(tmp_path)
    assert set(r.runs["method"]) == {"joint"}
    assert f"left out run {bad.name}: summary.json is unreadable" in "\n".join(r.warnings)
    assert r.statuses.get("altered") == 1  # counted with the runs left out of the tables


# ---------------------------------------------------------------------------------------
# Columns: generic test keys, cost, robustness, published
# ---------------------------------------------------------------------------------------


def test_every_numeric_test_key_becomes_a_column(tmp_path):
    for s, a in enumerate([0.7, 0.8, 0.75]):
        _fake_run(tmp_path, "joint", s, a, {"vector": 0.6},
                  test_extra={"probe_vector": a - 0.2, "shapley_vector": 0.3, "shapley": {"image": 0.1 + s / 100},
                              "imbalance": 0.5, "note": "text is ignored"},
                  summary_extra={"seconds_per_epoch": 0.1 * (s + 1), "peak_memory_mb": 100.0 + s})
    wide = leaderboard(*collect(tmp_path)).iloc[0]
    assert wide["test_probe_vector_mean"] == pytest.approx(np.mean([0.5, 0.6, 0.55]))
    assert wide["test_shapley_image_mean"] == pytest.approx(0.11)
    assert wide["test_imbalance_mean"] == pytest.approx(0.5)
    assert wide["seconds_per_epoch_mean"] == pytest.approx(0.2)
    assert wide["peak_memory_mb_mean"] == pytest.approx(101.0)
    assert "test_note_mean" not in wide.index
    r = build_report(tmp_path)
    headers = {t.section: t.headers for t in display_tables(r)}
    assert {"probe[vector]", "φ[vector]", "φ[image]", "imbalance"} <= set(headers["modalities"])
    assert headers["leaderboard"][:9] == ["rank", "method", "n", "acc", "95% CI", "Δ ref", "p (t)", "p (W)", "macro-F1"]
    assert {"params", "s/epoch", "peak_memory_mb"} <= set(headers["cost"])


def test_robustness_scores_against_hand_computation(tmp_path):
    levels = [0.0, 0.5, 1.0, 2.0]
    curves = {"joint": {0: [0.80, 0.70, 0.60, 0.40], 1: [0.82, 0.74, 0.62, 0.38]},
              "ogm_ge": {0: [0.78, 0.74, 0.70, 0.60], 1: [0.80, 0.76, 0.70, 0.62]}}
    for method, by_seed in curves.items():
        for seed, f in by_seed.items():
            attack = {(lv, 0): v + 0.01 for lv, v in zip(levels, f)} | {(lv, 1): v - 0.01 for lv, v in zip(levels, f)}
            _fake_run(tmp_path, method, seed, f[0], {}, attack=attack)
    r = build_report(tmp_path)
    ref = np.mean([curves["joint"][0], curves["joint"][1]], axis=0)
    for method, by_seed in curves.items():
        rel, eff, worst = [], [], []
        for f in map(np.array, by_seed.values()):
            rel.append(np.trapezoid(f, levels) / (levels[-1] - levels[0]))
            eff.append(np.mean((f - f[0]) - (ref - ref[0])))
            worst.append(f.min())
        assert _stats(r, method, "robust_rel[gaussian]")["mean"] == pytest.approx(np.mean(rel))
        assert _stats(r, method, "robust_eff[gaussian]")["mean"] == pytest.approx(np.mean(eff))
        assert _stats(r, method, "robust_worst[gaussian]")["mean"] == pytest.approx(np.mean(worst))
        assert _stats(r, method, "robust_clean[gaussian]")["mean"] == pytest.approx(np.mean([f[0] for f in by_seed.values()]))
        assert _stats(r, method, "gaussian@2")["std"] == pytest.approx(np.std([f[3] for f in by_seed.values()], ddof=1))
    assert _stats(r, "joint", "robust_eff[gaussian]")["mean"] == pytest.approx(0.0)
    assert _stats(r, "ogm_ge", "robust_eff[gaussian]")["mean"] > 0  # degrades more slowly than joint


def test_effective_robustness_is_relative_to_late_fusion(tmp_path):
    levels = [0.0, 1.0, 2.0]
    curves = {("joint", ()): [0.80, 0.60, 0.40], ("joint", ("model.fusion=late",)): [0.78, 0.70, 0.58],
              ("qmf", ()): [0.79, 0.72, 0.66]}
    for (method, sets), f in curves.items():
        for seed in range(2):
            _fake_run(tmp_path, method, seed, f[0], {}, sets=sets,
                      attack={(lv, 0): v + seed / 100 for lv, v in zip(levels, f)})
    r = build_report(tmp_path)
    assert set(r.stats["entry"]) == {"joint", "joint(fusion=late)", "qmf"}  # qmf has its own architecture
    late = np.array(curves["joint", ("model.fusion=late",)])
    for (method, sets), f in curves.items():
        entry = "joint(fusion=late)" if sets else method
        f = np.array(f)
        expected = np.mean((f - f[0]) - (late - late[0]))
        assert _stats(r, entry, "robust_eff[gaussian]")["mean"] == pytest.approx(expected)
    assert _stats(r, "joint(fusion=late)", "robust_eff[gaussian]")["mean"] == pytest.approx(0.0)
    assert _stats(r, "joint", "robust_eff[gaussian]")["mean"] < 0 < _stats(r, "qmf", "robust_eff[gaussian]")["mean"]
    assert not any("late-fusion" in w for w in r.warnings)
    # the CSV files name the rows as the tables do, so joint and joint(fusion=late) stay apart
    assert sorted(r.wide["method"]) == ["joint", "joint(fusion=late)", "qmf"]
    assert set(tidy_runs(r)["method"]) == {"joint", "joint(fusion=late)", "qmf"}
    write_report(r, tmp_path / "out", ["html"], plots=False)
    assert "6 runs · 1 dataset · 2 methods in 3 variants ·" in (tmp_path / "out" / "report.html").read_text()
    # without late-fusion runs: relative to --reference, with a warning
    shutil.rmtree(tmp_path / "runs")
    for (method, sets), f in curves.items():
        if not sets:
            _fake_run(tmp_path, method, 0, f[0], {}, attack={(lv, 0): v for lv, v in zip(levels, f)})
    r = build_report(tmp_path)
    assert _stats(r, "joint", "robust_eff[gaussian]")["mean"] == pytest.approx(0.0)
    assert any("no late-fusion runs, so effective robustness is relative to 'joint'" in w for w in r.warnings)


def test_published_vs_reproduced(tmp_path):
    published = [{"metric": "test_acc", "value": 80.0, "source": "Paper, Table 1"},  # percent, inside
                 {"metric": "f1", "value": 0.9, "std": 0.01, "source": "Paper, Table 2"},  # fraction, outside
                 {"metric": "acc", "value": 60.0, "protocol": "qmf", "attack": "gaussian", "level": 5,
                  "source": "Paper, Table 3"}]  # under attack, any version of the protocol
    accs = [0.79, 0.80, 0.81]
    for s, a in enumerate(accs):
        _fake_run(tmp_path, "ogm_ge", s, a, {}, published=published, attack={(0.0, 0): a, (5.0, 0): a - 0.2},
                  protocol={"protocol": "qmf", "protocol_version": "2024-faithful", "fraction": None})
    _fake_run(tmp_path, "joint", 0, 0.7, {})
    r = build_report(tmp_path)
    p = r.published.set_index("metric")
    assert len(p) == 3  # one row per published entry, not per seed
    half = sps.t.ppf(0.975, 2) * np.std(accs, ddof=1) / np.sqrt(3)
    acc = p.loc["test_acc"]
    assert acc["published"] == pytest.approx(0.80) and acc["mean"] == pytest.approx(0.80)
    assert acc["ci_low"] == pytest.approx(0.80 - half) and bool(acc["inside_ci"]) is True
    f1 = p.loc["test_f1"]
    assert f1["diff"] == pytest.approx(np.mean(accs) - 0.01 - 0.9) and f1["inside_ci"] is not None
    assert not f1["inside_ci"]
    assert f1["published_std"] == pytest.approx(0.01)
    attacked = p.loc["qmf.v2024-faithful/gaussian@5"]
    assert attacked["mean"] == pytest.approx(0.60) and attacked["diff"] == pytest.approx(0.0)
    paths = write_report(r, tmp_path / "out", ["csv", "md"], plots=False)
    assert (tmp_path / "out" / "published.csv") in paths
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "Published vs reproduced" in text and "Paper, Table 1" in text


def test_published_attack_rows_show_the_realised_text_share_and_the_resolution(tmp_path):
    published = [{"metric": "acc", "value": 60.0, "protocol": "qmf", "protocol_version": "2024.1-faithful",
                  "attack": "gaussian", "level": 5, "source": "Paper"}]
    for s, (share, size) in enumerate([(0.2, "64x64"), (0.3, "64x64")]):
        _fake_run(tmp_path, "qmf", s, 0.8, {}, published=published, attack={(5.0, 0): 0.6},
                  protocol={"protocol": "qmf", "protocol_version": "2024.1-faithful", "fraction": 0.5,
                            "hit_text": share, "image_size": size, "protocol_image_size": "224x224"})
    r = build_report(tmp_path)
    row = r.published.iloc[0]
    assert row["text_share"] == pytest.approx(0.25) and row["resolution"] == "attacked at 64x64, protocol 224x224"
    write_report(r, tmp_path / "out", ["md"], plots=False)
    assert "text on 25%; attacked at 64x64, protocol 224x224" in (tmp_path / "out" / "leaderboard.md").read_text()


# ---------------------------------------------------------------------------------------
# Filters and grouping
# ---------------------------------------------------------------------------------------


def test_filters_metrics_and_group_by(tmp_path):
    for s in range(3):
        _fake_run(tmp_path, "joint", s, 0.7 + s / 100, {"vector": 0.6})
        _fake_run(tmp_path, "joint", s, 0.6 + s / 100, {"vector": 0.5}, sets=["model.fusion=sum"])
        _fake_run(tmp_path, "ogm_ge", s, 0.65, {"vector": 0.5})
        _fake_run(tmp_path, "joint", s, 0.5, {}, dataset="mfeat")
    r = build_report(tmp_path)
    assert {"joint", "joint(fusion=sum)"} <= set(r.stats["entry"])  # a non-default fusion is its own row
    assert _stats(r, "joint(fusion=sum)", "test_acc", "synthetic")["mean"] == pytest.approx(0.61)
    assert not any("differ" in w for w in r.warnings)
    _fake_run(tmp_path, "ogm_ge", 3, 0.65, {"vector": 0.5}, sets=["optim.lr=0.05"])
    assert any("runs differ in optim.lr" in w for w in build_report(tmp_path).warnings)  # lumped: said so
    shutil.rmtree(next((tmp_path / "runs").glob("synthetic-ogm_ge-s3-*")))
    g = build_report(tmp_path, ReportOptions(group_by=["dataset", "method", "model.fusion"]))
    assert not any("differ" in w for w in g.warnings)
    assert set(g.blocks) == {"synthetic · model.fusion=concat", "synthetic · model.fusion=sum",
                             "mfeat · model.fusion=concat"}
    assert _stats(g, "joint", "test_acc", "synthetic · model.fusion=sum")["mean"] == pytest.approx(0.61)
    f = build_report(tmp_path, ReportOptions(dataset="mf", group_by=["dataset", "method", "model.fusion"]))
    assert set(f.runs["dataset"]) == {"mfeat"}
    m = build_report(tmp_path, ReportOptions(method="ogm*,joint", dataset="synthetic"))
    assert set(m.runs["method"]) == {"ogm_ge", "joint", "joint(fusion=sum)"}  # the labels the tables use
    sel = build_report(tmp_path, ReportOptions(metrics=["f1", "acc_*"]))
    assert sel.primary == "test_f1" and set(sel.stats["metric"]) == {"test_f1", "test_acc_vector"}
    with pytest.raises(MMBenchError, match="unknown --metric 'nope'"):
        build_report(tmp_path, ReportOptions(metrics=["nope"]))
    with pytest.raises(MMBenchError, match="did you mean optim.lr"):
        build_report(tmp_path, ReportOptions(group_by=["dataset", "method", "optim.lrr"]))
    fus = build_report(tmp_path, ReportOptions(group_by=["dataset", "model.fusion"], reference="concat",
                                               method="joint"))
    assert fus.grouping.entry == "config.model.fusion"  # fusions compared with each other
    assert _stats(fus, "sum", "test_acc", "synthetic")["reference"] == "concat"


# ---------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.links, self.cells, self._in_td = [], [], [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("src", "href"):
            if key in a and tag != "img":
                self.links.append(a[key])
        self._in_td = tag in ("td", "th")

    def handle_data(self, data):
        if self._in_td:
            self.cells.append(data.strip())


def _demo_like(tmp_path, published=True):
    results = tmp_path / "results"
    for s in range(3):
        history = {"epoch": list(range(4)), "val_acc": [0.4, 0.5, 0.6, 0.65],
                   "val_acc_vector": [0.4, 0.55, 0.6, 0.62], "val_acc_image": [0.2, 0.22, 0.25, 0.3],
                   "coeff_vector": [0.5, 0.6, 0.7, 0.8], "coeff_image": [1.0] * 4}
        for method, delta in (("joint", 0.0), ("ogm_ge", 0.03 + s / 200)):
            attack = {(lv, 0): 0.7 + delta - lv / 5 for lv in (0.0, 0.5, 1.0)}
            folder = _fake_run(results, method, s, 0.7 + delta + s / 100, {"vector": 0.6, "image": 0.3},
                               attack=attack, history=history,
                               test_extra={"shapley_vector": 0.3, "shapley_image": 0.1, "imbalance": 0.5},
                               summary_extra={"seconds_per_epoch": 0.5},
                               published=[{"metric": "acc", "value": 72.0, "source": "A & B <2022>, Tab. 1_x"}]
                               if published and method == "ogm_ge" else None)
            rng = np.random.default_rng(s)
            prob = rng.uniform(size=(2, 300, 2))  # the trainer's true-class probabilities [epochs, N, M]
            np.savez(folder / "gap.npz", true_class_prob=prob, modalities=np.array(["vector", "image"]))
    return results


def _balanced(text: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every format written once from the demo-like results: (report, out dir, paths)."""
    base = tmp_path_factory.mktemp("written")
    r = build_report(_demo_like(base))
    return r, base / "out", write_report(r, base / "out", ["csv", "md", "html", "latex", "json"])


def test_every_format_parses(written):
    _, out, paths = written
    names = {p.name for p in paths}
    assert {"leaderboard.csv", "stats.csv", "runs.csv", "published.csv", "leaderboard.md", "leaderboard.tex",
            "leaderboard.json", "report.html"} <= names
    assert {"synthetic_dynamics.png", "synthetic_robustness.png", "synthetic_shapley.png",
            "synthetic_coefficients.png", "synthetic_gap.png"} <= names
    # tidy CSV: one row per run x metric
    tidy = pd.read_csv(out / "runs.csv")
    assert not tidy.duplicated(["run_id", "metric"]).any()
    assert (tidy["metric"] == "test_acc").sum() == 6 and set(tidy["kind"]) >= {"test", "attack", "robustness", "cost"}
    wide = pd.read_csv(out / "leaderboard.csv")
    assert list(wide["method"]) == ["ogm_ge", "joint"] and (wide["n"] == 3).all()
    # JSON
    doc = json.loads((out / "leaderboard.json").read_text())
    assert doc["primary_metric"] == "test_acc" and len(doc["leaderboard"]) == 2
    assert [(p["method"], p["published"]) for p in doc["published"]] == [("ogm_ge", pytest.approx(0.72))]  # the figure itself
    # HTML: parses, has the tables, embedded PNGs, nothing fetched from outside
    text = (out / "report.html").read_text()
    assert "6 runs · 1 dataset · 2 methods ·" in text
    parser = _Collector()
    parser.feed(text)
    assert parser.tags.count("table") >= 3 and "ogm_ge" in parser.cells
    assert len(parser.imgs) == 5 and all(src.startswith("data:image/png;base64,") for src in parser.imgs)
    assert base64.b64decode(parser.imgs[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [link for link in parser.links if not link.startswith("#")]
    assert "A &amp; B &lt;2022&gt;" in text and "<script>" in text and "sortable" in text
    # LaTeX: booktabs, best in bold, balanced
    tex = (out / "leaderboard.tex").read_text()
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") >= 4
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}")
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\mathbf{" in tex and _balanced(tex)
    assert r"A \& B \textless{}2022\textgreater{}, Tab. 1\_x" in tex
    # Markdown
    md = (out / "leaderboard.md").read_text()
    assert "## synthetic" in md and "| 1 | ogm_ge | 3 |" in md


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(tmp_path, written):
    r = written[0]
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                   "\\usepackage{graphicx}\n\\begin{document}\n" + render_latex(r) + "\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_html_renders_in_headless_chromium(tmp_path, written):
    from matplotlib.image import imread

    html_path = written[1] / "report.html"
    shot = tmp_path / "shot.png"

    def chromium(*args, profile):
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / profile}"]
        return subprocess.Popen(["chromium", *flags, *args, html_path.as_uri()], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)

    shooting = chromium(f"--screenshot={shot}", "--window-size=1280,2000", profile="a")
    dom = chromium("--dump-dom", profile="b").communicate(timeout=90)[0]
    shooting.communicate(timeout=90)
    assert 'data-sortable="ready"' in dom  # the inline script ran without error
    assert dom.count("<table") >= 3 and dom.count("<img") == 5
    img = imread(shot)[..., :3]
    assert img.shape[:2] == (2000, 1280)
    ink = (img < 0.9).any(axis=-1)  # anything not (near) white
    assert ink.mean() > 0.03 and img.std() > 0.05  # text, tables and plots, not a blank page
    colour = (img.max(axis=-1) - img.min(axis=-1)) > 0.25  # coloured pixels: plots and highlights
    assert colour.mean() > 0.002


# ---------------------------------------------------------------------------------------
# Compatibility and the command line
# ---------------------------------------------------------------------------------------


def test_write_report_csv_and_markdown(tmp_path):
    for seed in range(2):
        _fake_run(tmp_path, "joint", seed, 0.5 + seed / 10, {"vector": 0.5})
    paths = write_report(build_report(tmp_path), tmp_path, ["csv", "md"], plots=False)
    csv = pd.read_csv(paths[0])
    assert paths[0].name == "leaderboard.csv"
    assert csv.loc[0, "test_acc_mean"] == pytest.approx(0.55)
    md = next(p for p in paths if p.suffix == ".md").read_text().splitlines()
    rows = [line for line in md if line.startswith("| 1 | joint")]
    assert len(rows) == 1 and "55.0 ± 7.1" in rows[0] and "⚠" in rows[0]  # 2 seeds: warned


def test_method_label_shows_non_default_parameters():
    assert method_label("ogm_ge", {"alpha": 0.8, "mode": "OGM_GE", "modulation_starts": 0,
                                   "modulation_ends": 50, "scope": "weights"}) == "ogm_ge"
    assert method_label("ogm_ge", {"alpha": 0.1}) == "ogm_ge(alpha=0.1)"


def test_labels_come_from_the_run_record_and_older_runs_get_the_plain_name(tmp_path):
    _fake_run(tmp_path, "ogm_ge", 0, 0.7, {"vector": 0.6}, sets=["method.alpha=0.1"])
    _fake_run(tmp_path, "cal", 0, 0.6, {"vector": 0.5}, sets=["method.alpha=0.9"])
    _fake_run(tmp_path, "joint", 0, 0.5, {"vector": 0.5}, sets=["model.fusion=late"])
    assert set(collect(tmp_path)[0]["method"]) == {"ogm_ge(alpha=0.1)", "cal‡(alpha=0.9)", "joint(fusion=late)"}
    for path in (tmp_path / "runs").iterdir():  # as written before the record: no label
        run = RunFolder(path)
        summary = run.read_summary()
        del summary["label"]
        run.write_summary(summary | {"reconstructed": ["x"] if summary["method"] == "cal" else []})
    assert set(collect(tmp_path)[0]["method"]) == {"ogm_ge", "cal‡", "joint"}


def report_import_graph() -> dict[str, set[str]]:
    """The modules of ``mmbench.report`` each one imports (any import statement, lazy ones too)."""
    import ast

    package = Path(__file__).resolve().parent.parent / "mmbench" / "report"
    names = {p.stem for p in package.glob("*.py")} - {"__init__"}
    graph = {}
    for name in names:
        imported = set()
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmbench.report"):
                parts = node.module.split(".")
                imported |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[2] for a in node.names if a.name.startswith("mmbench.report.")}
        graph[name] = imported & names
    return graph


def test_report_modules_import_each_other_without_cycles():
    from graphlib import TopologicalSorter

    graph = report_import_graph()
    assert {"labels", "collect", "analysis", "display", "renderers", "html", "plots", "stats"} <= set(graph)
    order = list(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("labels") < order.index("analysis") < order.index("display") < order.index("renderers")


def _report_modules(tmp_path, *args) -> set[str]:
    """The modules ``mmbench report`` loads on two methods x two seeds with attack rows, each run with the
    trainer's ``gap.npz`` (as every trained run has)."""
    history = [{"epoch": e, "val_acc": 0.5 + e / 10, "val_acc_vector": 0.4, "val_acc_image": 0.3} for e in range(3)]
    prob = np.random.default_rng(0).uniform(size=(3, 200, 2))
    for seed in range(2):
        for method, acc in (("joint", 0.7), ("ogm_ge", 0.72)):
            folder = _fake_run(tmp_path / "results", method, seed, acc + seed / 100, {"vector": 0.6, "image": 0.3},
                               attack={(0.0, 0): acc, (1.0, 0): acc - 0.2}, history=history)
            np.savez(folder / "gap.npz", true_class_prob=prob, modalities=np.array(["vector", "image"]))
    modules = tmp_path / "modules.json"
    code = ("import atexit, json, sys\n"
            f"atexit.register(lambda: open({str(modules)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
            f"sys.argv = ['mmbench', 'report', {str(tmp_path / 'results')!r}, '--out', {str(tmp_path / 'out')!r}, "
            f"*{list(args)!r}]\nfrom mmbench.cli import main\nmain()\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "report.html").exists()
    return set(json.loads(modules.read_text()))


def test_cli_report_imports_no_torch_or_methods(tmp_path):
    """``mmbench report`` (plots included) reads labels from the run records: torch and the method modules
    are never imported; scikit-learn only for the gap plot's mixture (:func:`mmbench.gap.fit_gap_mixture`)."""
    loaded = _report_modules(tmp_path)
    assert {"mmbench.report", "matplotlib", "sklearn.mixture"} <= loaded  # the report, its plots and the gap plot ran
    assert (tmp_path / "out" / "plots" / "synthetic_gap.png").exists()
    assert sorted(m for m in loaded if m.split(".")[0] == "torch" or m.startswith("mmbench.methods")) == []


def test_cli_report_without_plots_imports_no_plotting_or_scikit_learn(tmp_path):
    """The fixed cost of ``mmbench report --no-plots`` (README: under 1 s on a one-run folder): no matplotlib,
    scikit-learn or torch."""
    loaded = _report_modules(tmp_path, "--no-plots")
    heavy = ("torch", "sklearn", "matplotlib")
    assert sorted(m for m in loaded if m.split(".")[0] in heavy or m.startswith("mmbench.methods")) == []


def test_cli_report_options(tmp_path):
    results = _demo_like(tmp_path, published=False)
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(results), "--out", str(tmp_path / "o"), "--format", "latex,json",
                              "--format", "csv", "--metric", "acc,f1", "--reference", "ogm_ge", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"leaderboard.tex", "leaderboard.json", "leaderboard.csv",
                                                           "stats.csv", "runs.csv"}
    doc = json.loads((tmp_path / "o" / "leaderboard.json").read_text())
    assert doc["options"]["reference"] == "ogm_ge" and {s["metric"] for s in doc["stats"]} == {"test_acc", "test_f1"}
    bad = runner.invoke(app, ["report", str(results), "--format", "pdf"])
    assert bad.exit_code != 0 and "unknown --format 'pdf'" in str(bad.exception)


def test_method_labels_show_changed_parameters_and_mark_reconstructed_methods():
    from mmbench.config import MethodConfig
    from mmbench.methods.base import build_method, method_params_dict

    def saved(name):  # a method's default parameters as a run folder saves them (JSON: tuples become lists)
        return json.loads(json.dumps(method_params_dict(build_method(MethodConfig(name)))))

    assert method_label("arm", saved("arm")) == "arm‡"  # tuple defaults read back as lists are not "changed"
    assert method_label("ogm_ge", saved("ogm_ge")) == "ogm_ge"
    assert method_label("cal", saved("cal")) == "cal‡"
    assert method_label("cal", {"alpha": 0.9, "reconstructed": ["x"]}) == "cal‡(alpha=0.9)"
    assert reference_for(["joint", "cal‡(alpha=0.9)"], "cal") == "cal‡(alpha=0.9)"
