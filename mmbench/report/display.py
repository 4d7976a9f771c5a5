"""The display model shared by every format: cells (formatted value, best, significance mark, tooltip,
few-seeds warning), the tables per block and section, the legend, the terminal tables and the
tidy CSV tables labelled as the tables are."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mmbench.report.analysis import Report
from mmbench.report.labels import (
    COST_COLUMNS,
    RECONSTRUCTED,
    direction,
    is_percent,
    metric_kind,
    metric_order,
    pretty_header,
)

ROBUST_KINDS = {"clean": "clean", "rel": "relative", "eff": "effective", "worst": "worst"}
SECTION_TITLES = {"leaderboard": "Leaderboard", "modalities": "Per modality", "robustness": "Robustness under attack",
                  "cost": "Cost", "paper": "Paper layout", "published": "Published vs reproduced"}
MARK = "†"  # significant difference from the reference
WARN = "⚠"  # fewer than 3 seeds


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
                   key=metric_order)
    main = [m for m in tests if m == "test_f1" or (primary != "test_acc" and m == "test_acc")]
    per_modality = [m for m in tests if m not in main]
    # every level of a curve, the primary's too: the robustness table shows whole curves
    robust = sorted([m for m in metrics if metric_kind(m) in ("robustness", "attack")], key=_robust_order)
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
    paper = paper_display(report)
    if paper is not None:
        tables.append(paper)
    if not report.published.empty:
        tables.append(published_display(report))
    return tables


def paper_display(report: Report) -> DisplayTable | None:
    """A paper's noise table: one row per method, one column per dataset x attack curve x level, each
    cell our mean ± std with the published figure beside it in brackets. Built when attack levels were
    measured on more than one dataset (block) or a recipe publishes a figure at an attack level. A row
    is the bare method name when it names one configuration per block (QMF with its RGB-D options on
    NYUD2 and its text-image ones on MVSA-Single is one row), else the run label."""
    stats = report.stats
    attack = stats[stats["kind"] == "attack"]
    published = report.published
    levelled = published[published["metric"].map(metric_kind) == "attack"] if not published.empty else published
    if attack.empty or (attack["block"].nunique() < 2 and levelled.empty):
        return None
    names = report.runs.drop_duplicates(["block", "entry"]).set_index(["block", "entry"])["config.method.name"]
    unique = names.groupby(level=0).transform(lambda g: g.map(g.value_counts()) == 1)
    row_of = {k: (names[k] if unique[k] else k[1]) for k in names.index}
    pub = {(r.block, r.entry, r.metric): r.published for r in levelled.itertuples(index=False)}
    columns = list(dict.fromkeys(zip(attack["block"], attack["metric"])))
    columns.sort(key=lambda c: (report.blocks.index(c[0]), _robust_order(c[1])))
    cells: dict[str, dict[tuple[str, str], Cell]] = {}
    for _, s in attack.iterrows():
        cell = _stat_cell(s, s["metric"])
        value = pub.get((s["block"], s["entry"], s["metric"]))
        if value is not None:
            cell.text += f" ({format_value(s['metric'], value)})"
            cell.tip += f"; published {format_value(s['metric'], value)}"
        cells.setdefault(row_of[s["block"], s["entry"]], {})[s["block"], s["metric"]] = cell
    headers = [report.grouping.entry_name] + [f"{b} {pretty_header(m)}" for b, m in columns]
    rows = [[Cell(r, r)] + [cells[r].get(c, Cell("–", float("nan"))) for c in columns] for r in cells]
    return DisplayTable("", "paper", "paper layout: ours (published)", headers, rows,
                        [False] + [True] * len(columns))


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
    without the per-level columns (in the files), unless ``--metric`` chose the metrics."""
    out = []
    for t in display_tables(report):
        if t.section not in ("leaderboard", "modalities", "robustness", "paper"):
            continue
        every = t.section != "robustness" or bool(report.options.metrics)
        keep = [i for i, h in enumerate(t.headers) if every or "@" not in h]
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
