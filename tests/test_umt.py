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


def _balancemm_function(path: str, cls: str, name: str, scope: dict):
    """A function (a class's method when ``cls``) from the BalanceBenchmark checkout, executed from its source."""
    import ast

    from tests.reference import reference_dir

    body = ast.parse((reference_dir("BalanceBenchmark") / path).read_text()).body
    if cls:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    node = next(n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name)
    exec(compile(ast.Module([node], []), path, "exec"), scope)
    return scope[name]


class _Recorded:
    """BalanceMM's model interface over an mmbench model: calling it fills ``encoder_result``."""

    def __init__(self, model, batch):
        self.model, self.batch, self.device = model, batch, torch.device("cpu")

    def __call__(self, *args, **kwargs):
        out = self.model(self.batch)
        self.encoder_result = {**out.features, "output": out.logits}


@pytest.mark.parametrize("epoch", [0, 2])
def test_loss_and_gradients_equal_balancemm_umt_training_step(data_dir, epoch):
    """BalanceBenchmark's ``UMTTrainer.training_step`` (``balancemm/trainer/UMT_trainer.py`` @ 4c1482f) run from
    the checkout on the same student, teachers (in train mode, as BalanceMM leaves them) and batch."""
    from types import SimpleNamespace

    from torch import nn

    step = _balancemm_function("balancemm/trainer/UMT_trainer.py", "UMTTrainer", "training_step",
                               {"torch": torch, "nn": nn, "F": F, "BaseClassifierModel": object})
    method, model, batch, _ = tiny_method("umt", data_dir, n=24, teacher_mode="train", modulation_ends=1)
    trainer = SimpleNamespace(scaling=10.0, modulation_starts=0, modulation_ends=1, current_epoch=epoch,
                              loaded_model={m: _Recorded(model.teachers, batch) for m in batch.modalities})
    theirs = step(trainer, model=_Recorded(model, batch), batch={"label": batch.labels}, batch_idx=0)
    their_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    ours, _ = method.loss(model, batch, model(batch), TrainState(epoch=epoch))
    ours.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    our_grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert our_grads.keys() == their_grads.keys() and not any(k.startswith("teachers.") for k in our_grads)
    for k, g in our_grads.items():
        torch.testing.assert_close(g, their_grads[k], rtol=1e-5, atol=1e-7)
