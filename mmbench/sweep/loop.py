"""The run loop: skip finished runs, submit the rest to an executor, retry failures, count the outcomes.

Complete runs are skipped, partial ones continue from their last epoch checkpoint (``resume=False``
trains them from the start), diverged ones are kept as they are (the same seed diverges again),
failed ones are tried again up to ``retries`` times. A failed run records ``status.json`` (status,
error, traceback) in its folder and the sweep goes on; an unwritable results directory stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.errors import ResultsNotWritable
from mmbench.results import atomic_write_text
from mmbench.sweep.executors import Executor
from mmbench.sweep.grid import Grid, Run
from mmbench.sweep.worker import Result, Task, run_state

#: the order in which summaries list run states
STATE_ORDER = ["done", "attack", "partial", "running", "pending", "failed", "diverged"]


@dataclass
class SweepReport:
    total: int
    skipped: int = 0  # complete before the sweep started (or diverged earlier)
    complete: int = 0
    failed: int = 0
    diverged: int = 0
    retried: int = 0
    seconds: float = 0.0
    results: list[Result] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.skipped + self.complete


def grid_states(grid: Grid) -> list[tuple[Run, str]]:
    """Every run with its state (see :func:`run_state`)."""
    return [(run, run_state(run)) for run in grid.runs]


def write_manifest(grid: Grid, results_dir: str | os.PathLike, options: dict[str, Any]) -> Path:
    """``<results>/sweeps/<grid>-<digest>.json``: the grid's run ids; also proves the directory is writable."""
    path = Path(results_dir) / "sweeps" / f"{Path(grid.path).stem}-{grid.digest}.json"
    atomic_write_text(path, json.dumps({"grid": str(Path(grid.path).resolve()), "created": time.time(),
                                        "options": options, "run_ids": [r.run_id for r in grid.runs]}, indent=2))
    return path


def run_sweep(grid: Grid, executor: Executor, retries: int = 0, resume: bool = True,
              on_event: Callable[[str, Run, Result | None, SweepReport], None] | None = None) -> SweepReport:
    """Execute every run that is not done; failures are recorded and retried up to ``retries`` times.

    ``on_event(kind, run, result, report)`` with kind ``start``, ``skip``, ``finish``, ``retry``.
    Raises :class:`ResultsNotWritable` (after stopping the executor) when results cannot be written.
    """
    report = SweepReport(len(grid.runs))
    started = time.perf_counter()
    queue: deque[Task] = deque()
    emit = on_event or (lambda *a: None)
    for run in grid.runs:
        state = run_state(run)
        if state == "done":
            report.skipped += 1
        elif state == "diverged":
            report.diverged += 1
        else:
            queue.append(Task(run, resume=resume))
            continue
        emit("skip", run, None, report)
    in_flight: dict[Future, Task] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < executor.capacity:
                task = executor.prepare(queue.popleft())
                emit("start", task.run, None, report)
                in_flight[executor.submit(task)] = task
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in finished:
                task = in_flight.pop(future)
                result = _result(future, task)
                executor.finish(task, result)
                if result.fatal:
                    raise ResultsNotWritable(result.error)
                if result.status == "failed" and task.attempt <= retries:
                    report.retried += 1
                    emit("retry", task.run, result, report)
                    queue.append(Task(task.run, attempt=task.attempt + 1, resume=True))
                    continue
                report.results.append(result)
                if result.status in ("complete", "skipped"):
                    report.complete += 1
                elif result.status == "diverged":
                    report.diverged += 1
                else:
                    report.failed += 1
                emit("finish", task.run, result, report)
    except BaseException:
        executor.close(cancel=True)
        raise
    executor.close()
    report.seconds = time.perf_counter() - started
    return report


def _result(future: Future, task: Task) -> Result:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - the worker itself died (killed, out of memory, crashed)
        error = f"worker crashed: {type(e).__name__}: {e}"
        folder = task.run.folder()
        with contextlib.suppress(Exception):
            if task.shared_fs and (folder.path / "config.yaml").exists() and not folder.complete:
                folder.write_failure(RuntimeError(error), attempt=task.attempt)
        return Result(task.run.run_id, "failed", error=error)
