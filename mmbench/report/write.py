"""Writing a report to a folder: the chosen formats (CSV, Markdown, HTML, LaTeX, JSON) and the plots."""

from __future__ import annotations

import os
from pathlib import Path

from mmbench.errors import MMBenchError
from mmbench.registry import unknown_name_message
from mmbench.report.analysis import Report
from mmbench.report.display import display_tables, tidy_runs, tidy_stats
from mmbench.report.html import render_html
from mmbench.report.renderers import render_json, render_latex, render_markdown
from mmbench.results import atomic_write_bytes, atomic_write_csv, atomic_write_text

FORMATS = ("csv", "md", "html", "latex", "json")
DEFAULT_FORMATS = ("csv", "md", "html")


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
    if "md" in formats:
        atomic_write_text(out / "leaderboard.md", render_markdown(report, tables))
        paths.append(out / "leaderboard.md")
    if "latex" in formats:
        atomic_write_text(out / "leaderboard.tex", render_latex(report, tables))
        paths.append(out / "leaderboard.tex")
    if "json" in formats:
        atomic_write_text(out / "leaderboard.json", render_json(report))
        paths.append(out / "leaderboard.json")
    images = []
    if plots:  # matplotlib only when plots are drawn
        from mmbench.report.plots import make_plots

        images = make_plots(report)
    for img in images:
        atomic_write_bytes(out / "plots" / img.filename, img.png)
        paths.append(out / "plots" / img.filename)
    if "html" in formats:
        atomic_write_text(out / "report.html", render_html(report, tables, images, [p.name for p in paths]))
        paths.append(out / "report.html")
    return paths
