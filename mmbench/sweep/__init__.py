"""Sweeps: a grid file expanded into runs, executed inline, on a local process pool or on Ray.

- :mod:`~mmbench.sweep.grid`: the grid file's schema, its expansion into resolved runs, checks before any run;
- :mod:`~mmbench.sweep.worker`: one run in a worker (train, resume, attack) and a run folder's state;
- :mod:`~mmbench.sweep.executors`: ``inline``, ``process`` and ``ray`` (registry ``EXECUTORS``);
- :mod:`~mmbench.sweep.loop`: the run loop (skip finished runs, schedule, retry, count);
- :mod:`~mmbench.sweep.progress`: the progress display.

``mmbench sweep`` (in :mod:`mmbench.cli`) checks the options, expands the grid, and runs it with progress.
"""

from mmbench.sweep.executors import (
    Executor,
    InlineExecutor,
    ProcessExecutor,
    RayExecutor,
    check_options,
    make_executor,
)
from mmbench.sweep.grid import Grid, Run, expand, load_grid, verify_datasets
from mmbench.sweep.loop import STATE_ORDER, SweepReport, grid_states, run_sweep, write_manifest
from mmbench.sweep.progress import SweepProgress
from mmbench.sweep.worker import Result, Task, attack_done, execute, run_state

__all__ = ["STATE_ORDER", "Executor", "Grid", "InlineExecutor", "ProcessExecutor", "RayExecutor", "Result", "Run",
           "SweepProgress", "SweepReport", "Task", "attack_done", "check_options", "execute", "expand",
           "grid_states", "load_grid", "make_executor", "run_state", "run_sweep", "verify_datasets", "write_manifest"]
