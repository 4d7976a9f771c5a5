"""Per-epoch checkpoints and ``train --resume``: a run stopped after an epoch and resumed ends
exactly where the uninterrupted run with the same seed ends, with the methods' internal state saved
by the generic ``Method.state_dict`` (every registered method: ``resumes_identically`` in
:mod:`mmbench.testing`)."""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmbench.checkpoint import NotCheckpointable
from mmbench.errors import MMBenchError
from mmbench.methods.base import Method
from mmbench.registry import METHODS
from mmbench.results import RunFolder
from mmbench.run import train_run
from mmbench.testing import assert_same_run

FAST = ["output.probe=false", "model.dropout=0.2", "optim.schedule=step", "optim.step_size=1", "optim.gamma=0.5"]


class Stop(Exception):
    """Stands in for a crash after an epoch's checkpoint was written."""


def stop_after(epoch: int):
    def progress(e, *_):
        if e == epoch:
            raise Stop

    return progress


def test_resume_without_checkpoint_trains_from_the_start(make_cfg):
    folder, trained = train_run(make_cfg("joint", sets=FAST), resume=True)
    assert trained and folder.read_summary()["resumed_from_epoch"] is None


def test_resume_after_the_last_epoch_only_evaluates(make_cfg, tmp_path):
    full, _ = train_run(make_cfg("joint", epochs=2, sets=FAST))
    cfg = make_cfg("joint", epochs=2, sets=FAST)
    cfg.output.results_dir = str(tmp_path / "late")
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(1))
    resumed, _ = train_run(cfg, resume=True)
    assert resumed.read_summary()["resumed_from_epoch"] == 2
    assert_same_run(full, resumed)


def test_without_resume_a_partial_run_restarts(make_cfg):
    cfg = make_cfg("joint", epochs=3, sets=FAST)
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(0))
    folder, _ = train_run(cfg)
    assert folder.read_summary()["resumed_from_epoch"] is None


# -- the generic Method.state_dict ---------------------------------------------------------


class Stateful(Method):
    """Internal state of every plain kind, changed every epoch."""

    def __init__(self, params=None):
        super().__init__(params)
        self.count = 0
        self.scale = 1.0
        self.name = "start"
        self.nothing = None
        self.history: list[float] = []
        self.per_class = defaultdict(float)
        self.pair = (1, 2.5)
        self.tensor = torch.zeros(3)
        self.array = np.zeros(2, dtype=np.float32)
        self.np_scalar = np.float32(0.5)
        self.aux = nn.Linear(2, 2)
        self.gen = torch.Generator().manual_seed(7)

    def loss(self, model, batch, out, state):
        noise = torch.rand((), generator=self.gen).item() * 1e-3
        return F.cross_entropy(out.logits, batch.labels) * self.scale + noise, {"scale": self.scale}

    def on_epoch_end(self, state):
        self.count += 1
        self.scale *= 0.9
        self.name = f"epoch{state.epoch}"
        self.history.append(self.scale)
        self.per_class[str(state.epoch)] += 1.0
        self.tensor += 1
        self.array += 1
        self.np_scalar = np.float32(self.np_scalar * 2)
        with torch.no_grad():
            self.aux.weight.add_(1.0)
        state.epoch_logs["count"] = self.count


def test_generic_state_dict_saves_plain_attributes_and_loads_weights_only():
    a = Stateful()
    for epoch in range(2):
        a.on_epoch_end(type("S", (), {"epoch": epoch, "epoch_logs": {}})())
    torch.rand((), generator=a.gen)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    b = Stateful()
    b.load_state_dict(loaded)
    assert (b.count, b.scale, b.name, b.nothing, b.history, b.pair) == (a.count, a.scale, a.name, None, a.history, a.pair)
    assert isinstance(b.per_class, defaultdict) and b.per_class == a.per_class
    assert torch.equal(b.tensor, a.tensor) and np.array_equal(b.array, a.array) and b.array.dtype == np.float32
    assert type(b.np_scalar) is np.float32 and b.np_scalar == a.np_scalar
    assert torch.equal(b.aux.weight, a.aux.weight)
    assert torch.rand((), generator=b.gen) == torch.rand((), generator=a.gen)
    assert "params" not in a.state_dict()


def test_method_with_internal_state_resumes_identically(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS._entries, "stateful_test", None)
    METHODS._entries.pop("stateful_test")
    METHODS.register("stateful_test")(Stateful)
    try:
        full, _ = train_run(make_cfg("stateful_test", epochs=4, sets=FAST))
        cfg = make_cfg("stateful_test", epochs=4, sets=FAST)
        cfg.output.results_dir = str(tmp_path / "resumed")
        with pytest.raises(Stop):
            train_run(cfg, progress=stop_after(1))
        resumed, _ = train_run(cfg, resume=True)
        assert_same_run(full, resumed)
        assert list(resumed.read_metrics()["count"]) == [1, 2, 3, 4]
    finally:
        METHODS._entries.pop("stateful_test", None)


class Opaque(Method):
    """Keeps an object that cannot be stored as plain data."""

    def __init__(self, params=None):
        super().__init__(params)
        self.thing = object()

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {}


def test_unsaveable_method_state_trains_without_checkpoints(make_cfg, caplog):
    with pytest.raises(NotCheckpointable, match=r"Opaque.thing is a builtins.object"):
        Opaque().state_dict()
    METHODS.register("opaque_test")(Opaque)
    try:
        cfg = make_cfg("opaque_test", epochs=3, sets=FAST)
        with pytest.raises(Stop):
            train_run(cfg, progress=stop_after(1))
        folder = RunFolder.for_config(cfg)
        assert not (folder.path / "checkpoint.pt").exists()
        assert "Opaque.thing" in folder.read_status()["checkpoints"]
        assert "trains without checkpoints" in caplog.text
        resumed, trained = train_run(cfg, resume=True)  # nothing to resume from: trains from the start
        assert trained and resumed.read_summary()["resumed_from_epoch"] is None
    finally:
        METHODS._entries.pop("opaque_test", None)


def test_checkpoint_of_another_run_is_refused(make_cfg, tmp_path):
    a = make_cfg("joint", epochs=3, seed=0, sets=FAST)
    b = make_cfg("joint", epochs=3, seed=1, sets=FAST)
    for cfg in (a, b):
        with pytest.raises(Stop):
            train_run(cfg, progress=stop_after(0))
    fa, fb = RunFolder.for_config(a), RunFolder.for_config(b)
    (fb.path / "checkpoint.pt").write_bytes((fa.path / "checkpoint.pt").read_bytes())
    with pytest.raises(MMBenchError, match="belongs to run"):
        train_run(b, resume=True)
    assert fb.read_status()["status"] == "failed"
