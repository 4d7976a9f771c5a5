"""Terminal presentation: the live training progress bar and rich tables."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

console = Console(stderr=True)
if not console.is_terminal:
    console.width = 160  # logs and pasted output: do not wrap tables at 80 columns


@contextmanager
def training_progress(label: str, enabled: bool = True):
    """A callback ``(epoch, step, total, row)`` that drives a live bar with loss and accuracies."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[status]}"), console=console, transient=True) as progress:
        task = progress.add_task(label, total=None, status="")

        def update(epoch: int, step: int, total: int, row: dict) -> None:
            heads = " ".join(f"{k[len('val_acc_'):]} {v:.2f}" for k, v in row.items()
                             if k.startswith("val_acc_"))
            status = f"ep {epoch + 1} loss {row['train_loss']:.3f} val {row['val_acc']:.3f}" + (
                f" [{heads}]" if heads else "")
            progress.update(task, completed=step, total=total, status=status)

        yield update


def rich_table(df: pd.DataFrame, title: str) -> Table:
    table = Table(title=escape(title), header_style="bold", show_lines=False)
    for col in df.columns:
        text = col in ("dataset", "method")
        table.add_column(escape(str(col)), justify="left" if text else "right", no_wrap=True)
    for row in df.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in row))
    return table
