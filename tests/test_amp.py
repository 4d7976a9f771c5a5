"""Mixed precision (``optim.amp``) and the ``deterministic`` flag.

The fp16 path is checked with a stub scaler whose factor (1024, a power of two) scales and unscales
exactly: a gradient-reading method must then see bit for bit the gradients of a full-precision step,
and the order must be backward -> unscale -> after_backward -> step."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench import training
from mmbench.config import OptimConfig, resolve
from mmbench.errors import MMBenchError
from mmbench.methods.joint import Joint
from mmbench.run import train_run
from mmbench.training import Trainer
from tests.conftest import tiny_method

FAST = ["output.probe=false"]


class StubScaler:
    """Multiplies the loss by ``factor`` and records every call in ``events``."""

    factor = 1024.0

    def __init__(self, events: list[str]):
        self.events = events

    def scale(self, loss):
        scaled = loss * self.factor
        scaled.register_hook(lambda g: self.events.append("backward"))
        return scaled

    def unscale_(self, optimizer):
        self.events.append("unscale")
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(self.factor)

    def step(self, optimizer):
        self.events.append("step")
        optimizer.step()

    def update(self):
        self.events.append("update")

    def state_dict(self):
        return {"factor": self.factor}


def one_step(data_dir, amp: str, events: list[str]):
    """One OGM-GE step; returns (gradients seen by after_backward, parameters after the step)."""
    method, model, batch, _ = tiny_method("ogm_ge", data_dir, n=32)
    seen = {}
    original = method.after_backward

    def after_backward(model, batch, out, state):
        events.append("after_backward")
        seen.update({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        return original(model, batch, out, state)

    method.after_backward = after_backward
    trainer = Trainer(method, model, OptimConfig(amp=amp, batch_size=32), torch.device("cpu"), seed=0)
    trainer.train_step(batch)
    return seen, {k: p.detach().clone() for k, p in model.named_parameters()}


def test_fp16_gradients_are_unscaled_before_after_backward(data_dir, monkeypatch):
    plain_events: list[str] = []
    plain_grads, plain_params = one_step(data_dir, "none", plain_events)
    events: list[str] = []
    monkeypatch.setattr(training, "build_scaler", lambda device: StubScaler(events))
    monkeypatch.setitem(training.AMP_DTYPES, "fp16", None)  # the scaler alone: forward stays in float32
    grads, params = one_step(data_dir, "fp16", events)
    assert events == ["backward", "unscale", "after_backward", "step", "update"]
    assert plain_events == ["after_backward"]
    assert grads.keys() == plain_grads.keys() and len(grads) > 4
    for k in grads:
        torch.testing.assert_close(grads[k], plain_grads[k], rtol=0, atol=0, msg=k)
    for k in params:  # OGM-GE's modulation and the optimizer step acted on true-size gradients
        torch.testing.assert_close(params[k], plain_params[k], rtol=0, atol=0, msg=k)


def test_scaled_gradients_would_be_seen_without_the_unscale(data_dir, monkeypatch):
    """The check above can fail: a scaler that skips unscaling hands after_backward 1024x gradients."""
    plain_grads, _ = one_step(data_dir, "none", [])
    events: list[str] = []
    lazy = StubScaler(events)
    lazy.unscale_ = lambda optimizer: events.append("unscale")
    monkeypatch.setattr(training, "build_scaler", lambda device: lazy)
    monkeypatch.setitem(training.AMP_DTYPES, "fp16", None)
    grads, _ = one_step(data_dir, "fp16", events)
    k = next(iter(grads))
    torch.testing.assert_close(grads[k], plain_grads[k] * StubScaler.factor)


def test_bf16_trains_under_autocast_and_is_recorded(make_cfg, monkeypatch):
    dtypes = set()
    loss = Joint.loss

    def recording(self, model, batch, out, state):
        dtypes.add(out.logits.dtype)
        return loss(self, model, batch, out, state)

    monkeypatch.setattr(Joint, "loss", recording)
    cfg = make_cfg("joint", sets=[*FAST, "optim.amp=bf16"])
    folder, _ = train_run(cfg)
    assert dtypes == {torch.bfloat16}
    metrics = folder.read_metrics()
    assert len(metrics) == 2 and all(math.isfinite(v) for v in metrics[["train_loss", "val_acc"]].to_numpy().ravel())
    assert folder.read_config().optim.amp == "bf16"
    assert cfg.run_id() != make_cfg("joint", sets=FAST).run_id()


def test_fp16_scaler_state_is_checkpointed(make_cfg, tmp_path, monkeypatch):
    """A real GradScaler (CPU fp16 autocast) that doubles its scale every step until fp16 overflows, so
    which steps it skips depends on its state: a resumed run matches the full run only if it is restored."""
    from mmbench.checkpoint import from_file
    from mmbench.results import RunFolder
    from mmbench.testing import assert_same_run
    from tests.test_resume import Stop, stop_after

    monkeypatch.setattr(training, "build_scaler", lambda device: torch.amp.GradScaler(device.type, growth_interval=1))
    sets = [*FAST, "optim.amp=fp16"]
    full, _ = train_run(make_cfg("joint", epochs=3, sets=sets))
    cfg = make_cfg("joint", epochs=3, sets=sets)
    cfg.output.results_dir = str(tmp_path / "late")
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(0))
    ckpt = from_file(RunFolder.for_config(cfg).path / "checkpoint.pt")
    assert ckpt["scaler"]["scale"] != 65536.0  # moved away from the initial scale
    resumed, _ = train_run(cfg, resume=True)
    assert_same_run(full, resumed)


def test_amp_and_loggers_are_validated():
    with pytest.raises(MMBenchError, match="optim.amp' must be one of none, bf16, fp16"):
        resolve(sets=["optim.amp=fp32"])
    with pytest.raises(MMBenchError, match="output.loggers' must be a list of distinct names from tensorboard"):
        resolve(sets=["output.loggers=[tensorboard,neptune]"])
    assert resolve(sets=["output.loggers=[tensorboard,mlflow]"]).output.loggers == ["tensorboard", "mlflow"]


def test_deterministic_flag_reaches_torch_and_is_restored(make_cfg, monkeypatch):
    seen = []
    loss = Joint.loss

    def recording(self, model, batch, out, state):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return loss(self, model, batch, out, state)

    monkeypatch.setattr(Joint, "loss", recording)
    assert not torch.are_deterministic_algorithms_enabled()
    cfg = make_cfg("joint", sets=[*FAST, "deterministic=true"])
    first, _ = train_run(cfg)
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()
    metrics = first.read_metrics()
    again, _ = train_run(make_cfg("joint", sets=[*FAST, "deterministic=true"]), force=True)
    assert again.read_metrics().equals(metrics)
    seen.clear()
    train_run(make_cfg("joint", sets=FAST))
    assert seen and not any(seen)
    assert cfg.run_id() != make_cfg("joint", sets=FAST).run_id()
