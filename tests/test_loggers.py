"""Experiment trackers (``output.loggers``): what each backend received, read back with its own reader,
equals the run folder's ``metrics.csv``, ``config.yaml`` and ``summary.json``. Nothing leaves the machine:
TensorBoard writes event files, MLflow a local file store, and W&B is a stand-in module that records calls."""

from __future__ import annotations

import importlib.machinery
import math
import sys
import types

import pytest

from mmbench.config import OutputConfig, domains
from mmbench.errors import MMBenchError
from mmbench.loggers import BACKENDS, check_installed, flatten
from mmbench.run import train_run

SETS = ["output.probe=false", "method.modulation_ends=1"]


def metric_columns(folder) -> dict[str, dict[int, float]]:
    """metrics.csv as {column: {epoch: value}}, without empty cells."""
    df = folder.read_metrics()
    return {c: {int(e): float(v) for e, v in zip(df["epoch"], df[c]) if not math.isnan(v)}
            for c in df.columns if c != "epoch"}


def test_backend_names_match_the_config_domain():
    assert set(BACKENDS) == set(domains(OutputConfig)["loggers"].choices)


def test_tensorboard_event_files_hold_the_metrics(make_cfg):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg("ogm_ge", sets=[*SETS, "output.loggers=[tensorboard]"])
    train_run(cfg)
    folder, _ = train_run(cfg, force=True)  # retrained: its event files replace the first training's
    assert len(list((folder.path / "tensorboard").iterdir())) == 1
    events = EventAccumulator(str(folder.path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    expected = metric_columns(folder)
    for prefix in ("val_acc", "train_acc_", "val_acc_", "coeff_", "ratio_"):  # per-modality and the method's logs
        assert any(c.startswith(prefix) for c in expected), prefix
    for column, by_epoch in expected.items():
        logged = {e.step: e.value for e in events.Scalars(column)}
        assert logged.keys() == by_epoch.keys(), column
        for epoch, value in by_epoch.items():
            assert logged[epoch] == pytest.approx(value, rel=1e-6, abs=1e-7), (column, epoch)
    summary = folder.read_summary()
    assert events.Scalars("summary/test.acc")[0].value == pytest.approx(summary["test"]["acc"], rel=1e-6)
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "name: ogm_ge" in config and "loggers:" in config


def test_mlflow_file_store_holds_metrics_params_and_summary(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the local file store (MLflow >= 3.7 asks for this)
    cfg = make_cfg("ogm_ge", sets=[*SETS, "output.loggers=[mlflow]"])
    folder, _ = train_run(cfg)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mmbench").experiment_id])
    assert run.info.run_name == folder.run_id and run.info.status == "FINISHED"
    for column, by_epoch in metric_columns(folder).items():
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, column)}
        assert logged == pytest.approx(by_epoch, rel=1e-12), column
    params = run.data.params
    config = folder.read_config()
    assert params["method.name"] == "ogm_ge" and float(params["method.alpha"]) == config.method.params["alpha"]
    assert params["optim.lr"] == str(config.optim.lr) and params["seed"] == str(config.seed)
    summary = folder.read_summary()
    assert run.data.metrics["summary.test.acc"] == pytest.approx(summary["test"]["acc"])


class FakeWandb(types.ModuleType):
    """Stands in for the ``wandb`` package: records init, log, summary and finish."""

    def __init__(self):
        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # found by importlib.util.find_spec
        self.calls = []

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        fake = self

        class Summary(dict):
            def update(self, d):
                fake.calls.append(("summary", dict(d)))

        return types.SimpleNamespace(id=kwargs["id"] or "w1", log=lambda d, step: self.calls.append(("log", step, dict(d))),
                                     summary=Summary(), finish=lambda exit_code: self.calls.append(("finish", exit_code)))


def test_wandb_receives_config_epochs_summary_and_finish(make_cfg, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    folder, _ = train_run(make_cfg("ogm_ge", sets=[*SETS, "output.loggers=[wandb]"]))
    kinds = [c[0] for c in fake.calls]
    assert kinds == ["init", "log", "log", "summary", "finish"]
    init = fake.calls[0][1]
    assert init["name"] == folder.run_id and init["config"]["method"]["name"] == "ogm_ge"
    assert init["dir"] == str(folder.path)
    for column, by_epoch in metric_columns(folder).items():
        assert {c[1]: c[2][column] for c in fake.calls if c[0] == "log" and column in c[2]} == by_epoch
    assert fake.calls[3][1]["test.acc"] == folder.read_summary()["test"]["acc"]
    assert fake.calls[4] == ("finish", 0)


def test_a_resumed_run_continues_its_tracker_runs(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from tests.test_resume import Stop, stop_after

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = make_cfg("ogm_ge", epochs=3, sets=[*SETS, "output.loggers=[mlflow,wandb]"])
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(0))
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mmbench").experiment_id])
    assert run.info.status == "FAILED" and fake.calls[-1] == ("finish", 1)
    folder, _ = train_run(cfg, resume=True)
    (run,) = client.search_runs([client.get_experiment_by_name("mmbench").experiment_id])
    assert run.info.status == "FINISHED"
    for column, by_epoch in metric_columns(folder).items():
        assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, column)} == \
            pytest.approx(by_epoch, rel=1e-12), column
    inits = [c[1] for c in fake.calls if c[0] == "init"]
    assert [(i["id"], i["resume"]) for i in inits] == [(None, None), ("w1", "must")]


def test_a_failed_run_closes_its_trackers_as_failed(make_cfg, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with pytest.raises(MMBenchError, match="diverged"):
        train_run(make_cfg("joint", sets=[*SETS[:1], "output.loggers=[wandb]", "optim.lr=1e30"]))
    assert fake.calls[-1] == ("finish", 1)


def test_missing_package_names_the_extra(make_cfg, monkeypatch, tmp_path):
    for package in ("wandb", "tensorboard"):
        monkeypatch.setitem(sys.modules, package, None)  # as if not installed: find_spec answers None
    with pytest.raises(MMBenchError, match=r"wandb needs the wandb package; pip install 'mmbench\[wandb\]'"):
        check_installed(["wandb"])
    cfg = make_cfg("joint", sets=[*SETS[:1], "output.loggers=[tensorboard]"])
    with pytest.raises(MMBenchError, match=r"pip install 'mmbench\[tensorboard\]'"):
        train_run(cfg)
    assert not (tmp_path / "results").exists()  # refused before anything was written


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [2], "e": {}}
