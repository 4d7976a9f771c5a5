"""Progress of a running sweep: a live rich bar (done / running / failed, ETA) on a terminal, one
line per finished run otherwise. A :class:`SweepProgress` is the loop's ``on_event`` callback."""

from __future__ import annotations

from mmbench.sweep.grid import Run
from mmbench.sweep.loop import SweepReport
from mmbench.sweep.worker import Result


class SweepProgress:
    """A live rich bar (done / running / failed, ETA) on a terminal; one line per finished run otherwise."""

    def __init__(self, total_to_run: int, live: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from mmbench.ui import console

        self.console = console
        self.running: set[str] = set()
        self.live = live
        self.progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                 transient=False, disable=not live)
        self.task = self.progress.add_task("sweep", total=total_to_run, status="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, kind: str, run: Run, result: Result | None, report: SweepReport) -> None:
        from rich.markup import escape

        if kind == "start":
            self.running.add(run.run_id)
        elif kind in ("finish", "retry"):
            self.running.discard(run.run_id)
        if kind == "finish":
            self.progress.advance(self.task)
            line = _result_line(run, result)
            self.progress.console.print(escape(line), soft_wrap=True, highlight=False)
        elif kind == "retry":
            self.progress.console.print(escape(f"retry  {run.label}: {result.error}"), soft_wrap=True, highlight=False)
        status = (f"done {report.complete}  running {len(self.running)}  failed {report.failed}  "
                  f"diverged {report.diverged}")
        self.progress.update(self.task, status=status)


def _result_line(run: Run, result: Result) -> str:
    if result.status in ("complete", "skipped"):
        acc = f" test acc {result.acc:.3f}" if result.acc is not None else ""
        verb = "done  " if result.status == "complete" else "skip  "
        return f"{verb} {run.label}{acc} ({result.seconds:.1f}s) {run.run_id}"
    first = (result.error or "").splitlines()[0] if result.error else ""
    return f"{result.status:6s} {run.label}: {first} {run.run_id}"
