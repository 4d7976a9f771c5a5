"""The report as one self-contained HTML file: inline CSS, a small inline script that sorts a table
when its header is clicked, and the plots embedded as base64 PNG. No network access is needed to
open it; every text from run folders is escaped."""

from __future__ import annotations

import base64
import html
import re
from typing import TYPE_CHECKING

import numpy as np

from mmbench import __version__
from mmbench.report.analysis import Report
from mmbench.report.display import SECTION_TITLES, WARN, Cell, DisplayTable, legend

if TYPE_CHECKING:
    from mmbench.report.plots import PlotImage

CSS = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --head:#f3f5f7; --best:#e3eefa; --accent:#0072B2; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1500px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 21px; margin: 36px 0 8px; padding-top: 8px;
     border-top: 2px solid var(--accent); } h3 { font-size: 15px; margin: 20px 0 6px; color: var(--muted); }
.meta { color: var(--muted); margin: 0 0 12px; } code { background: var(--head); padding: 1px 4px; border-radius: 3px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; } nav a:hover { text-decoration: underline; }
.key { background: #f8fafc; border-left: 3px solid var(--accent); padding: 6px 12px; margin: 10px 0; }
details.legend { background: #f8fafc; border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; margin: 12px 0; }
details.legend summary { cursor: pointer; font-weight: 600; } details.legend li { margin: 3px 0; }
.warnings { background: #fff8e6; border: 1px solid #e6c770; border-radius: 6px; padding: 8px 14px; margin: 12px 0; }
.warnings li { margin: 2px 0; }
.scroll { overflow-x: auto; margin: 4px 0 8px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; white-space: nowrap; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: var(--head); position: sticky; top: 0; cursor: pointer; user-select: none; font-weight: 600; }
th[aria-sort="ascending"]::after { content: " ▲"; font-size: 10px; } th[aria-sort="descending"]::after { content: " ▼"; font-size: 10px; }
td.num, th.num { text-align: right; }
td.best { font-weight: 700; background: var(--best); }
tbody tr:hover td { background: #f6f8fa; } tbody tr:hover td.best { background: #d3e4f7; }
sup.sig { color: #D55E00; font-weight: 700; } .warn { color: #9a6700; }
.plots { display: flex; flex-wrap: wrap; gap: 18px; margin-top: 14px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px; background: #fff; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12.5px; max-width: 900px; margin-top: 6px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line); padding-top: 10px; }
"""

SCRIPT = """
(function () {
  function key(row, i) {
    var c = row.cells[i];
    if (!c) return null;
    var v = c.getAttribute("data-v");
    if (v !== null) { var f = parseFloat(v); return isNaN(f) ? null : f; }
    return c.textContent.trim().toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, i) {
      th.title = "click to sort";
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a, i), y = key(b, i);
          if (x === null && y === null) return 0;
          if (x === null) return 1;
          if (y === null) return -1;
          var d = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
          return asc ? d : -d;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.body.setAttribute("data-sortable", "ready");
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _anchor(text: str) -> str:
    return "b-" + (re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "all")


def _cell(c: Cell, numeric: bool) -> str:
    attrs = []
    classes = ["num"] if numeric else []
    if c.best and c.text != "–":
        classes.append("best")
    if classes:
        attrs.append(f'class="{" ".join(classes)}"')
    if isinstance(c.sort, (int, float, np.integer, np.floating)) and not isinstance(c.sort, bool):
        attrs.append(f'data-v="{float(c.sort):.10g}"' if np.isfinite(c.sort) else 'data-v="NaN"')
    if c.tip:
        attrs.append(f'title="{_e(c.tip)}"')
    body = _e(c.text)
    if c.mark:
        body += f'<sup class="sig">{_e(c.mark)}</sup>'
    if c.warn and c.text.isdigit():
        body += f' <span class="warn" title="fewer than 3 seeds">{WARN}</span>'
    return f"<td {' '.join(attrs)}>{body}</td>" if attrs else f"<td>{body}</td>"


def render_table(t: DisplayTable) -> str:
    numeric = t.numeric or [False] * len(t.headers)
    head = "".join(f'<th class="num">{_e(h)}</th>' if num else f"<th>{_e(h)}</th>" for h, num in zip(t.headers, numeric))
    rows = "\n".join("<tr>" + "".join(_cell(c, num) for c, num in zip(r, numeric)) + "</tr>" for r in t.rows)
    return (f'<div class="scroll"><table class="sortable" data-section="{_e(t.section)}">'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>")


def render_figure(img: PlotImage) -> str:
    data = base64.b64encode(img.png).decode("ascii")
    return (f'<figure><img alt="{_e(img.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_e(img.title)}</b>. {_e(img.caption)}</figcaption></figure>")




def render_html(report: Report, tables: list[DisplayTable], images: list[PlotImage], files: list[str]) -> str:
    runs = report.runs
    n_data = runs["dataset"].nunique() if "dataset" in runs else 0
    n_methods = runs["config.method.name"].nunique() if "config.method.name" in runs else 0
    n_variants = runs["entry"].nunique() if "entry" in runs else n_methods
    methods = f"{n_methods} method{'s' if n_methods != 1 else ''}"
    if n_variants != n_methods:
        methods += f" in {n_variants} variants"
    o = report.options
    blocks = report.blocks
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>mmbench report</title>", f"<style>{CSS}</style></head><body>",
        "<header><h1>mmbench report</h1>",
        f'<p class="meta">{len(runs)} runs · {n_data} dataset{"s" if n_data != 1 else ""} · {methods} · '
        f"from <code>{_e(report.results_dir)}</code> · generated {_e(report.generated)} · mmbench {_e(__version__)} · "
        f"grouped by <code>{_e(', '.join(report.grouping.names))}</code> · reference <code>{_e(o.reference)}</code> · "
        f"{'t' if o.ci == 't' else 'bootstrap'} intervals</p>",
    ]
    links = [f'<a href="#{_anchor(b)}">{_e(b)}</a>' for b in blocks]
    if not report.published.empty:
        links.append('<a href="#published">published vs reproduced</a>')
    parts.append(f"<nav>{''.join(links)}</nav></header>")
    parts.append(f'<p class="key">Cells: test-split mean ± std over n training seeds (accuracies in %). '
                 f'<sup class="sig">†</sup> differs from <code>{_e(o.reference)}</code> on the same seeds (paired '
                 f't-test, Holm-corrected, p &lt; {o.alpha:g}) · <b>bold</b>: best in its column · {WARN}: fewer '
                 "than 3 seeds · hover a cell for its 95% interval and p-values · click a header to sort.</p>")
    parts.append('<details class="legend"><summary>How to read this report: every definition</summary><ul>'
                 + "".join(f"<li>{_e(s)}</li>" for s in legend(report)) + "</ul></details>")
    if report.warnings:
        parts.append('<section class="warnings"><b>Warnings</b><ul>'
                     + "".join(f"<li>{WARN} {_e(w)}</li>" for w in report.warnings) + "</ul></section>")
    for block in blocks:
        parts.append(f'<section id="{_anchor(block)}"><h2>{_e(block)}</h2>')
        for t in (t for t in tables if t.block == block and t.section != "published"):
            parts.append(f"<h3>{_e(SECTION_TITLES.get(t.section, t.section))}</h3>")
            parts.append(render_table(t))
        figs = [img for img in images if img.block == block]
        if figs:
            parts.append("<h3>Plots</h3><div class=\"plots\">" + "".join(render_figure(f) for f in figs) + "</div>")
        parts.append("</section>")
    for t in (t for t in tables if t.section == "paper"):
        parts.append('<section id="paper"><h2>Paper layout</h2><p>One row per method, one column per dataset, '
                     "attack and level: our mean ± std over seeds, the published figure in brackets.</p>"
                     + render_table(t) + "</section>")
    for t in (t for t in tables if t.section == "published"):
        parts.append('<section id="published"><h2>Published vs reproduced</h2>'
                     "<p>The figure each recipe's <code>published:</code> block cites, beside our mean over seeds and "
                     "its 95% interval; <i>inside CI</i> says whether the published value lies inside our interval "
                     "(accuracies in %).</p>" + render_table(t) + "</section>")
    parts.append(f"<footer>Files written beside this report: {_e(', '.join(files) or '–')}. "
                 "runs.csv has one row per run × metric; stats.csv one row per group × metric; "
                 "leaderboard.csv one row per group.</footer>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)
