"""Reliability under injected faults (README, section "Reliability"):

- kill -9 of a sweep mid-way, then resume: every run completes exactly once, no truncated or
  duplicated file; reading results while the sweep runs sees only complete runs;
- NaN / inf loss: the run is marked ``diverged`` with its epoch, the sweep goes on (also test_sweep.py);
- results directory not writable / disk full: a clear error, exit 2, earlier results intact;
- tampered model, checkpoint or prepared data: a checksum error, never silent use;
- no code execution from any loaded file (weights-only torch loads, safe YAML).
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mmbench.checkpoint import FORMAT, MAGIC, from_file
from mmbench.checksums import file_sha256
from mmbench.data.store import prepare
from mmbench.errors import MMBenchError
from mmbench.report import build_report
from mmbench.results import RunFolder, run_folders
from mmbench.run import load_trained, train_run
from tests.cli_helpers import assert_one_line_error, run_cli, status_counts

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"optim.batch_size": 32, "model.hidden_dim": 16, "model.feature_dim": 8, "output.probe": False}
RUN_FILES = {"config.yaml", "env.json", "metrics.csv", "model.pt", "gap.npz", "summary.json"}


def one_line_error(code: int, err: str, *fragments: str) -> str:
    return assert_one_line_error(code, err, *fragments, ignore="sweep ")


def grid_file(tmp_path, methods, seeds=1, epochs=2, name="grid.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"datasets": ["tiny"], "methods": methods, "seeds": seeds,
                                    "set": {**SMALL, "optim.epochs": epochs}}))
    return str(path)


def snapshot(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.rglob("*")) if p.is_file()}


def stray_files(results: Path) -> list[str]:
    return [str(p) for p in results.rglob("*") if p.name.endswith(".tmp")]


# -- kill -9 mid-sweep, read while it runs, resume ---------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _read_complete_runs(results: Path) -> set[str]:
    """What report reads: only runs with summary.json, every file of them readable and whole."""
    seen = set()
    for folder in run_folders(results):
        summary = folder.read_summary()
        metrics = folder.read_metrics()
        cfg = folder.read_config()
        assert summary["run_id"] == folder.run_id == cfg.run_id()
        assert list(metrics["epoch"]) == list(range(cfg.optim.epochs))
        folder.load_state_dict()  # verifies model.pt against summary.json's SHA-256
        seen.add(folder.run_id)
    return seen


def test_kill_9_mid_sweep_then_resume_completes_every_run_exactly_once(tmp_path, data_dir, monkeypatch, capsys):
    # joint's two seeds start the pool and end first; the long ogm_ge runs are then killed mid-way (with 15
    # epochs they ended within one polling round on a loaded machine); the last variant diverges
    methods = ["joint", {"name": "ogm_ge", "set": {"optim.epochs": 120}}, {"name": "joint", "set": {"optim.lr": 1.0e6}}]
    grid = grid_file(tmp_path, methods, seeds=2, epochs=15)
    results = tmp_path / "results"
    args = ["sweep", grid, "--data-dir", str(data_dir), "--results-dir", str(results), "--executor", "process",
            "--max-parallel", "2", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "mmbench.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    complete: set[str] = set()
    reported: set[str] = set()
    saw_running = False
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "sweep too slow to reach the kill point"
            # report during a running sweep: complete runs only, nothing skipped as damaged
            rep = build_report(results) if results.exists() else None
            now = _read_complete_runs(results)
            assert complete <= now
            if rep is not None:
                assert complete <= set(rep.runs.get("run_id", [])) <= now
                assert not [w for w in rep.warnings if "skipped" in w or "ignored" in w], rep.warnings
                reported |= {s for s, n in rep.statuses.items() if n}
            complete = now
            saw_running |= status_counts(results)["running"] > 0
            partial = [p for p in (results / "runs").glob("*/checkpoint.pt")
                       if not (p.parent / "summary.json").exists()] if results.exists() else []
            if len(complete) >= 2 and partial:
                break
            time.sleep(0.05)
        workers = {(RunFolder(p.parent).read_status() or {}).get("pid") for p in partial}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert saw_running and "running" in reported  # report counts the runs in progress
    # the pool's workers die with the sweep: nothing goes on writing behind the resumed sweep
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers if pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers if pid)
    before = {f.run_id: os.stat(f.path / "summary.json") for f in run_folders(results)}
    interrupted = [RunFolder(p.parent) for p in partial]
    deadline = time.monotonic() + 15  # a killed worker's lock goes when the kernel has torn the process down
    while not all(f.status == "interrupted" for f in interrupted) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(f.status == "interrupted" for f in interrupted)
    resumable = {f.run_id: json.loads(json.dumps(from_file(f.path / "checkpoint.pt")["epoch"])) for f in interrupted}

    code, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert f"{len(before)} before" in err and "2 diverged" in err

    runs = sorted((results / "runs").iterdir())
    assert len(runs) == 6  # 3 variants x 2 seeds, no duplicate folder
    assert not stray_files(results)
    diverged = [RunFolder(p) for p in runs if not (p / "summary.json").exists()]
    assert len(diverged) == 2 and all(f.read_status()["status"] == "diverged" and f.read_status()["epoch"] == 0
                                      for f in diverged)
    done = run_folders(results)
    assert len(done) == 4 and _read_complete_runs(results) == {f.run_id for f in done}
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # the pool splits the cores between its 2 workers
    for folder in done:
        assert {p.name for p in folder.path.iterdir()} == RUN_FILES  # no checkpoint, status or temporary file left
        assert json.loads((folder.path / "env.json").read_text())["threads"] == threads
    for run_id, stat in before.items():  # complete before the kill: not trained again, not rewritten
        after = os.stat(results / "runs" / run_id / "summary.json")
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    for run_id, epoch in resumable.items():  # stopped mid-way: continued from its checkpoint, not restarted
        assert RunFolder(results / "runs" / run_id).read_summary()["resumed_from_epoch"] == epoch + 1

    # a run continued after the kill ends exactly where an uninterrupted run (same seed, same threads) ends
    killed = RunFolder(results / "runs" / next(iter(resumable)))
    cfg = killed.read_config()
    cfg.output.results_dir = str(tmp_path / "uninterrupted")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reference, _ = train_run(cfg)
    finally:
        torch.set_num_threads(previous)
    assert reference.run_id == killed.run_id and reference.read_summary()["resumed_from_epoch"] is None
    assert (reference.path / "metrics.csv").read_bytes() == (killed.path / "metrics.csv").read_bytes()
    assert reference.read_summary()["test"] == killed.read_summary()["test"]
    a, b = reference.load_state_dict(), killed.load_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- results directory not writable / disk full ---------------------------------------------


def test_results_dir_that_is_a_file_is_a_clear_error(tmp_path, data_dir, monkeypatch, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    code, err = run_cli(monkeypatch, capsys, "sweep", grid_file(tmp_path, ["joint"]), "--data-dir", str(data_dir),
                    "--results-dir", str(blocker))
    one_line_error(code, err, "output.results_dir", str(blocker), "must be a folder")
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only folders anyway")
def test_read_only_results_dir_is_a_clear_error(tmp_path, data_dir, monkeypatch, capsys):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        code, err = run_cli(monkeypatch, capsys, "sweep", grid_file(tmp_path, ["joint"]), "--data-dir", str(data_dir),
                        "--results-dir", str(results))
        one_line_error(code, err, "cannot write", "Permission denied")
    finally:
        results.chmod(0o755)


def _fail_after(monkeypatch, calls: int, error: OSError, target: str = "fsync") -> None:
    """The results module's ``os.fsync`` (or ``tempfile.mkstemp``) fails after ``calls`` successful calls."""
    import mmbench.results as results_module

    module = results_module.os if target == "fsync" else results_module.tempfile
    real = getattr(module, target)
    count = {"n": 0}

    def failing(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(module, target, failing)


@pytest.mark.parametrize("target, error, message", [
    ("fsync", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    ("mkstemp", PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
], ids=["disk-full", "not-writable"])
def test_write_failure_mid_sweep_stops_it_with_earlier_results_intact(target, error, message, tmp_path, data_dir,
                                                                       monkeypatch, capsys):
    results = tmp_path / "results"
    common = ["--data-dir", str(data_dir), "--results-dir", str(results), "--quiet"]
    code, err = run_cli(monkeypatch, capsys, "sweep", grid_file(tmp_path, ["joint"], name="first.yaml"), *common)
    assert code == 0, err
    earlier = snapshot(results)
    # the second sweep: its manifest and the first run's config.yaml and env.json are written, then writes fail
    _fail_after(monkeypatch, 3, error, target)
    code, err = run_cli(monkeypatch, capsys, "sweep", grid_file(tmp_path, ["joint_uni", "ogm_ge"], name="second.yaml"),
                    *common)
    one_line_error(code, err, "cannot write", message, "results written before are intact")
    monkeypatch.undo()
    after = snapshot(results)
    assert {k: v for k, v in after.items() if k in earlier} == earlier  # byte for byte
    assert not stray_files(results)
    assert len(run_folders(results)) == 1


def test_disk_full_during_train_is_a_clear_error(make_cfg, data_dir, tmp_path, monkeypatch, capsys):
    _fail_after(monkeypatch, 0, OSError(errno.ENOSPC, "No space left on device"))
    code, err = run_cli(monkeypatch, capsys, "train", "--dataset", "tiny", "--method", "joint", "--epochs", "1",
                    "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results"), "--quiet")
    one_line_error(code, err, "No space left on device", "free some space")


# -- tampering: checksum errors, never silent use ---------------------------------------------


def _flip_byte(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _cfg_args(data_dir, results, epochs=3):
    return ["--dataset", "tiny", "--method", "joint", "--epochs", str(epochs), "--data-dir", str(data_dir),
            "--results-dir", str(results), "--quiet", *sum((["--set", f"{k}={v}"] for k, v in SMALL.items()), [])]


def test_tampered_model_is_a_checksum_error(make_cfg, monkeypatch, capsys):
    folder, _ = train_run(make_cfg("joint", sets=["output.probe=false"]))
    _flip_byte(folder.path / "model.pt")
    with pytest.raises(MMBenchError, match="checksum mismatch for .*model.pt"):
        load_trained(folder)
    code, err = run_cli(monkeypatch, capsys, "attack", str(folder.path), "--noise", "gaussian")
    one_line_error(code, err, "checksum mismatch", "model.pt", "train the run again with --force")


class _Stop(Exception):
    pass


def _interrupted_run(make_cfg, epochs=3):
    cfg = make_cfg("joint", epochs=epochs, sets=[f"{k}={v}" for k, v in SMALL.items()])

    def stop(epoch, *_):
        if epoch == 0:
            raise _Stop

    with pytest.raises(_Stop):
        train_run(cfg, progress=stop)
    return cfg, RunFolder.for_config(cfg)


def test_tampered_checkpoint_is_a_checksum_error(make_cfg, data_dir, tmp_path, monkeypatch, capsys):
    cfg, folder = _interrupted_run(make_cfg)
    _flip_byte(folder.path / "checkpoint.pt", offset=len((folder.path / "checkpoint.pt").read_bytes()) // 2)
    code, err = run_cli(monkeypatch, capsys, "train", *_cfg_args(data_dir, cfg.output.results_dir), "--resume")
    one_line_error(code, err, "checksum mismatch for checkpoint", "delete")
    assert folder.read_status()["status"] == "failed" and "checksum mismatch" in folder.read_status()["error"]
    assert not folder.complete


def test_tampered_checkpoint_in_a_sweep_fails_that_run_only(make_cfg, data_dir, tmp_path, monkeypatch, capsys):
    cfg, folder = _interrupted_run(make_cfg)
    _flip_byte(folder.path / "checkpoint.pt", offset=len((folder.path / "checkpoint.pt").read_bytes()) // 2)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"datasets": ["tiny"], "methods": ["joint", "joint_uni"],
                                    "set": {**SMALL, "optim.epochs": 3}}))
    code, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--data-dir", str(data_dir), "--results-dir",
                    cfg.output.results_dir, "--quiet")
    assert code == 1 and "1 done (1 now, 0 before), 1 failed" in err
    assert "checksum mismatch for checkpoint" in folder.read_status()["error"]


def test_tampered_prepared_data_stops_the_sweep_before_any_run(tmp_path, monkeypatch, capsys):
    from tests.conftest import TINY

    data = tmp_path / "data"
    prepare("synthetic", data_dir=data, name="tiny", options=TINY)
    _flip_byte(data / "tiny" / "val" / "image.npy")
    results = tmp_path / "results"
    code, err = run_cli(monkeypatch, capsys, "sweep", grid_file(tmp_path, ["joint"]), "--data-dir", str(data),
                    "--results-dir", str(results))
    one_line_error(code, err, "checksum mismatch", "val/image.npy", "prepare the dataset again with --force")
    assert not (results / "runs").exists()


# -- no code execution from loaded files ------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_model_file_is_refused_even_with_a_matching_checksum(make_cfg, tmp_path):
    folder, _ = train_run(make_cfg("joint", sets=["output.probe=false"]))
    marker = tmp_path / "pwned"
    torch.save({"weight": _Payload(marker)}, folder.path / "model.pt")
    summary = folder.read_summary()
    summary["sha256"]["model.pt"] = file_sha256(folder.path / "model.pt")
    folder.write_summary(summary)
    with pytest.raises(MMBenchError, match="cannot be loaded safely"):
        load_trained(folder)
    assert not marker.exists()


def test_malicious_checkpoint_is_refused(make_cfg, tmp_path):
    import hashlib

    _, folder = _interrupted_run(make_cfg)
    marker = tmp_path / "pwned"
    path = folder.path / "checkpoint.pt"
    torch.save(_Payload(marker), path)  # a plain pickle instead of a checkpoint
    with pytest.raises(MMBenchError, match="not an mmbench checkpoint"):
        from_file(path)
    buf = io.BytesIO()
    torch.save({"model": _Payload(marker)}, buf)  # a payload with a valid checksum
    payload = buf.getvalue()
    path.write_bytes(b"%s %d %s\n" % (MAGIC, FORMAT, hashlib.sha256(payload).hexdigest().encode()) + payload)
    with pytest.raises(MMBenchError, match="cannot be loaded safely"):
        from_file(path)
    assert not marker.exists()


def test_yaml_files_cannot_run_code(make_cfg, data_dir, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    evil = f"!!python/object/apply:os.system ['touch {marker}']"
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"datasets: [tiny]\nmethods: [joint]\nseeds: {evil}\n")
    code, err = run_cli(monkeypatch, capsys, "sweep", str(grid), "--data-dir", str(data_dir))
    one_line_error(code, err, "is not valid YAML")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"optim:\n  epochs: {evil}\n")
    code, err = run_cli(monkeypatch, capsys, "train", "--dataset", "tiny", "--method", "joint", "--recipe", str(recipe),
                    "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results"))
    one_line_error(code, err, "recipe", "is not valid YAML")
    folder, _ = train_run(make_cfg("joint", sets=["output.probe=false"]))
    (folder.path / "config.yaml").write_text(f"seed: {evil}\n")
    with pytest.raises(MMBenchError, match="not valid YAML"):
        folder.read_config()
    assert not marker.exists()
