"""Report plots, headless (matplotlib ``Figure`` objects, no pyplot state, Agg when saved).

Each function takes plain pandas/numpy data and returns a ``Figure`` (or ``None`` when there is
nothing to draw), so the report, notebooks and tests call them the same way:

- :func:`plot_modality_dynamics` — per-modality validation accuracy over epochs, one panel per
  method (the imbalance dynamics, from ``metrics.csv``);
- :func:`plot_robustness_curves` — accuracy against attack level per method with ±1 std bands;
- :func:`plot_shapley_bars` — Shapley contribution of each modality per method;
- :func:`plot_coefficients` — any ``coeff_*`` / ``weight_*`` / ``ratio_*`` column of ``metrics.csv``
  over training (OGM-GE's coefficient and ratio, CAL W^m, QMF weights ...);
- :func:`plot_gap_histograms` — modality-gap histograms with the 2-component Gaussian mixture
  :mod:`mmbench.gap` fits (balanced and imbalanced components, as ``gmm_gap`` separates them).

:func:`make_plots` draws them for every block of a report, as PNG images with their captions.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies);
past seven series the line style changes too. Accuracies are drawn in percent.
"""

from __future__ import annotations

import io
import re
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mmbench.gap import component_label, fit_gap_mixture, modality_gap
from mmbench.report.analysis import Report

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
SERIES = OKABE_ITO[:7]  # black is kept for the fused prediction and mixtures
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
COEFF_PREFIXES = ("coeff_", "weight_", "ratio_")


def style(i: int) -> dict:
    """Colour, line style and marker of the i-th series."""
    return {"color": SERIES[i % len(SERIES)], "linestyle": LINESTYLES[(i // len(SERIES)) % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)]}


def _grid(n: int, ncols: int = 3, width: float = 4.3, height: float = 3.2, sharey: bool = True):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(width * ncols, height * nrows + 0.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=sharey, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _band(ax, x, mean, std, st: dict, label: str, markers: bool = False) -> None:
    ax.plot(x, mean, color=st["color"], linestyle=st["linestyle"], marker=st["marker"] if markers else None,
            markersize=4, linewidth=1.8, label=label)
    if np.any(np.isfinite(std)):
        s = np.nan_to_num(std)
        ax.fill_between(x, mean - s, mean + s, color=st["color"], alpha=0.18, linewidth=0)


def _seed_stats(df: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = df.groupby(x)[y]
    mean, std = g.mean(), g.std(ddof=1)
    return mean.index.to_numpy(float), mean.to_numpy(float), std.reindex(mean.index).to_numpy(float)


def _legend(fig: Figure, axes, ncol: int | None = None) -> None:
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
                   ncol=ncol or min(len(labels), 6), frameon=False)


def _n_seeds(df: pd.DataFrame) -> str:
    n = df.groupby("method")["seed"].nunique() if "seed" in df.columns and not df.empty else pd.Series(dtype=int)
    if n.empty:
        return ""
    lo, hi = int(n.min()), int(n.max())
    return f"{lo} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"


def plot_modality_dynamics(history: pd.DataFrame, title: str) -> Figure | None:
    """Per method, validation accuracy of each unimodal head and of the fused prediction over epochs.

    ``history``: one row per run × epoch with ``method``, ``seed``, ``epoch``, ``val_acc`` and
    ``val_acc_<modality>`` columns (``metrics.csv`` rows).
    """
    if history is None or history.empty or "epoch" not in history.columns:
        return None
    heads = [c for c in history.columns if c.startswith("val_acc_") and not c.startswith("val_acc_masked_")
             and history[c].notna().any()]
    if not heads:
        return None
    modalities = [c[len("val_acc_"):] for c in heads]
    methods = list(dict.fromkeys(history["method"]))
    fig, axes = _grid(len(methods))
    for ax, method in zip(axes, methods):
        h = history[history["method"] == method]
        for i, (col, m) in enumerate(zip(heads, modalities)):
            if h[col].notna().any():
                x, mean, std = _seed_stats(h.dropna(subset=[col]), "epoch", col)
                _band(ax, x + 1, mean * 100, std * 100, style(i), f"head: {m}")
        if "val_acc" in h.columns and h["val_acc"].notna().any():
            x, mean, std = _seed_stats(h, "epoch", "val_acc")
            _band(ax, x + 1, mean * 100, std * 100, {"color": "#000000", "linestyle": "--", "marker": None},
                  "fused")
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[:: min(3, len(axes))]:
        ax.set_ylabel("validation accuracy (%)")
    fig.suptitle(f"{title} (mean ± 1 std over {_n_seeds(history)})", fontsize=12)
    _legend(fig, axes)
    return fig


def plot_coefficients(history: pd.DataFrame, title: str, prefixes: tuple[str, ...] = COEFF_PREFIXES) -> Figure | None:
    """Each method's logged ``coeff_*`` / ``weight_*`` / ``ratio_*`` columns over epochs, one panel per family."""
    if history is None or history.empty or "epoch" not in history.columns:
        return None
    cols = [c for c in history.columns if c.startswith(prefixes)]
    panels = []
    for method in dict.fromkeys(history["method"]):
        h = history[history["method"] == method]
        for prefix in prefixes:
            fam = [c for c in cols if c.startswith(prefix) and h[c].notna().any()]
            if fam:
                panels.append((method, prefix, fam, h))
    if not panels:
        return None
    suffixes = list(dict.fromkeys(c.split("_", 1)[1] for _, _, fam, _ in panels for c in fam))
    fig, axes = _grid(len(panels), sharey=False)
    for ax, (method, prefix, fam, h) in zip(axes, panels):
        for col in fam:
            suffix = col.split("_", 1)[1]
            x, mean, std = _seed_stats(h.dropna(subset=[col]), "epoch", col)
            _band(ax, x + 1, mean, std, style(suffixes.index(suffix)), suffix)
        name = {"coeff_": "coefficient", "weight_": "weight", "ratio_": "ratio"}.get(prefix, prefix.rstrip("_"))
        ax.set_title(f"{method}: {name}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{name} (unitless, epoch mean)")
        ax.grid(alpha=0.3)
    shown = history[history["method"].isin({p[0] for p in panels})]
    fig.suptitle(f"{title} (mean ± 1 std over {_n_seeds(shown)})", fontsize=12)
    _legend(fig, axes)
    return fig


# the unit of each attack's level (as `mmbench list attacks` describes it), for the robustness plot's x axis
LEVEL_UNITS = {
    "gaussian": "σ in training stds", "white_noise": "σ in training stds", "fgsm": "ε in training stds",
    "pgd": "ε in training stds", "blur": "σ in pixels", "dropout": "probability per entry",
    "entry_swap": "probability per entry", "structured_dropout": "probability per time step",
    "token_blank": "probability per token", "token_swap": "probability per token",
    "multibench_audio": "probability per sample", "multibench_visual": "probability per perturbation",
    "salt_pepper": "share of pixels", "occlusion": "share of image area", "blank": "share of samples",
    "missing": "share of samples",
}


def level_unit(curve: str) -> str:
    """The x-axis unit of an attack curve label (``gaussian``, ``gaussian:image(frac=0.5)``, ``qmf/gaussian``)."""
    protocol, _, attack = curve.rpartition("/")
    attack = attack.split(":")[0].split("(")[0]
    if protocol:
        return f"{protocol.split('.')[0]} protocol level"
    return LEVEL_UNITS.get(attack, "level as the attack defines it (mmbench list attacks)")


def _corrupted(c: pd.DataFrame) -> str:
    mods = str(c["modalities"].iloc[0]) if "modalities" in c.columns else "all"
    text = "all modalities" if mods in ("all", "nan", "") else mods.replace("+", " + ")
    if "fraction" in c.columns:
        text += f", {float(c['fraction'].iloc[0]):.0%} of test samples"
    return f"corrupted: {text}"


def plot_robustness_curves(curves: pd.DataFrame, title: str) -> Figure | None:
    """Accuracy against attack level, one panel per attack curve, one line per method.

    ``curves``: one row per run × curve × level with ``method``, ``seed``, ``curve``, ``level`` and
    ``acc`` (already averaged over attack seeds); ``modalities`` and ``fraction``, when present, name
    what was corrupted in each panel's title. The x axis gives the level's unit (:data:`LEVEL_UNITS`).
    """
    if curves is None or curves.empty:
        return None
    names = list(dict.fromkeys(curves["curve"]))
    methods = sorted(dict.fromkeys(curves["method"]), key=str)
    fig, axes = _grid(len(names), ncols=2, width=5.2 if len(names) > 1 else 7.0, height=3.6)
    for ax, name in zip(axes, names):
        c = curves[curves["curve"] == name]
        for i, method in enumerate(methods):
            m = c[c["method"] == method]
            if m.empty:
                continue
            x, mean, std = _seed_stats(m, "level", "acc")
            _band(ax, x, mean * 100, std * 100, style(i), method, markers=True)
        ax.set_title(f"{name}\n{_corrupted(c)}", fontsize=10)
        ax.set_xlabel(f"attack level ({level_unit(name)})")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} (mean ± 1 std over training seeds)", fontsize=12)
    _legend(fig, axes, ncol=min(len(methods), 4))
    return fig


def plot_shapley_bars(runs: pd.DataFrame, title: str, prefix: str = "test_shapley_") -> Figure | None:
    """Grouped bars: each modality's Shapley contribution to test accuracy per method (mean ± std over seeds)."""
    if runs is None or runs.empty:
        return None
    cols = [c for c in runs.columns if c.startswith(prefix) and runs[c].notna().any()]
    if not cols:
        return None
    modalities = [c[len(prefix):] for c in cols]
    runs = runs[runs[cols].notna().any(axis=1)]
    g = runs.groupby("method", sort=False)[cols]
    mean, std = g.mean() * 100, g.std(ddof=1) * 100
    methods = list(mean.index)
    fig = Figure(figsize=(max(7.0, 1.3 * len(methods) * max(1, len(cols)) / 2 + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(cols)
    x = np.arange(len(methods))
    for i, (col, m) in enumerate(zip(cols, modalities)):
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, mean[col].to_numpy(float), width,
               yerr=np.nan_to_num(std[col].to_numpy(float)), capsize=3, color=SERIES[i % len(SERIES)],
               label=m, edgecolor="white")
    ax.axhline(0, color="#000000", linewidth=0.8)
    ax.set_xticks(x, methods, rotation=20 if len(methods) > 3 else 0, ha="right" if len(methods) > 3 else "center")
    ax.set_ylabel("Shapley value (accuracy points, %)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="modality", frameon=False)
    fig.suptitle(f"{title} (mean ± 1 std over seeds)", fontsize=12)
    return fig


# ---------------------------------------------------------------------------------------
# Modality gap
# ---------------------------------------------------------------------------------------


class GapFile(NamedTuple):
    """A run's modality gap: samples, axis label, the two modalities (``G = p(y|m_1) − p(y|m_2)``) and
    what the samples are (training split, last epoch)."""

    samples: np.ndarray
    xlabel: str
    modalities: tuple[str, str]
    what: str


def load_gap_file(path: str | Path) -> GapFile | None:
    """The gap from a run's ``gap.npz`` (the trainer's true-class probabilities ``[epochs, N, M]`` on the
    training split): last epoch, first two modalities; ``None`` when the file is missing, unreadable or
    holds fewer than two modalities."""
    try:
        with np.load(path, allow_pickle=False) as z:
            prob = np.asarray(z["true_class_prob"], dtype=float)
            names = [str(m) for m in z["modalities"]] if "modalities" in z.files else []
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    epochs = prob.shape[0] if prob.ndim == 3 else 1
    prob = prob[-1] if prob.ndim == 3 else prob
    if prob.ndim != 2 or prob.shape[1] < 2:
        return None
    names = names if len(names) >= 2 else ["m1", "m2"]
    gap = modality_gap(prob)
    return GapFile(gap[np.isfinite(gap)], f"modality gap G = p(y|{names[0]}) − p(y|{names[1]})",
                   (names[0], names[1]), f"training split, epoch {epochs} (last)")


def _normal_pdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))


def plot_gap_histograms(gaps: list[tuple], title: str, xlabel: str = "modality gap G") -> Figure | None:
    """One panel per ``(label, samples[, axis label[, (m_1, m_2)]])``: density histogram on G ∈ [−1, 1],
    the components of the mixture fitted on the samples (:func:`mmbench.gap.fit_gap_mixture`), each
    named by the modality that dominates it (:func:`mmbench.gap.component_label`), and their sum."""
    gaps = [(g[0], np.asarray(g[1], dtype=float), g[2] if len(g) > 2 and g[2] else xlabel,
             g[3] if len(g) > 3 else ("m1", "m2")) for g in gaps if g[1] is not None and len(g[1]) > 1]
    if not gaps:
        return None
    fig, axes = _grid(len(gaps), ncols=2, width=5.0, height=3.4, sharey=False)
    for ax, (label, samples, xlab, names) in zip(axes, gaps):
        fit = fit_gap_mixture(samples)
        ax.hist(samples, bins=np.linspace(-1, 1, 41), density=True, color="#56B4E9", alpha=0.55,
                edgecolor="white", label="samples")
        x = np.linspace(-1, 1, 401)  # G is a difference of two probabilities
        total = np.zeros_like(x)
        for colour, w, mu, sd in sorted(zip((OKABE_ITO[2], OKABE_ITO[3]), fit.weights, fit.means, fit.stds),
                                        key=lambda c: c[2]):
            sd = max(sd, 1e-6)
            y = w * _normal_pdf(x, mu, sd)
            total += y
            ax.plot(x, y, linestyle="--", color=colour, linewidth=1.6,
                    label=f"{component_label(mu, names)}: π={w:.2f}, μ={mu:+.2f}, σ={sd:.2f}")
        ax.plot(x, total, color="#000000", linewidth=1.8, label="mixture")
        ax.set_title(f"{label} (n={len(samples)})", fontsize=10)
        ax.set_xlabel(xlab)
        ax.set_xlim(-1, 1)
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=12)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes; the bounding box grows to hold a long title or legend instead of cutting it."""
    title = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
    width_chars = int(fig.get_figwidth() * 9)  # about 9 characters of a 12 pt title per inch
    if title and len(title) > width_chars:
        fig.suptitle(textwrap.fill(title, width_chars), fontsize=12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# The report's plots
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
            figs.append(("dynamics", plot_modality_dynamics(h, f"{block}: validation accuracy per modality"),
                         "Validation accuracy of each unimodal head (colour) and of the fused prediction (black, "
                         "dashed) over epochs: line = mean over seeds, band = ±1 std. A head that stays low while "
                         "the other rises is the under-trained modality."))
            figs.append(("coefficients", plot_coefficients(h, f"{block}: method coefficients during training"),
                         "Per-epoch mean of each logged coefficient_/weight_/ratio_ column (e.g. OGM-GE's k and "
                         "ρ per modality): mean over seeds, band = ±1 std."))
        if not curves.empty:
            c = curves[curves["block"] == block].rename(columns={"entry": "method"})
            figs.append(("robustness", plot_robustness_curves(c, f"{block}: accuracy under attack"),
                         "Test accuracy against the attack level per method: line = mean over training seeds "
                         "(each the mean over attack seeds), band = ±1 std over training seeds."))
        figs.append(("shapley", plot_shapley_bars(runs.drop(columns="method").assign(method=runs["entry"]),
                                                        f"{block}: Shapley contribution per modality"),
                     "Exact Shapley value of each modality for test accuracy (masking), mean ± std over seeds."))
        gaps, seen = [], set()
        for run in runs.sort_values(["entry", "seed"]).itertuples(index=False):
            if run.entry in seen:
                continue
            gap = load_gap_file(Path(run.path) / "gap.npz")
            if gap is not None:
                seen.add(run.entry)
                gaps.append((f"{run.entry}, seed {run.seed}, {gap.what}", gap.samples, gap.xlabel, gap.modalities))
        if gaps:
            figs.append(("gap", plot_gap_histograms(gaps, f"{block}: modality gap with a 2-component GMM"),
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
            out.append(PlotImage(block, kind, title, caption, figure_png(fig, dpi), f"{slug}_{kind}.png"))
    return out
