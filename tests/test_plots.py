"""Plots: each kind draws from hand-made data (titles, axis labels, legends, Okabe-Ito colours, a valid
PNG), returns None when there is nothing to draw; the gap loader reads both array layouts and the GMM
fit recovers a planted bimodal gap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from mmbench.report import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _history():
    rows = []
    for method in ("joint", "ogm_ge"):
        for seed in range(3):
            for epoch in range(5):
                rows.append({"method": method, "seed": seed, "epoch": epoch, "val_acc": 0.4 + 0.05 * epoch,
                             "val_acc_audio": 0.3 + 0.06 * epoch + 0.01 * seed, "val_acc_visual": 0.2 + 0.01 * epoch,
                             "coeff_audio": (0.5 if method == "ogm_ge" else np.nan), "ratio_audio":
                             (1.5 - 0.1 * epoch if method == "ogm_ge" else np.nan), "weight_visual": np.nan})
    return pd.DataFrame(rows)


def _texts(fig):
    out = [fig.get_suptitle()]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return " ".join(out)


def _line_colours(fig):
    return {to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()}


def test_modality_dynamics():
    fig = plots.plot_modality_dynamics(_history(), "cremad: validation accuracy per modality")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2  # one panel per method
    text = _texts(fig)
    assert "cremad" in text and "epoch" in text and "validation accuracy (%)" in text and "3 seeds" in text
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["head: audio", "head: visual", "fused"]
    assert {plots.OKABE_ITO[0].lower(), plots.OKABE_ITO[1].lower()} <= _line_colours(fig)
    ax = fig.axes[0]
    audio = ax.get_lines()[0]
    np.testing.assert_allclose(audio.get_ydata(), [100 * (0.31 + 0.06 * e) for e in range(5)])  # mean over seeds
    assert plots.figure_png(fig)[:8] == PNG
    assert plots.plot_modality_dynamics(pd.DataFrame(), "x") is None
    assert plots.plot_modality_dynamics(_history()[["method", "seed", "epoch", "val_acc"]], "x") is None


def test_coefficients_find_every_prefix():
    fig = plots.plot_coefficients(_history(), "coefficients")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["ogm_ge: coefficient", "ogm_ge: ratio"]  # joint logs none; all-NaN weight_ skipped
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [1.5 - 0.1 * e for e in range(5)])
    assert plots.plot_coefficients(_history().drop(columns=["coeff_audio", "ratio_audio", "weight_visual"]), "x") is None


def test_robustness_curves_with_bands():
    rows = [{"method": m, "seed": s, "curve": c, "modalities": mods, "fraction": frac, "level": lv,
             "acc": 0.8 - lv * (0.02 if m == "joint" else 0.01) + s / 100}
            for m in ("joint", "qmf") for s in range(3)
            for c, mods, frac in (("gaussian", "all", 1.0), ("blank:text(frac=0.5)", "text", 0.5)) for lv in (0, 5, 10)]
    fig = plots.plot_robustness_curves(pd.DataFrame(rows), "mvsa: accuracy under attack")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == [
        "gaussian\ncorrupted: all modalities, 100% of test samples",
        "blank:text(frac=0.5)\ncorrupted: text, 50% of test samples"]
    assert [ax.get_xlabel() for ax in fig.axes if ax.get_visible()] == [
        "attack level (σ in training stds)", "attack level (share of samples)"]
    assert plots.level_unit("qmf/gaussian:image") == "qmf protocol level"
    assert "test accuracy (%)" in _texts(fig)
    assert len(fig.axes[0].collections) == 2  # one ±1 std band per method
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [81, 71, 61])  # joint: mean over seeds, %
    assert plots.plot_robustness_curves(pd.DataFrame(), "x") is None


def test_shapley_bars():
    runs = pd.DataFrame({"method": ["joint"] * 3 + ["ogm_ge"] * 3 + ["unimodal"],
                         "test_shapley_audio": [0.3, 0.32, 0.34, 0.2, 0.21, 0.22, np.nan],
                         "test_shapley_visual": [0.05, 0.06, 0.07, 0.1, 0.12, 0.14, np.nan]})
    fig = plots.plot_shapley_bars(runs, "Shapley")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [32, 21, 6, 12])  # audio bars, then visual bars, in %
    assert [t.get_text() for t in ax.get_xticklabels()] == ["joint", "ogm_ge"]  # no Shapley values: left out
    assert "Shapley value" in ax.get_ylabel()
    assert plots.plot_shapley_bars(runs.drop(columns=["test_shapley_audio", "test_shapley_visual"]), "x") is None


def test_gap_loader_reads_the_trainers_layout(tmp_path):
    rng = np.random.default_rng(0)
    p = np.stack([rng.uniform(size=(50, 2)) for _ in range(3)])  # true-class probabilities [epochs, N, M]
    np.savez(tmp_path / "gap.npz", true_class_prob=p.astype(np.float16), modalities=np.array(["audio", "visual"]))
    gap = plots.load_gap_file(tmp_path / "gap.npz")
    np.testing.assert_allclose(gap.samples,
                               p[-1, :, 0].astype(np.float16).astype(float) - p[-1, :, 1].astype(np.float16))
    assert gap.xlabel == "modality gap G = p(y|audio) − p(y|visual)"
    assert gap.modalities == ("audio", "visual") and gap.what == "training split, epoch 3 (last)"
    np.savez(tmp_path / "one.npz", true_class_prob=p[..., :1], modalities=np.array(["audio"]))
    np.savez(tmp_path / "other.npz", labels=np.arange(3))
    for name in ("one.npz", "other.npz", "missing.npz"):
        assert plots.load_gap_file(tmp_path / name) is None


def test_gap_histograms_name_each_component_by_the_modality_that_dominates():
    rng = np.random.default_rng(0)
    planted = np.r_[rng.normal(0.05, 0.05, 350), rng.normal(0.6, 0.08, 150)]
    fig = plots.plot_gap_histograms([("gmm_gap", planted, "G", ("audio", "visual")), ("joint", planted[::-1])], "gap")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and axes[0].get_xlabel() == "G" and axes[1].get_xlabel() == "modality gap G"
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert legend[1].startswith("near balance: π=0.70, μ=+0.05")
    assert legend[2].startswith("audio dominates: π=0.30, μ=+0.60")
    assert legend[-1] == "mixture"
    for ax in axes:  # G = p(y|m1) - p(y|m2) lies in [-1, 1]: nothing is drawn outside it
        assert ax.get_xlim() == (-1, 1)
        assert all(line.get_xdata().min() >= -1 and line.get_xdata().max() <= 1 for line in ax.get_lines())


def test_gap_component_with_both_modes_away_from_zero_is_never_called_balanced():
    # one mode where the first modality dominates (+0.92), one where the second does (-0.3): the old rule
    # (smaller |mean| = balanced) called the -0.3 mode balanced
    rng = np.random.default_rng(1)
    planted = np.clip(np.r_[rng.normal(0.92, 0.03, 300), rng.normal(-0.3, 0.05, 300)], -1, 1)
    fig = plots.plot_gap_histograms([("joint", planted, "G", ("pix", "mor"))], "gap")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[1].startswith("mor dominates") and legend[2].startswith("pix dominates")
    assert not any("balance" in t for t in legend)
    assert plots.plot_gap_histograms([("joint", None), ("x", np.ones(1))], "gap") is None


def test_palette_is_okabe_ito():
    assert plots.OKABE_ITO[:3] == ["#0072B2", "#E69F00", "#009E73"]
    assert plots.style(0)["color"] == "#0072B2" and plots.style(7)["linestyle"] != plots.style(0)["linestyle"]


@pytest.mark.parametrize("n", [1, 4, 7])
def test_grid_hides_unused_axes(n):
    fig, axes = plots._grid(n)
    assert len(axes) == n and sum(ax.get_visible() for ax in fig.axes) == n
