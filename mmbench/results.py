"""Run folders and the results table.

``<results_dir>/runs/<run_id>/`` holds ``config.yaml``, ``env.json``, ``metrics.csv``,
``model.pt`` (weights only), ``summary.json`` (written last: a run is complete when it
exists) and ``attack.csv``. Every file is written to a temporary name and renamed.

``summary.json`` carries its own ``digest`` and the SHA-256 of the run's other files; a run whose
record no longer matches (an edited summary, config or metrics) has the status ``altered`` and is
left out of reports. Training a complete run again (``--force``) writes the new files aside, in
``.next/``, and swaps them in once the new run is complete (:meth:`RunFolder.commit_next`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mmbench import __version__, yaml_io
from mmbench.checksums import file_sha256, read_bounded, record_digest
from mmbench.config import RunConfig, dump_yaml
from mmbench.errors import MMBenchError, ResultsNotWritable, TrainingDiverged
from mmbench.paths import MARKER, MAX_FILE_NAME, UMASK, is_own, mark_own, safe_name

MAX_RECORD = 64 << 20  # bytes: a summary.json or config.yaml larger than this is not one mmbench wrote
NEXT = ".next"  # where a forced retrain of a complete run writes its files until they replace the old ones
ADDED_LATER = ("deterministic",)  # top-level config keys newer than some run folders: their defaults apply
RECORD = ("config.yaml", "metrics.csv")  # checked against summary.json whenever the run is read


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, rename: readers see the old or the new file.

    An ``OSError`` (no permission, read-only file system, disk full) becomes
    :class:`ResultsNotWritable`; the temporary file is removed and the old file is untouched.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        reason = e.strerror or type(e).__name__
        hint = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
        raise ResultsNotWritable(f"cannot write {path} ({reason}); {hint} or choose another "
                                 f"--results-dir; results written before are intact") from e
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False))


_HELD: set[str] = set()  # run folders whose lock this process holds


class RunLocked(MMBenchError):
    """Another process is training this run."""


class RecordAltered(MMBenchError):
    """A run's record (summary.json, config.yaml, metrics.csv) is not what mmbench wrote."""


class RunFolder:
    """One run's folder and its files (``run_id``: the run's id when ``path`` is its ``.next/`` folder)."""

    def __init__(self, path: Path, run_id: str | None = None):
        self.path = Path(path)
        self._run_id = run_id

    @classmethod
    def for_config(cls, cfg: RunConfig) -> RunFolder:
        return cls(Path(cfg.output.results_dir) / "runs" / safe_name(cfg.run_id(), "run id", MAX_FILE_NAME))

    @property
    def run_id(self) -> str:
        return self._run_id or self.path.name

    def next(self) -> RunFolder:
        """The ``.next/`` folder where a complete run is trained again (emptied first when mmbench made it)."""
        path = self.path / NEXT
        if os.path.lexists(path):
            if not is_own(path, NEXT):
                raise MMBenchError(f"{path} is in the way of training the run again and was not made by mmbench; "
                                   "move it elsewhere")
            shutil.rmtree(path)
        path.mkdir()
        mark_own(path, NEXT)
        return RunFolder(path, self.run_id)

    def commit_next(self) -> None:
        """Swap in the complete run in ``.next/``: its files replace the old ones, attack rows and other
        files of the old run are removed, ``summary.json`` comes last. Repeatable: a commit cut short
        (killed) is finished by the next :meth:`lock`."""
        new = self.path / NEXT
        try:
            keep = set(json.loads((new / "summary.json").read_text())["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return  # no complete new run (yet): the old one stays
        for path in new.iterdir():
            if path.name not in ("summary.json", MARKER):
                if path.is_dir() and (self.path / path.name).is_dir():  # a tracker's folder (mmbench.loggers)
                    shutil.rmtree(self.path / path.name)
                os.replace(path, self.path / path.name)
        for name in ("attack.csv", "model.pt", "artifacts.npz", "checkpoint.pt", "status.json"):
            if name not in keep:
                (self.path / name).unlink(missing_ok=True)
        os.replace(new / "summary.json", self.path / "summary.json")
        shutil.rmtree(new, ignore_errors=True)

    @property
    def complete(self) -> bool:
        return (self.path / "summary.json").exists()

    # -- status of runs that are not complete (failures are data) ------------------------
    def write_status(self, status: str, **fields: Any) -> None:
        """``status.json``: ``running`` (with the last finished ``epoch``), ``failed``, ``diverged``
        or ``interrupted``, with ``error`` and ``traceback``; ``summary.json`` supersedes it."""
        record = {"run_id": self.run_id, "status": status, "updated": time.time(), "host": socket.gethostname(),
                  "pid": os.getpid(), **fields}
        atomic_write_text(self.path / "status.json", json.dumps(record, indent=2, default=str))

    def write_failure(self, exc: BaseException, **fields: Any) -> None:
        """Record why the run stopped; never raises (the original error matters more)."""
        if isinstance(exc, TrainingDiverged):
            status, fields = "diverged", {"epoch": exc.epoch, "step": exc.step, **fields}
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            status = "interrupted"
        else:
            status = "failed"
        previous = self.read_status() or {}
        for key in ("epoch", "epochs", "checkpoints"):  # how far the run got, unless the error says
            if previous.get(key) is not None:
                fields.setdefault(key, previous[key])
        with contextlib.suppress(Exception):
            self.write_status(status, error=f"{type(exc).__name__}: {exc}",
                              traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                              **fields)

    def read_status(self) -> dict[str, Any] | None:
        try:
            record = json.loads(read_bounded(self.path / "status.json", MAX_RECORD))
        except (OSError, ValueError, MMBenchError):
            return None
        return record if isinstance(record, dict) else None

    @property
    def status(self) -> str:
        """``complete``, ``altered`` (its record no longer matches: :meth:`check_record`), ``diverged``,
        ``failed``, ``running``, ``interrupted`` (killed or stopped mid-way; a resume continues it) or
        ``pending`` (nothing written yet)."""
        if self.complete:
            try:
                self.check_record()
            except RecordAltered:
                return "altered"
            return "complete"
        record = self.read_status()
        if record is None:
            return "interrupted" if (self.path / "config.yaml").exists() else "pending"
        if record.get("status") == "running" and not self.locked():
            return "interrupted"
        return record.get("status", "failed")

    # -- exclusive use: one process trains a run at a time --------------------------------
    def _key(self) -> str:
        try:
            return str(self.path.resolve())
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
            raise ResultsNotWritable(f"cannot use the run folder {self.path} ({e}); choose another "
                                     "--results-dir") from None

    def locked(self) -> bool:
        """Whether another process holds the run's lock (see :meth:`lock`)."""
        if self._key() in _HELD or not self.path.is_dir():
            return self._key() in _HELD
        try:
            with self.lock(timeout=0, clean=False):
                return False
        except RunLocked:
            return True

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None, clean: bool = True):
        """Hold an exclusive ``flock`` on the run folder (released by the OS if the process dies).

        ``timeout``: seconds to wait (``None``: forever; 0: fail at once with :class:`RunLocked`).
        Re-entrant within a process. With ``clean``, temporary files left by a killed writer are
        removed on entry.
        """
        import fcntl

        key = self._key()
        if key in _HELD:
            yield self
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise ResultsNotWritable(f"cannot create run folder {self.path} ({e.strerror}); "
                                     "make the results directory writable or choose another --results-dir") from e
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RunLocked(f"run {self.run_id} is being trained by another process; "
                                        "wait for it or stop it") from None
                    time.sleep(0.05)
            _HELD.add(key)
            try:
                for tmp in self.path.glob(".*.tmp") if clean else ():
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                self.commit_next()
                yield self
            finally:
                _HELD.discard(key)
        finally:
            os.close(fd)

    # -- checksums ----------------------------------------------------------------------
    def checksums(self, names: list[str]) -> dict[str, str]:
        """SHA-256 of the named files that exist (recorded in ``summary.json``)."""
        return {n: file_sha256(self.path / n) for n in names if (self.path / n).exists()}

    def verify(self, name: str, summary: dict[str, Any] | None = None) -> None:
        """Check ``name`` against the SHA-256 in ``summary.json`` (read when not given); a mismatch,
        or a file that is not regular, is an error."""
        if summary is None and not self.complete:
            return
        expected = (summary or self.read_summary()).get("sha256", {}).get(name)
        if expected is not None and file_sha256(self.path / name) != expected:
            raise RecordAltered(f"run {self.run_id}: checksum mismatch for {self.path / name}: the file changed after "
                                "training; train the run again with --force")

    def check_record(self) -> dict[str, Any]:
        """The run's summary, once it and the files it records (config.yaml, metrics.csv) are found as
        mmbench wrote them; else :class:`RecordAltered` naming the run and the file."""
        summary = self.read_summary()
        for name in RECORD:
            if name not in summary.get("sha256", {}):
                raise RecordAltered(f"run {self.run_id}: summary.json records no checksum of {name}; "
                                    "train the run again with --force")
            if not (self.path / name).exists():
                raise RecordAltered(f"run {self.run_id}: {name} is missing; train the run again with --force")
            self.verify(name, summary)
        return summary

    # -- writing ------------------------------------------------------------------------
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.path / "config.yaml", dump_yaml(cfg.to_dict()))

    def write_env(self, device: str, **extra: Any) -> None:
        """``env.json``: versions, device, threads, git commit, plus ``extra`` facts (e.g. allocator tuning)."""
        atomic_write_text(self.path / "env.json", json.dumps({**environment(device), **extra}, indent=2))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_csv(self.path / "metrics.csv", pd.DataFrame(rows))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """``summary.json`` with its own ``digest`` (over the record as JSON reads it back)."""
        record = json.loads(json.dumps(summary, default=float))
        record.pop("digest", None)
        atomic_write_text(self.path / "summary.json", json.dumps({**record, "digest": record_digest(record)}, indent=2))

    def save_model(self, state_dict: dict) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state_dict, buf)
        atomic_write_bytes(self.path / "model.pt", buf.getvalue())

    def save_checkpoint(self, data: bytes) -> None:
        """``checkpoint.pt`` (see :mod:`mmbench.checkpoint`); removed when the run completes."""
        atomic_write_bytes(self.path / "checkpoint.pt", data)

    def drop_progress(self) -> None:
        """Remove ``checkpoint.pt`` and ``status.json``: a complete run (``summary.json``) needs neither."""
        for name in ("checkpoint.pt", "status.json"):
            (self.path / name).unlink(missing_ok=True)

    def save_arrays(self, name: str, **arrays) -> None:
        """A compressed ``.npz`` of plain arrays (no pickles)."""
        import numpy as np

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.path / name, buf.getvalue())

    def load_arrays(self, name: str) -> dict:
        import numpy as np

        with np.load(self.path / name, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def write_attack_rows(self, rows: list[dict[str, Any]], key: list[str]) -> pd.DataFrame:
        """Merge rows into ``attack.csv``, holding the run's lock (attacks running at once keep every
        row); a new row replaces an old one with the same ``key``."""
        new = pd.DataFrame(rows)
        with self.lock(timeout=600, clean=False):
            old = self.read_attack()
            merged = pd.concat([old, new], ignore_index=True) if not old.empty else new
            # compare keys as text: a CSV round trip turns "1" into 1
            merged = merged[~merged[key].astype(str).duplicated(keep="last")].reset_index(drop=True)
            atomic_write_csv(self.path / "attack.csv", merged)
        return merged

    # -- reading ------------------------------------------------------------------------
    def read_config(self) -> RunConfig:
        path = self.path / "config.yaml"
        if not path.exists():
            raise MMBenchError(f"{self.path} is not a run folder (no config.yaml)")
        try:
            d = yaml_io.parse(read_bounded(path, MAX_RECORD).decode())
            if not isinstance(d, dict):
                raise TypeError("not a mapping")
            missing = [f.name for f in dataclasses.fields(RunConfig) if f.name not in d and f.name not in ADDED_LATER]
            if missing:  # written fully resolved: every section is there (but those added since)
                raise KeyError(f"no {', '.join(missing)}")
            return RunConfig.from_dict(d)
        except yaml.YAMLError:
            raise MMBenchError(f"run {self.run_id}: config.yaml is not valid YAML; the run folder is damaged: train "
                               "the run again with --force") from None
        except (MMBenchError, ValueError, TypeError, AttributeError, KeyError) as e:
            detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise MMBenchError(f"run {self.run_id}: config.yaml is damaged ({detail}); train the run again "
                               "with --force") from None

    def read_summary(self) -> dict[str, Any]:
        """``summary.json``, verified against its ``digest``; else :class:`RecordAltered`."""
        fix = "train the run again with --force"
        try:
            record = json.loads(read_bounded(self.path / "summary.json", MAX_RECORD))
        except (OSError, ValueError, MMBenchError) as e:
            raise RecordAltered(f"run {self.run_id}: summary.json is unreadable ({e}); {fix}") from None
        digest = record.pop("digest", None) if isinstance(record, dict) else None
        if digest is None:
            raise RecordAltered(f"run {self.run_id}: summary.json has no digest (written by an older mmbench, or "
                                f"edited); {fix}")
        if digest != record_digest(record):
            raise RecordAltered(f"run {self.run_id}: summary.json changed after the run was written (its digest "
                                f"does not match); {fix}")
        return record

    def read_metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "metrics.csv")

    def read_attack(self) -> pd.DataFrame:
        """``attack.csv`` (empty when absent); a damaged file is an :class:`MMBenchError` naming the run."""
        path = self.path / "attack.csv"
        if not path.exists():
            return pd.DataFrame()
        try:
            rows = pd.read_csv(io.BytesIO(read_bounded(path, MAX_RECORD)))
        except (OSError, ValueError) as e:
            rows, problem = None, str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        else:
            missing = [c for c in ("attack", "level", "acc") if c not in rows.columns]
            problem = f"no column {missing[0]!r}" if missing else None
        if problem:
            raise MMBenchError(f"run {self.run_id}: attack.csv is damaged ({problem}); delete it and attack the "
                               "run again")
        return rows

    def load_state_dict(self, map_location: str = "cpu") -> dict:
        import torch

        path = self.path / "model.pt"
        if not path.exists():
            raise MMBenchError(f"{path} is missing; train the run again (output.save_model must be true)")
        self.verify("model.pt")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise MMBenchError(f"{path} cannot be loaded safely ({type(e).__name__}); train the run again") from None


def environment(device: str) -> dict[str, Any]:
    import numpy
    import torch

    env = {"mmbench": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "numpy": numpy.__version__, "pandas": pd.__version__,
           "device": device, "threads": torch.get_num_threads(), "git_commit": _git_commit(),
           "cpu_model": cpu_model()}
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def cpu_model() -> str:
    """The CPU's model name: ``/proc/cpuinfo``'s "model name" on Linux, ``platform.processor()`` otherwise."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_folders(results_dir: str | os.PathLike) -> list[RunFolder]:
    """Complete run folders under ``results_dir`` (incomplete ones are skipped)."""
    runs = Path(results_dir) / "runs"
    return [RunFolder(p) for p in sorted(runs.iterdir()) if (p / "summary.json").exists()] if runs.exists() else []


def all_run_folders(results_dir: str | os.PathLike) -> list[RunFolder]:
    """Every run folder under ``results_dir``, complete or not (see :attr:`RunFolder.status`)."""
    runs = Path(results_dir) / "runs"
    return [RunFolder(p) for p in sorted(runs.iterdir()) if p.is_dir() and not p.name.startswith(".")] \
        if runs.exists() else []


def run_statuses(results_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per run folder that is **not** complete: run_id, dataset, method, seed, status
    (failed, diverged, running, interrupted), epoch, error. ``report`` counts these by status;
    it reads results only from complete runs (:func:`run_folders`)."""
    rows = []
    for folder in all_run_folders(results_dir):
        status = folder.status
        if status in ("complete", "pending"):
            continue
        record = folder.read_status() or {}
        if status == "altered":
            try:
                folder.check_record()
            except RecordAltered as e:
                record = {"error": str(e)}
        row = {"run_id": folder.run_id, "dataset": None, "modalities": None, "method": None, "seed": None,
               "status": status, "epoch": record.get("epoch"), "error": record.get("error")}
        with contextlib.suppress(Exception):
            cfg = folder.read_config()
            row.update(dataset=cfg.data.dataset, modalities=cfg.data.modalities, method=cfg.method.name,
                       seed=cfg.seed)
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "dataset", "modalities", "method", "seed", "status", "epoch",
                                       "error"])


INCOMPLETE = ("altered", "failed", "diverged", "running", "interrupted")


def status_summary(statuses: dict[str, int]) -> str:
    """``"1 failed, 2 diverged"``: the incomplete statuses that occur, in a fixed order ("" when none)."""
    return ", ".join(f"{statuses[s]} {s}" for s in INCOMPLETE if statuses.get(s))


def incomplete_note(statuses: dict[str, int]) -> str | None:
    """``"3 runs are not in the tables: 1 failed, 1 diverged, 1 running ..."`` (None when there are none)."""
    summary = status_summary(statuses)
    if not summary:
        return None
    total = sum(statuses.get(s, 0) for s in INCOMPLETE)
    return (f"{total} run{'s are' if total > 1 else ' is'} not in the tables: {summary} "
            "(error and epoch in each run folder's status.json; the same `mmbench sweep` again retries failed "
            "runs and resumes interrupted ones; altered runs: their record changed after they were written, "
            "train them again with --force)")


def resolve_run(ref: str, results_dir: str | os.PathLike) -> RunFolder:
    """A run given by folder path or by run id under ``results_dir/runs``."""
    for candidate in (Path(ref), Path(results_dir) / "runs" / ref):
        with contextlib.suppress(OSError):  # e.g. a name too long for the file system
            if (candidate / "config.yaml").exists():
                return RunFolder(candidate)
    shown = ref if len(ref) <= 80 else f"{ref[:80]}..."
    raise MMBenchError(f"run {shown!r} not found (neither a run folder nor a run id in {results_dir}/runs)")
