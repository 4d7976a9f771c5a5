"""UMT mechanism: frozen unimodal teachers, trained first; the distillation pulls the encoders' features to theirs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig, OptimConfig
from mmbench.data.store import load_split
from mmbench.errors import MMBenchError
from mmbench.evaluation import eval_mode
from mmbench.methods.base import TrainState, build_method
from mmbench.models.multimodal import ModelSpec
from mmbench.training import Trainer
from tests.conftest import tiny_method


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fit(data_dir, scaling: float, epochs: int = 3):
    """A UMT run on ``tiny`` (seed 0): ``(model, teachers before training, teachers after the teacher phase, train)``."""
    torch.manual_seed(0)
    train, val = load_split("tiny", "train", data_dir), load_split("tiny", "val", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("umt", {"scaling": scaling, "teacher_epochs": 3}))
    model = method.build_model(spec)
    initial = _state(model.teachers)
    trainer = Trainer(method, model, OptimConfig(optimizer="adam", lr=0.01, epochs=epochs, batch_size=32),
                      torch.device("cpu"), seed=0)
    trainer.state.train = train
    method.on_epoch_start(trainer.state)  # the teacher phase, as the first epoch's start runs it
    taught = _state(model.teachers)
    trainer.fit(train, val)
    return model, initial, taught, train


@torch.no_grad()
def _feature_mse(model, data) -> float:
    with eval_mode(model):
        student, teacher = model(data).features, model.teachers(data).features
    return sum(F.mse_loss(student[m], teacher[m]).item() for m in student)


def test_distillation_pulls_encoder_features_to_the_frozen_teachers(data_dir):
    model, initial, taught, train = _fit(data_dir, scaling=10.0)
    plain, _, plain_taught, _ = _fit(data_dir, scaling=0.0)
    # the teachers were trained (each alone), then never changed by the run (weights and buffers)
    assert any(not torch.equal(initial[k], taught[k]) for k in initial)
    assert all(torch.equal(v, model.state_dict()[f"teachers.{k}"]) for k, v in taught.items())
    assert all(torch.equal(taught[k], plain_taught[k]) for k in taught)  # same seed: the same teachers
    with_distill, without = _feature_mse(model, train), _feature_mse(plain, train)
    assert with_distill < 0.5 * without, (with_distill, without)


def test_teachers_are_out_of_the_optimizer_and_each_sees_only_its_modality(data_dir):
    method, model, batch, _ = tiny_method("umt", data_dir)
    trainer = Trainer(method, model, OptimConfig(), torch.device("cpu"))
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in model.teachers.parameters()}
    assert all(not p.requires_grad for p in model.teachers.parameters())
    other = {m: torch.randn_like(x) if m != "vector" else x for m, x in batch.inputs.items()}
    with torch.no_grad():
        assert torch.equal(model.teachers(batch).unimodal_logits["vector"], model.teachers(other).unimodal_logits["vector"])


def test_loss_is_cross_entropy_plus_scaled_feature_mse_inside_the_window(data_dir):
    method, model, batch, _ = tiny_method("umt", data_dir, scaling=2.5, modulation_starts=1, modulation_ends=2)
    out = model(batch)
    with eval_mode(model.teachers), torch.no_grad():
        target = model.teachers(batch).features
    ce = F.cross_entropy(out.logits, batch.labels)
    mse = sum(F.mse_loss(out.features[m], target[m]) for m in target)
    loss, logs = method.loss(model, batch, out, TrainState(epoch=1))
    assert loss.item() == pytest.approx((ce + 2.5 * mse).item(), rel=1e-6)
    assert logs["distill"] == pytest.approx(mse.item(), rel=1e-6)
    outside, logs = method.loss(model, batch, out, TrainState(epoch=3))
    assert outside.item() == pytest.approx(ce.item(), rel=1e-6) and logs == {}
    loss.backward()
    assert all(p.grad is None for p in model.teachers.parameters())


@pytest.mark.parametrize("params,message", [
    ({"teacher_mode": "frozen"}, "teacher_mode must be one of"),
    ({"scaling": -1}, "method.scaling"),
    ({"teacher_epochs": 0}, "method.teacher_epochs"),
    ({"modulation_ends": -1}, "method.modulation_ends"),
])
def test_bad_options_are_one_line_errors(params, message):
    with pytest.raises(MMBenchError, match=message):
        build_method(MethodConfig("umt", params))
