"""Leaderboards from run folders, with honest statistics, plots and publishable formats; no torch.

Flow: :func:`collect` reads every complete run folder into a runs table (one row per run) and the
attack rows; :func:`build_report` groups, aggregates and compares them (``long``, ``stats``,
``wide``, ``published``); :func:`write_report` writes CSV, Markdown, HTML, LaTeX, JSON and PNG plots.

Modules, one job each: :mod:`~mmbench.report.labels` (run labels and metric names),
:mod:`~mmbench.report.collect` (run folders into tables), :mod:`~mmbench.report.robustness` (attack
curves and their scores), :mod:`~mmbench.report.published` (published vs ours),
:mod:`~mmbench.report.stats` (intervals and paired tests), :mod:`~mmbench.report.analysis`
(grouping, aggregation, the :class:`Report`), :mod:`~mmbench.report.display` (cells, tables,
legend), :mod:`~mmbench.report.renderers` (Markdown, LaTeX, JSON), :mod:`~mmbench.report.html`,
:mod:`~mmbench.report.plots` (matplotlib, imported only when plots are drawn) and
:mod:`~mmbench.report.write` (files).

Row labels are the ones each run recorded at train time (``summary.json``'s ``label``): a method
that uses the configured fusion (no architecture of its own) and was trained with a fusion other
than its dataset's default is labelled with it, e.g. ``joint(fusion=late)``, unless ``model.fusion``
is one of the ``--group-by`` keys.
"""

from mmbench.report.analysis import Report, ReportOptions, build_report, leaderboard
from mmbench.report.collect import collect
from mmbench.report.display import display_tables, terminal_tables, tidy_runs, tidy_stats
from mmbench.report.labels import RECONSTRUCTED, dataset_label, reference_for
from mmbench.report.write import FORMATS, parse_formats, write_report

__all__ = ["FORMATS", "RECONSTRUCTED", "Report", "ReportOptions", "build_report", "collect", "dataset_label",
           "display_tables", "leaderboard", "parse_formats", "reference_for", "terminal_tables", "tidy_runs",
           "tidy_stats", "write_report"]
