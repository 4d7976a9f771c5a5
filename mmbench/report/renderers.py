"""The text formats of a report: Markdown, LaTeX (booktabs) and JSON (HTML: :mod:`mmbench.report.html`)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import pandas as pd

from mmbench.report.analysis import Report
from mmbench.report.display import SECTION_TITLES, WARN, Cell, DisplayTable, display_tables, legend, tidy_stats


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_cell(c: Cell) -> str:
    text = _md_escape(c.text)
    if c.best and c.text != "–":
        text = f"**{text}**"
    if c.warn and c.text.isdigit():
        text += f" {WARN}"
    return text + c.mark


def render_markdown(report: Report, tables: list[DisplayTable] | None = None) -> str:
    tables = display_tables(report) if tables is None else tables
    lines = ["# mmbench leaderboard", "",
             f"{len(report.runs)} runs from `{report.results_dir}`, generated {report.generated}. "
             f"Reference method: `{report.options.reference}`.", ""]
    lines += [f"- {s}" for s in legend(report)] + [""]
    if report.warnings:
        lines += ["**Warnings**", ""] + [f"- {WARN} {_md_escape(w)}" for w in report.warnings] + [""]
    for t in tables:
        if t.section == "leaderboard":
            lines += [f"## {t.block}", ""]
        lines += [f"### {SECTION_TITLES.get(t.section, t.section)}", ""]
        lines.append("| " + " | ".join(_md_escape(h) for h in t.headers) + " |")
        lines.append("|" + "|".join("---:" if num else "---" for num in (t.numeric or [False] * len(t.headers))) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
        lines.append("")
    return "\n".join(lines)


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "<": r"\textless{}", ">": r"\textgreater{}", "φ": r"$\varphi$", "Δ": r"$\Delta$",
               "−": "--", "–": "--", "·": r"$\cdot$", "±": r"$\pm$", "⚠": "", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "≥": r"$\geq$"}


# one meaning per symbol, as in every other format: † significant, ‡ reconstructed, § fewer than 3 seeds
FEW_SEEDS = r"$^{\S}$"


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


def _tex_cell(c: Cell) -> str:
    if " ± " in c.text:
        a, b = c.text.split(" ± ", 1)
        body = f"{tex_escape(a)} \\pm {tex_escape(b)}"
        body = f"\\mathbf{{{body}}}" if c.best else body
        dagger = "^{\\dagger}" if c.mark else ""
        return f"${body}{dagger}$"
    text = tex_escape(c.text)
    if c.best and c.text != "–":
        text = f"\\textbf{{{text}}}"
    if c.warn and c.text.isdigit():
        text += FEW_SEEDS
    return text + (r"$^{\dagger}$" if c.mark else "")


def render_latex(report: Report, tables: list[DisplayTable] | None = None) -> str:
    """Booktabs tables, one per block and section; best in bold. Needs ``booktabs`` and ``graphicx``."""
    tables = display_tables(report) if tables is None else tables
    o = report.options
    out = [f"% mmbench leaderboard, generated {report.generated} from {tex_escape(report.results_dir)}",
           "% \\usepackage{booktabs} and \\usepackage{graphicx} in the preamble", ""]
    for t in tables:
        # the paper table: no rank, difference or p-value columns (the marker and the caption say it)
        drop = ("rank", "Δ ref", "p (t)", "p (W)") if t.section == "leaderboard" else ()
        keep = [i for i, h in enumerate(t.headers) if h not in drop]
        numeric = t.numeric or [False] * len(t.headers)
        headers, rows = [t.headers[i] for i in keep], [[r[i] for i in keep] for r in t.rows]
        spec = "".join("r" if numeric[i] else "l" for i in keep)
        caption = {
            "leaderboard": f"{tex_escape(t.block)}: test metrics (\\%), mean $\\pm$ std over $n$ training seeds; "
                           f"best in bold; $^\\dagger$ differs from {tex_escape(o.reference or '-')} "
                           f"(paired t-test over seeds, Holm-corrected, $p<{o.alpha:g}$); "
                           f"{FEW_SEEDS} fewer than 3 seeds; $^\\ddagger$ the method has reconstructed parts.",
            "modalities": f"{tex_escape(t.block)}: per modality (\\%), mean $\\pm$ std over $n$ training seeds: "
                          "unimodal heads (acc), the fused model with the other modalities masked (only), linear "
                          "probes, Shapley contributions ($\\varphi$) and the Shapley imbalance degree "
                          "(unitless); best in bold; $^\\dagger$ as in the leaderboard.",
            "robustness": f"{tex_escape(t.block)}: robustness (\\%), mean $\\pm$ std over training seeds; "
                          "clean, relative (normalised area under the accuracy--level curve), effective "
                          f"(vs.\\ {tex_escape(o.reference or '-')}) and worst-level accuracy.",
            "cost": f"{tex_escape(t.block)}: cost, mean $\\pm$ std over training seeds.",
            "paper": "Paper layout (\\%): our mean $\\pm$ std over training seeds per method, dataset, attack and "
                     "level; the published figure in brackets.",
            "published": "Published vs reproduced: the published figure, our mean and 95\\% interval, and whether "
                         "the published value lies inside it.",
        }[t.section]
        label = re.sub(r"[^a-z0-9]+", "-", f"{t.block}-{t.section}".lower()).strip("-")
        body = [" & ".join(tex_escape(h) for h in headers) + r" \\", r"\midrule"]
        body += [("{}" if r[0].text.startswith("[") else "") + " & ".join(_tex_cell(c) for c in r) + r" \\"
                 for r in rows]
        wide = len(headers) > 7
        out += [r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{caption}}}",
                f"\\label{{tab:mmbench-{label}}}"]
        out += [r"\resizebox{\textwidth}{!}{%"] if wide else []
        out += [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", *body, r"\bottomrule", r"\end{tabular}"]
        out += ["}"] if wide else []
        out += [r"\end{table}", ""]
    return "\n".join(out)


def _records(df: pd.DataFrame) -> list[dict]:
    if df is None or df.empty:
        return []
    return json.loads(df.to_json(orient="records", double_precision=10))


def render_json(report: Report) -> str:
    doc = {"mmbench_report": 1, "generated": report.generated, "results_dir": report.results_dir,
           "options": asdict(report.options), "group_by": report.grouping.names, "primary_metric": report.primary,
           "warnings": report.warnings, "legend": legend(report),
           "leaderboard": _records(report.wide), "stats": _records(tidy_stats(report)),
           "published": _records(report.published.rename(columns={"entry": report.grouping.entry}))}
    return json.dumps(doc, indent=1, allow_nan=False)
