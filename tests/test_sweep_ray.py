"""The ``ray`` executor on a local Ray instance (2 CPUs): one Ray task per run with its resource
request, results in the shared results directory or returned to the driver (``--no-shared-fs``)."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from mmbench.errors import MMBenchError
from mmbench.results import RunFolder, run_folders
from mmbench.run import train_run
from mmbench.sweep import RayExecutor, expand, run_sweep
from tests.cli_helpers import run_main

ray = pytest.importorskip("ray")

SMALL = {"optim.epochs": 2, "optim.batch_size": 32, "model.hidden_dim": 16, "model.feature_dim": 8,
         "output.probe": False}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_grid(tmp_path, methods, **extra) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"datasets": ["tiny"], "methods": methods, "seeds": 1, "set": SMALL, **extra}))
    return str(path)


def test_ray_tasks_write_the_shared_results_dir(tmp_path, data_dir):
    path = write_grid(tmp_path, ["joint", "joint_uni", {"name": "joint", "set": {"optim.lr": 1.0e6}}],
                      resources={"num_cpus": 1})
    grid = expand(path, str(tmp_path / "results"), str(data_dir))
    executor = RayExecutor()
    assert executor.capacity == 2 and not executor.started  # uses the running instance, leaves it running
    report = run_sweep(grid, executor)
    assert (report.complete, report.diverged, report.failed) == (2, 1, 0)
    assert all(r.worker and not r.worker.endswith(f":{os.getpid()}") for r in report.results)  # ran in Ray workers
    done = run_folders(tmp_path / "results")
    assert len(done) == 2
    assert {json.loads((f.path / "env.json").read_text())["threads"] for f in done} == {1}  # num_cpus=1 -> 1 thread
    diverged = [RunFolder(p) for p in (tmp_path / "results" / "runs").iterdir() if not (p / "summary.json").exists()]
    assert diverged[0].read_status()["status"] == "diverged" and diverged[0].read_status()["epoch"] == 0
    assert ray.is_initialized()


def test_no_shared_fs_returns_files_to_the_driver_and_resumes_its_checkpoint(tmp_path, data_dir, make_cfg,
                                                                           monkeypatch, capsys):
    results = tmp_path / "results"
    path = write_grid(tmp_path, ["joint", "ogm_ge"], set={**SMALL, "optim.epochs": 3})
    # a partial run on the driver's disk: the worker gets its checkpoint and continues it
    grid = expand(path, str(results), str(data_dir))
    cfg = grid.runs[0].cfg()

    class Stop(Exception):
        pass

    def stop(epoch, *_):
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        train_run(cfg, progress=stop)
    code, _, err = run_main(monkeypatch, capsys, "sweep", path, "--executor", "ray", "--no-shared-fs", "--data-dir",
                            str(data_dir), "--results-dir", str(results), "--quiet")
    assert code == 0, err
    assert "2 done (2 now, 0 before)" in err and "on ray" in err
    done = {f.run_id: f for f in run_folders(results)}
    assert len(done) == 2
    for folder in done.values():
        assert {p.name for p in folder.path.iterdir()} == {"config.yaml", "env.json", "metrics.csv", "model.pt",
                                                           "gap.npz", "summary.json"}
        folder.load_state_dict()  # checksums recorded by the worker match the files the driver wrote
        assert folder.read_config().output.results_dir == str(results.resolve())
    assert done[grid.runs[0].run_id].read_summary()["resumed_from_epoch"] == 1
    assert done[grid.runs[1].run_id].read_summary()["resumed_from_epoch"] is None


def test_a_request_no_node_can_meet_is_an_error_on_an_own_instance_and_a_warning_on_a_joined_one(tmp_path,
                                                                                                 data_dir):
    fits = expand(write_grid(tmp_path, ["joint"], resources={"num_cpus": 1}), str(tmp_path / "r"), str(data_dir))
    too_big = expand(write_grid(tmp_path, ["joint", "ogm_ge"], resources={"num_cpus": 3}), str(tmp_path / "r"),
                     str(data_dir))
    executor = RayExecutor()  # joins the running 2-CPU instance: an autoscaler could add a larger node
    assert executor.check_resources(fits.runs) == []
    (warning,) = executor.check_resources(too_big.runs)
    assert "2 run(s)" in warning and "num_cpus=3" in warning and "the largest node has 2 CPUs" in warning
    executor.started = True  # as if it had started the instance itself: nothing will ever add a node
    with pytest.raises(MMBenchError, match="lower `resources` in the grid"):
        executor.check_resources(too_big.runs)
    assert ray.is_initialized()
