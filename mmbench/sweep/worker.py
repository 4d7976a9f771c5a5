"""One run in whichever process an executor chose: the task, its result, and the run's state on disk.

A task trains (or resumes) its run and then evaluates the grid's attack plans; a run's own failure
is data (``status.json`` in its folder) and never raises. The state of a run folder says what is
left to do: ``done``, ``attack`` (trained, attack rows missing), ``partial``, ``failed``,
``diverged``, ``running`` or ``pending``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from mmbench.attacks.plan import AttackPlan
from mmbench.config import RunConfig
from mmbench.errors import ResultsNotWritable, TrainingDiverged
from mmbench.results import RunFolder
from mmbench.runtime import set_threads
from mmbench.sweep.grid import Run


def attack_done(folder: RunFolder, plans: list[AttackPlan]) -> bool:
    """Whether ``attack.csv`` has the rows of every plan (:meth:`AttackPlan.covered_by`)."""
    if not plans:
        return True
    try:
        rows = folder.read_attack()
    except Exception:  # noqa: BLE001 - unreadable: attack again (the write is atomic)
        return False
    if rows.empty or not {"attack", "level", "attack_seed", "protocol"} <= set(rows.columns):
        return False
    on = rows["modalities"].astype(str) if "modalities" in rows.columns else ["all"] * len(rows)
    have = {(str(r.protocol), str(r.attack), m, float(r.level), int(r.attack_seed)) for r, m in zip(rows.itertuples(), on)}
    return all(p.covered_by(have) for p in plans)


def run_state(run: Run) -> str:
    """``done``, ``attack`` (trained, attack rows missing), ``diverged``, ``failed``, ``running``,
    ``partial`` (stopped mid-way, resumable) or ``pending``."""
    folder = run.folder()
    status = folder.status
    if status == "complete":
        return "done" if attack_done(folder, run.attacks) else "attack"
    return {"interrupted": "partial"}.get(status, status)


@dataclass
class Task:
    run: Run
    attempt: int = 1
    resume: bool = True
    threads: int | None = None  # torch CPU threads in the worker (None: leave as is)
    shared_fs: bool = True  # False: train in a local temporary folder and return the files
    checkpoint: bytes | None = None  # no shared fs: the driver's checkpoint to resume from


@dataclass
class Result:
    run_id: str
    status: str  # complete | skipped | failed | diverged
    trained: bool = False
    error: str | None = None  # the traceback is in the run's status.json
    epoch: int | None = None
    seconds: float = 0.0
    fatal: bool = False  # the results directory cannot be written: stop the sweep
    acc: float | None = None
    worker: str = ""
    files: dict[str, bytes] | None = None  # no shared fs: the run folder's files


def execute(task: Task) -> Result:
    """Train (or resume) and attack one run; never raises for a run's own failure."""
    import tempfile

    if task.threads:
        set_threads(task.threads)
    run = task.run
    start = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    cfg = run.cfg()
    tmp = None
    if not task.shared_fs:
        tmp = tempfile.mkdtemp(prefix="mmbench-run-")
        cfg.output.results_dir = tmp
        if task.checkpoint is not None:
            RunFolder.for_config(cfg).save_checkpoint(task.checkpoint)
    folder = RunFolder.for_config(cfg)
    try:
        result = _execute(task, cfg, folder)
    finally:
        if tmp is not None:
            if (folder.path / "config.yaml").exists():
                _relocate(folder, run.cfg())
            files = {p.name: p.read_bytes() for p in folder.path.iterdir()
                     if p.is_file() and not p.name.startswith(".")} if folder.path.exists() else {}
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if tmp is not None:
        result.files = files
    result.seconds, result.worker = time.perf_counter() - start, worker
    return result


def _relocate(folder: RunFolder, cfg: RunConfig) -> None:
    """A run trained in a temporary folder: its config.yaml names the driver's results directory."""
    folder.write_config(cfg)
    if folder.complete:
        summary = folder.read_summary()
        if "config.yaml" in summary.get("sha256", {}):
            summary["sha256"].update(folder.checksums(["config.yaml"]))
            folder.write_summary(summary)


def _execute(task: Task, cfg: RunConfig, folder: RunFolder) -> Result:
    from mmbench.run import train_run

    run = task.run
    try:
        with folder.lock():  # waits while another process (e.g. one left from a killed sweep) trains it
            trained = False
            if not folder.complete:
                folder, trained = train_run(cfg, resume=task.resume)
            if not attack_done(folder, run.attacks):
                _attack(folder, cfg, run.attacks)
            acc = folder.read_summary().get("test", {}).get("acc")
            return Result(run.run_id, "complete" if trained else "skipped", trained=trained, acc=acc)
    except TrainingDiverged as e:
        return Result(run.run_id, "diverged", error=str(e), epoch=e.epoch)
    except ResultsNotWritable as e:
        return Result(run.run_id, "failed", error=str(e), fatal=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - a failed run is data; the sweep goes on
        with contextlib.suppress(Exception):
            if not (folder.path / "config.yaml").exists():
                folder.write_config(cfg)
            folder.write_failure(e, attempt=task.attempt)
        return Result(run.run_id, "failed", error=f"{type(e).__name__}: {e}",
                      epoch=(folder.read_status() or {}).get("epoch"))


def _attack(folder: RunFolder, cfg: RunConfig, plans: list[AttackPlan]) -> None:
    from mmbench.attacks.runner import run_plan

    for plan in plans:
        run_plan(folder, plan, device=cfg.device)


def _worker_init(threads: int, pids: Any = None) -> None:
    """Process-pool worker: a fixed share of the CPU threads; die with the sweep (kill -9 included).
    ``pids``: a queue that gets this worker's process id (the pool's owner kills its workers on cancel)."""
    import signal

    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the sweep died before prctl took effect
        os._exit(1)
    if pids is not None:
        pids.put(os.getpid())
    set_threads(threads)
