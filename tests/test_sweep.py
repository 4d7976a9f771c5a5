"""``mmbench sweep``: grid expansion, dry run, inline and process executors, skipping and resuming,
failures and divergence recorded as data, retries, and one clear message per bad grid or option."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch.nn.functional as F
import yaml

from mmbench.methods.base import Method
from mmbench.registry import EXECUTORS, METHODS
from mmbench.results import RunFolder, run_folders, run_statuses
from mmbench.sweep import InlineExecutor, expand, run_state, run_sweep
from tests.cli_helpers import assert_one_line_error, run_cli, status_counts

SMALL = {"optim.epochs": 2, "optim.batch_size": 32, "model.hidden_dim": 16, "model.feature_dim": 8,
         "output.probe": False}


def write_grid(tmp_path, name="grid.yaml", **grid) -> str:
    grid.setdefault("datasets", ["tiny"])
    grid.setdefault("methods", ["joint"])
    grid.setdefault("seeds", 1)
    grid["set"] = {**SMALL, **grid.get("set", {})}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return str(path)


# -- expansion ------------------------------------------------------------------------------


def test_grid_expands_to_the_cartesian_product(tmp_path, data_dir):
    path = write_grid(tmp_path, datasets=["tiny", {"name": "tiny3", "modalities": ["vector", "image"]}],
                      methods=["joint", {"name": "ogm_ge", "alpha": [0.5, 0.8], "mode": "OGM"},
                               {"name": "unimodal", "modality": ["vector", "image"]}],
                      seeds=[0, 3], grid={"optim.lr": [0.01, 0.1]})
    grid = expand(path, str(tmp_path / "results"), str(data_dir))
    assert len(grid.runs) == 2 * 5 * 2 * 2 and grid.duplicates == 0
    assert len({r.run_id for r in grid.runs}) == len(grid.runs)
    cfgs = [r.cfg() for r in grid.runs]
    assert {c.seed for c in cfgs} == {0, 3} and {c.optim.lr for c in cfgs} == {0.01, 0.1}
    ogm = [c for c in cfgs if c.method.name == "ogm_ge"]
    assert {c.method.params["alpha"] for c in ogm} == {0.5, 0.8} and {c.method.params["mode"] for c in ogm} == {"OGM"}
    assert {tuple(c.data.modalities or ()) for c in cfgs if c.data.dataset == "tiny3"} == {("vector", "image")}
    assert all(c.optim.epochs == 2 and c.model.hidden_dim == 16 for c in cfgs)
    # the run id is the one `mmbench train` gives the same config: method defaults are filled in
    assert all(r.run_id == r.cfg().run_id() for r in grid.runs)


def test_same_run_listed_twice_is_one_run(tmp_path, data_dir):
    path = write_grid(tmp_path, methods=["ogm_ge", {"name": "ogm_ge", "alpha": 0.8}])  # 0.8 is the default
    grid = expand(path, str(tmp_path / "results"), str(data_dir))
    assert len(grid.runs) == 1 and grid.duplicates == 1


def test_command_line_set_overrides_the_grid(tmp_path, data_dir):
    grid = expand(write_grid(tmp_path), str(tmp_path / "r"), str(data_dir), sets=["optim.epochs=1"])
    assert grid.runs[0].cfg().optim.epochs == 1


def test_the_all_methods_benchmark_grid_lists_every_registered_method():
    from pathlib import Path

    from mmbench.sweep import load_grid

    grid = load_grid(Path(__file__).parent.parent / "benchmarks" / "mfeat_all_methods.yaml")
    listed = {m if isinstance(m, str) else m["name"] for m in grid["methods"]}
    builtin = {e.name for e in METHODS.entries() if e.origin == "builtin" or e.origin.startswith("mmbench.")}
    assert listed == builtin and grid["seeds"] == 3


def test_executors_are_registered_lazily():
    assert EXECUTORS.names() == ["inline", "process", "ray"]
    assert "process pool" in EXECUTORS.describe("process") or "pool" in EXECUTORS.describe("process")


def _thread_pools() -> tuple[int, list[tuple[str, int]]]:
    import sklearn.linear_model  # noqa: F401 - loads scipy's BLAS as a probe does
    import torch
    from threadpoolctl import threadpool_info

    return torch.get_num_threads(), [(p["filepath"], p["num_threads"]) for p in threadpool_info()]


def test_process_workers_limit_every_thread_pool():
    """Two workers on the cores: torch and every BLAS/OpenMP pool (numpy's OpenBLAS is loaded before the
    worker's initializer runs) get their share, so the workers do not oversubscribe the CPU."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from mmbench.sweep.worker import _worker_init

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                             initargs=(1,)) as pool:
        torch_threads, pools = pool.submit(_thread_pools).result(timeout=120)
    assert torch_threads == 1
    assert pools and all(n == 1 for _, n in pools), pools


def test_a_killed_process_worker_breaks_only_its_run_and_cancel_kills_running_workers(tmp_path, data_dir):
    """A worker killed mid-run (kill -9, out of memory) fails the runs in flight; the next run goes to a
    fresh pool. Closing with cancel kills the workers still running instead of waiting for their runs."""
    import time
    from concurrent.futures.process import BrokenProcessPool

    from mmbench.sweep import ProcessExecutor, Task

    grid = expand(write_grid(tmp_path, seeds=3, set={"optim.epochs": 2000}), str(tmp_path / "r"), str(data_dir))
    quick = expand(write_grid(tmp_path, "quick.yaml"), str(tmp_path / "r"), str(data_dir))
    ex = ProcessExecutor(max_parallel=1)
    try:
        before = {p.pid for p in ex.context.active_children()}
        lost = ex.submit(ex.prepare(Task(grid.runs[0])))
        for p in ex.context.active_children():
            if p.pid not in before:
                p.kill()
        with pytest.raises(BrokenProcessPool):
            lost.result(timeout=300)
        assert ex.submit(ex.prepare(Task(quick.runs[0]))).result(timeout=300).status == "complete"
        ex.submit(ex.prepare(Task(grid.runs[1])))
        started = grid.runs[1].folder().path / "config.yaml"
        deadline = time.monotonic() + 300
        while not started.exists():
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        workers = [p for p in ex.context.active_children() if p.pid not in before]
        assert workers
    finally:
        ex.close(cancel=True)
    deadline = time.monotonic() + 30
    while any(p.is_alive() for p in workers):
        assert time.monotonic() < deadline, "a cancelled worker goes on running"
        time.sleep(0.2)


# -- running inline ---------------------------------------------------------------------------


def test_dry_run_lists_runs_and_how_many_are_done(tmp_path, data_dir, monkeypatch, capsys):
    path = write_grid(tmp_path, methods=["joint", "joint_uni"], seeds=2)
    args = [path, "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results")]
    code, err = run_cli(monkeypatch, capsys, "sweep", *args, "--dry-run")
    assert code == 0 and "4 runs: 4 pending; 4 to run" in err
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
    grid = expand(path, str(tmp_path / "results"), str(data_dir))
    run_sweep(grid.__class__(grid.path, grid.runs[:3]), InlineExecutor())
    code, err = run_cli(monkeypatch, capsys, "sweep", *args, "--dry-run")
    assert code == 0 and "4 runs: 3 done, 1 pending; 1 to run" in err


def test_sweep_runs_everything_then_skips_it(tmp_path, data_dir, monkeypatch, capsys):
    path = write_grid(tmp_path, methods=["joint", "ogm_ge"], seeds=2,
                      attack=[{"noise": ["gaussian"], "levels": [0, 1], "seeds": 2}])
    results = tmp_path / "results"
    args = [path, "--data-dir", str(data_dir), "--results-dir", str(results), "--quiet"]
    code, err = run_cli(monkeypatch, capsys, "sweep", *args)
    assert code == 0, err
    assert "4 done (4 now, 0 before), 0 failed, 0 diverged" in err
    folders = run_folders(results)
    assert len(folders) == 4
    for f in folders:
        assert {p.name for p in f.path.iterdir()} == {"config.yaml", "env.json", "metrics.csv", "model.pt", "gap.npz",
                                                      "summary.json", "attack.csv"}
        assert len(f.read_attack()) == 4
    stamps = {f.run_id: (f.path / "summary.json").stat().st_mtime_ns for f in folders}
    code, err = run_cli(monkeypatch, capsys, "sweep", *args)
    assert code == 0 and "4 done (0 now, 4 before)" in err
    assert stamps == {f.run_id: (f.path / "summary.json").stat().st_mtime_ns for f in run_folders(results)}
    manifest = next((results / "sweeps").glob("grid-*.json"))
    assert sorted(json.loads(manifest.read_text())["run_ids"]) == sorted(stamps)


def test_sweep_attacks_a_complete_run_whose_attack_rows_are_missing(tmp_path, data_dir):
    path = write_grid(tmp_path, attack=[{"noise": "gaussian", "levels": [0.5], "seeds": 1}])
    grid = expand(path, str(tmp_path / "results"), str(data_dir))
    run_sweep(grid, InlineExecutor())
    folder = grid.runs[0].folder()
    (folder.path / "attack.csv").unlink()  # e.g. killed between summary.json and attack.csv
    report = run_sweep(grid, InlineExecutor())
    assert report.complete == 1 and report.results[0].status == "skipped"  # not trained again
    assert len(folder.read_attack()) == 1


def test_sweep_runs_a_registered_attack_protocol_once(tmp_path, data_dir):
    path = write_grid(tmp_path, attack=[{"protocol": "multibench", "levels": [0, 0.5], "seeds": 2}])
    grid = expand(path, str(tmp_path / "results"), str(data_dir))
    run_sweep(grid, InlineExecutor())
    folder = grid.runs[0].folder()
    rows = folder.read_attack()
    assert set(rows["protocol"]) == {"multibench"} and set(rows["attack_seed"]) == {0, 1}
    assert set(rows["level"]) == {0.0, 0.5}
    stamp = (folder.path / "attack.csv").stat().st_mtime_ns
    run_sweep(grid, InlineExecutor())  # done: not attacked again
    assert (folder.path / "attack.csv").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("plan", [
    {"protocol": "mine.yaml"},  # a protocol file: the rows carry the protocol's own name
    {"noise": "gaussian", "levels": [0.5], "protocol": "lab@v2:x"},  # an ad hoc label, kept whole
])
def test_a_finished_attack_plan_is_not_run_again(tmp_path, data_dir, plan):
    (tmp_path / "mine.yaml").write_text("name: mine\nversion: 1\nlevels: [0, 1]\nconditions: [{attack: gaussian}]\n")
    if plan.get("protocol") == "mine.yaml":
        plan = {"protocol": str(tmp_path / "mine.yaml")}
    grid = expand(write_grid(tmp_path, attack=[{**plan, "seeds": 1}]), str(tmp_path / "results"), str(data_dir))
    run_sweep(grid, InlineExecutor())
    folder = grid.runs[0].folder()
    stamp = (folder.path / "attack.csv").stat().st_mtime_ns
    assert run_state(grid.runs[0]) == "done"
    run_sweep(grid, InlineExecutor())
    assert (folder.path / "attack.csv").stat().st_mtime_ns == stamp


class FailsAtEpoch1(Method):
    """Raises a plain error in the second epoch."""

    def loss(self, model, batch, out, state):
        if state.epoch == 1:
            raise RuntimeError("boom in epoch 1")
        return F.cross_entropy(out.logits, batch.labels), {}


class InfAtEpoch1(Method):
    """The loss becomes infinite in the second epoch."""

    def loss(self, model, batch, out, state):
        loss = F.cross_entropy(out.logits, batch.labels)
        return (loss * float("inf") if state.epoch == 1 else loss), {}


class NanAtEpoch2(Method):
    """The loss becomes NaN in the third epoch (0 * inf)."""

    def loss(self, model, batch, out, state):
        loss = F.cross_entropy(out.logits, batch.labels)
        return (loss + 0.0 * float("inf") if state.epoch == 2 else loss), {}


FAULTY = {"fails_test": FailsAtEpoch1, "inf_test": InfAtEpoch1, "nan_test": NanAtEpoch2}


@pytest.fixture
def faulty_methods():
    for name, cls in FAULTY.items():
        METHODS.register(name)(cls)
    yield
    for name in FAULTY:
        METHODS._entries.pop(name, None)


def test_failures_and_divergence_are_data_and_the_sweep_goes_on(tmp_path, data_dir, monkeypatch, capsys,
                                                               faulty_methods):
    path = write_grid(tmp_path, methods=["fails_test", "inf_test", "nan_test", "joint"], set={"optim.epochs": 3})
    results = tmp_path / "results"
    args = [path, "--data-dir", str(data_dir), "--results-dir", str(results), "--quiet", "--retries", "2"]
    code, err = run_cli(monkeypatch, capsys, "sweep", *args)
    assert code == 1, err  # a failed run: exit 1 (diverged alone is a result, not a failure)
    assert "1 done (1 now, 0 before), 1 failed, 2 diverged, 2 retries" in err
    by_method = {RunFolder(p).read_config().method.name: RunFolder(p) for p in (results / "runs").iterdir()}
    failed, ok = by_method["fails_test"], by_method["joint"]
    assert ok.complete
    record = failed.read_status()
    assert record["status"] == "failed" and record["attempt"] == 3 and record["epoch"] == 1
    assert "RuntimeError: boom in epoch 1" in record["error"] and "Traceback" in record["traceback"]
    for name, epoch, loss in (("inf_test", 1, "loss=inf"), ("nan_test", 2, "loss=nan")):
        record = by_method[name].read_status()
        assert record["status"] == "diverged" and record["epoch"] == epoch and loss in record["error"], record
        assert f"training diverged at epoch {epoch}" in record["error"]
        assert "attempt" not in record  # diverged runs are not retried
        assert not by_method[name].complete and not (by_method[name].path / "model.pt").exists()
    assert not failed.complete

    # report reads only complete runs; the others are counted by status
    assert [f.run_id for f in run_folders(results)] == [ok.run_id]
    assert status_counts(results) == {"complete": 1, "failed": 1, "diverged": 2, "running": 0, "interrupted": 0,
                                      "altered": 0}
    table = run_statuses(results)
    assert isinstance(table, pd.DataFrame)
    assert dict(zip(table["method"], table["status"])) == {"fails_test": "failed", "inf_test": "diverged",
                                                           "nan_test": "diverged"}
    assert dict(zip(table["method"], table["epoch"])) == {"fails_test": 1, "inf_test": 1, "nan_test": 2}

    # `mmbench report` shows the failed and diverged counts beside the leaderboard of the complete run
    code, err = run_cli(monkeypatch, capsys, "report", str(results), "--no-plots", "--format", "md")
    assert code == 0, err
    assert "3 runs are not in the tables: 1 failed, 2 diverged" in " ".join(err.split())
    markdown = (results / "leaderboard.md").read_text()
    assert "3 runs are not in the tables: 1 failed, 2 diverged" in markdown and "| joint" in markdown
    code, err = run_cli(monkeypatch, capsys, "report", str(results), "--method", "nan", "--no-plots")
    assert_one_line_error(code, err, "no complete runs", "(1 diverged; see each run's status.json)")

    # again: the diverged runs are kept (the same seed diverges again), the failed one is tried again
    code, err = run_cli(monkeypatch, capsys, "sweep", *args[:-2])
    assert code == 1 and "0 now, 1 before), 1 failed, 2 diverged" in err
    assert failed.read_status()["attempt"] == 1


# -- one clear message per mistake -------------------------------------------------------------


BAD_GRIDS = [
    ("datasets: [tiny\nmethods: [joint]\n", "is not valid YAML at line"),
    ("- tiny\n- joint\n", "must be a mapping with datasets, methods and seeds"),
    ("datasets: [tiny]\nmethods: [joint]\nseed: 3\n", "unknown grid key 'seed'; did you mean seeds"),
    ("datasets: [tiny]\nmethods: []\n", "'methods' is missing or empty"),
    ("datasets: [tiny]\nmethods: [joint]\nseeds: -1\n", "seeds must be at least 1"),
    ("datasets: [tiny]\nmethods: [jiont]\n", "unknown method 'jiont'; did you mean joint"),
    ("datasets: [tinny]\nmethods: [joint]\n", "unknown dataset 'tinny'; did you mean tiny"),
    ("datasets: [{name: tiny, modalities: [vector, audio]}]\nmethods: [joint]\n", "unknown modality of 'tiny' 'audio'"),
    ("datasets: [tiny]\nmethods: [{name: ogm_ge, alfa: [0.1]}]\n", "unknown parameter 'method.alfa'"),
    ("datasets: [tiny]\nmethods: [{name: ogm_ge, mode: [OGM, XX]}]\n", "mode must be one of"),
    ("datasets: [tiny]\nmethods: [unimodal]\n", "unimodal needs the modality"),
    ("datasets: [tiny]\nmethods: [joint]\nset: {optim.lrr: 0.1}\n", "unknown config key 'optim.lrr'"),
    ("datasets: [tiny]\nmethods: [joint]\nset: {seed: 3}\n", "seed is chosen by 'seeds'"),
    ("datasets: [tiny]\nmethods: [joint]\nset: {method.alpha: 3}\n", "method.alpha is chosen by 'methods'"),
    ("datasets: [tiny]\nmethods: [joint]\nset: {output.results_dir: x}\n", "set by the sweep's --results-dir"),
    ("datasets: [tiny]\nmethods: [joint]\ngrid: {optim.lr: 0.1}\n", "grid.optim.lr must be a non-empty list"),
    ("datasets: [tiny]\nmethods: [joint]\nattack: [{noise: gausian}]\n", "unknown attack 'gausian'"),
    ("datasets: [tiny]\nmethods: [joint]\nattack: [{protocol: qfm}]\n", "unknown protocol 'qfm'"),
    ("datasets: [tiny]\nmethods: [joint]\nattack: [{levels: [1]}]\n", "name the noise to apply"),
    ("datasets: [tiny]\nmethods: [joint]\nresources: {num_gpus: -1}\n", "resources.num_gpus must be a positive"),
    ("datasets: [tiny]\nmethods: [joint]\nrecipe: nowhere.yaml\n", "recipe"),
]


@pytest.mark.parametrize("text, message", BAD_GRIDS, ids=[m[:30] for _, m in BAD_GRIDS])
def test_bad_grid_is_one_clear_message(text, message, tmp_path, data_dir, monkeypatch, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err = run_cli(monkeypatch, capsys, "sweep", str(path), "--data-dir", str(data_dir),
                          "--results-dir", str(tmp_path / "results"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "results" / "runs").exists()


def test_missing_grid_file(tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "sweep", str(tmp_path / "none.yaml"))
    assert_one_line_error(code, err, "grid file", "not found")


CONFLICTS = [
    (["--executor", "dask"], "unknown executor 'dask'"),
    (["--executor", "inline", "--max-parallel", "4"], "use --executor process for --max-parallel"),
    (["--executor", "process", "--max-parallel", "0"], "'--max-parallel': Input should be greater than or equal to 1"),
    (["--executor", "process", "--address", "auto"], "--address is for --executor ray"),
    (["--no-shared-fs"], "--no-shared-fs is for --executor ray"),
    (["--retries", "-1"], "'--retries': Input should be greater than or equal to 0"),
    (["--set", "seed=4"], "seed is chosen by 'seeds'"),
]


@pytest.mark.parametrize("options, message", CONFLICTS, ids=[m[:30] for _, m in CONFLICTS])
def test_conflicting_options_are_one_clear_message(options, message, tmp_path, data_dir, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "sweep", write_grid(tmp_path), "--data-dir", str(data_dir),
                          "--results-dir", str(tmp_path / "results"), *options)
    assert_one_line_error(code, err, message)
