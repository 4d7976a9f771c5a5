"""Terminal presentation: results on stdout, progress and diagnostics on stderr; the live
training status and tables that never truncate a number or a row label."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd


def _console(stderr: bool) -> Console:
    c = Console(stderr=stderr)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c.width = 160  # logs, pipes and pasted output: do not wrap tables at 80 columns
    return c


out = _console(stderr=False)  # results: tables, one line per finished run
console = _console(stderr=True)  # progress bars, warnings and errors
# A live bar (on stderr) passes stdout's lines through itself only when stdout is the terminal too
# (redirect_stdout=out.is_terminal below); a redirected stdout (mmbench ... > file) keeps every result line.


def _heads(row: dict, prefix: str) -> str:
    return " ".join(f"{k[len(prefix):]} {v:.2f}" for k, v in row.items() if k.startswith(prefix))


class TrainingStatus:
    """What the Trainer drives: ``status(epoch, step, total, row)`` after each epoch (the plain
    callback contract), ``batch(epoch, step, total, running)`` after each batch (``running()``
    gives the epoch's running loss and accuracies) and ``phase(label)`` for the work after training."""

    def __init__(self, progress: Progress, task, epochs: int | None = None, every: float = 0.2):
        self.progress, self.task, self.every, self._last = progress, task, every, -1.0
        self.epochs, self._val = epochs, ""

    def batch(self, epoch: int, step: int, total: int, running: Callable[[], dict]) -> None:
        now = time.monotonic()
        if now - self._last < self.every and step < total:
            self.progress.update(self.task, completed=step, total=total)
            return
        self._last = now
        row = running()
        heads = _heads(row, "train_acc_")
        status = f"ep {epoch + 1} loss {row['train_loss']:.3f} train {row['train_acc']:.2f}" + (
            f" · {heads}" if heads else "") + self._val
        self.progress.update(self.task, completed=step, total=total, status=status)

    def __call__(self, epoch: int, step: int, total: int, row: dict) -> None:
        heads = _heads(row, "val_acc_")
        self._val = f" | ep {epoch + 1} val {row['val_acc']:.3f}" + (f" · {heads}" if heads else "")
        status = f"ep {epoch + 1} loss {row['train_loss']:.3f}{self._val}"
        self.progress.update(self.task, completed=step, total=total, status=status)

    def phase(self, label: str) -> None:
        self.progress.update(self.task, status=label + " …")


@contextmanager
def training_progress(label: str, enabled: bool = True):
    """A :class:`TrainingStatus` driving a live bar (per batch, ETA, per-modality accuracy), or None."""
    if not enabled:
        yield None
        return
    # markup=False: a status like "[vector 0.88]" or a label with brackets is shown as written
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  TextColumn("{task.fields[status]}", markup=False), console=console, transient=True,
                  redirect_stdout=out.is_terminal) as progress:
        yield TrainingStatus(progress, progress.add_task(label, total=None, status="starting …"))


class AttackStatus:
    """One bar over the runs of ``mmbench attack``; ``start(run_id)`` gives the runner's ``(done, total)`` callback."""

    def __init__(self, progress: Progress, runs: int):
        self.progress, self.runs, self.index = progress, runs, 0
        self.task = progress.add_task("attack", total=None, status="")

    def start(self, run_id: str) -> Callable[[int, int], None]:
        self.index += 1
        label = f"run {self.index}/{self.runs} {run_id}"
        self.progress.update(self.task, completed=0, status=label)

        def update(done: int, total: int) -> None:
            self.progress.update(self.task, completed=done, total=total)

        return update


@contextmanager
def attack_progress(runs: int, enabled: bool = True):
    """An :class:`AttackStatus` driving a live bar on stderr (evaluations done, ETA), or None."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("attack"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), TextColumn("{task.fields[status]}", markup=False), console=console,
                  transient=True, redirect_stdout=out.is_terminal) as progress:
        yield AttackStatus(progress, runs)


def rich_table(df: pd.DataFrame, title: str) -> Table:
    table = Table(title=escape(title), header_style="bold", show_lines=False)
    for col in df.columns:
        text = col in ("dataset", "method")
        table.add_column(escape(str(col)), justify="left" if text else "right", no_wrap=True)
    for row in df.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in row))
    return table


# ---------------------------------------------------------------------------------------
# Tables that fit the terminal
# ---------------------------------------------------------------------------------------

_CELL_EXTRA = 3  # one space of padding each side and the column's rule


def _wrap_header(header: str, width: int) -> str:
    """Break a header at spaces into lines of at most ``width`` (a longer word keeps its line)."""
    lines: list[str] = []
    for word in header.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def _key_count(columns: list[str]) -> int:
    """The row-label columns repeated in every part: up to and including ``n``, else the first."""
    return columns.index("n") + 1 if "n" in columns else 1


def fit_tables(df: pd.DataFrame, title: str, width: int) -> list[Table]:
    """``df`` as one or more tables of at most ``width`` columns; no cell is ever cut.

    Headers wrap at spaces; a table too wide is split into parts that each repeat the row-label
    columns (rank, method, n); when even one value column does not fit beside the labels, each row
    becomes its own two-column ``column | value`` table (the vertical layout)."""
    from rich.cells import cell_len

    cols = [str(c) for c in df.columns]
    cells = [[str(v) for v in df[c]] for c in df.columns]
    data_w = [max([cell_len(v) for v in vs] + [1]) for vs in cells]
    # a header wraps at spaces only where it is longer than both its values and 12 columns
    headers = [_wrap_header(h, max(w, 12, *(cell_len(x) for x in h.split(" ")))) for h, w in zip(cols, data_w)]
    widths = [max(w, *(cell_len(x) for x in h.split("\n"))) + _CELL_EXTRA for h, w in zip(headers, data_w)]
    keys = _key_count(cols)
    key_w = 1 + sum(widths[:keys])
    parts: list[list[int]] = []
    for i in range(keys, len(cols)):
        if parts and key_w + sum(widths[j] for j in parts[-1]) + widths[i] <= width:
            parts[-1].append(i)
        else:
            parts.append([i])
    if any(key_w + sum(widths[j] for j in p) > width for p in parts):
        return _vertical(cols, cells, keys, title)
    parts = parts or [[]]
    tables = []
    for k, part in enumerate(parts):
        name = title if len(parts) == 1 else f"{title} ({k + 1}/{len(parts)})"
        table = Table(title=escape(name), header_style="bold", title_justify="left")
        for i in [*range(keys), *part]:
            label = i < keys and cols[i] != "n" and cols[i] != "rank"
            table.add_column(escape(headers[i]), justify="left" if label else "right", no_wrap=True,
                             min_width=widths[i] - _CELL_EXTRA, overflow="fold")
        for r in range(len(df)):
            table.add_row(*(escape(cells[i][r]) for i in [*range(keys), *part]))
        tables.append(table)
    return tables


def _vertical(cols: list[str], cells: list[list[str]], keys: int, title: str) -> list[Table]:
    tables = []
    for r in range(len(cells[0]) if cells else 0):
        label = " · ".join(cells[i][r] for i in range(keys))
        table = Table(title=escape(f"{title}: {label}"), show_header=False, title_justify="left")
        table.add_column(style="bold", overflow="fold")
        table.add_column(justify="right", overflow="fold")
        for i in range(keys, len(cols)):
            table.add_row(escape(cols[i]), escape(cells[i][r]))
        tables.append(table)
    return tables


def print_table(df: pd.DataFrame, title: str, console: Console = out) -> None:
    """Print ``df`` split or stacked to the console's width (see :func:`fit_tables`)."""
    for table in fit_tables(df, title, console.width):
        console.print(table)
