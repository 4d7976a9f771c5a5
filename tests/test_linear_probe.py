"""Linear probe mechanism: encoders trained first, then frozen; only the fresh concat head learns."""

from __future__ import annotations

import pytest
import torch

from mmbench.config import MethodConfig, ModelConfig, OptimConfig
from mmbench.data.store import load_split
from mmbench.errors import MMBenchError
from mmbench.methods.base import build_method
from mmbench.models.fusion import ConcatFusion
from mmbench.models.multimodal import ModelSpec
from mmbench.training import Trainer


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _trainer(data_dir, fusion="concat", **params):
    torch.manual_seed(0)
    train, val = load_split("tiny", "train", data_dir), load_split("tiny", "val", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8, fusion=fusion))
    method = build_method(MethodConfig("linear_probe", {"encoder_epochs": 2, **params}))
    model = method.build_model(spec)
    trainer = Trainer(method, model, OptimConfig(optimizer="adamw", lr=0.01, epochs=2, batch_size=32),
                      torch.device("cpu"), seed=0)
    trainer.state.train = train
    return trainer, train, val


@pytest.mark.parametrize("encoders", ["joint", "unimodal"])
def test_encoders_are_trained_then_frozen_and_only_the_head_moves(data_dir, encoders):
    trainer, train, val = _trainer(data_dir, encoders=encoders)
    model, method = trainer.model, trainer.method
    calls = []
    fit_copy = trainer.state.fit_copy
    trainer.state.fit_copy = lambda net, *a: (calls.append(net), fit_copy(net, *a))
    initial_encoders, initial_head = _state(model.encoders), _state(model.fusion)
    method.on_epoch_start(trainer.state)  # the encoder phase, as the first epoch's start runs it
    assert len(calls) == (1 if encoders == "joint" else len(train.modalities)) and calls[0] is not model
    probed = _state(model.encoders)
    assert any(not torch.equal(initial_encoders[k], probed[k]) for k in probed), "the encoders were not trained"
    assert all(torch.equal(initial_head[k], v) for k, v in _state(model.fusion).items()), "the head is not fresh"
    trainer.fit(train, val)  # the head phase: the run's epochs
    assert len(calls) == (1 if encoders == "joint" else len(train.modalities))  # the encoder phase ran once
    assert all(torch.equal(probed[k], v) for k, v in _state(model.encoders).items()), "the encoders moved"
    assert all(not torch.equal(initial_head[k], v) for k, v in _state(model.fusion).items()), "the head did not learn"
    stepped = {id(p) for p, s in trainer.optimizer.state.items() if s}
    assert stepped == {id(p) for p in model.fusion.parameters()}


def test_head_is_a_concat_linear_layer_whatever_the_configured_fusion(data_dir):
    trainer, _, _ = _trainer(data_dir, fusion="late")
    assert isinstance(trainer.model.fusion, ConcatFusion) and trainer.model.heads is None


@pytest.mark.parametrize("params,message", [
    ({"encoders": "ogm"}, "encoders must be one of"),
    ({"encoder_epochs": 0}, "method.encoder_epochs"),
])
def test_bad_options_are_one_line_errors(params, message):
    with pytest.raises(MMBenchError, match=message):
        build_method(MethodConfig("linear_probe", params))


def test_head_equals_balancemm_new_linear_head(data_dir):
    """BalanceBenchmark's ``NewLinearHead`` (``balancemm/trainer/LinearProbe_trainer.py`` @ 4c1482f), run from the
    checkout with the head's weights: the same fused logits and unimodal logits (``Unimodalitiy_Calaulate``)."""
    import ast

    from torch import nn

    from tests.reference import reference_dir

    source = (reference_dir("BalanceBenchmark") / "balancemm/trainer/LinearProbe_trainer.py").read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "NewLinearHead")
    scope = {"torch": torch, "nn": nn}
    exec(compile(ast.Module([node], []), "LinearProbe_trainer.py", "exec"), scope)
    trainer, train, _ = _trainer(data_dir)
    model, batch = trainer.model.double(), train.index(slice(0, 24))
    features = {m: torch.randn(24, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
                for i, m in enumerate(batch.modalities)}
    head = scope["NewLinearHead"](8 * len(features), train.meta.num_classes).double()
    head.fc_out.load_state_dict(model.fusion.fc.state_dict())
    logits, unimodal = model.fuse(features)
    theirs = head(features)
    their_unimodal = head.Unimodalitiy_Calaulate({**features, "output": theirs}, {m: 8 for m in features})
    torch.testing.assert_close(logits, theirs, rtol=0, atol=1e-12)
    for m in features:
        torch.testing.assert_close(unimodal[m], their_unimodal[m], rtol=0, atol=1e-12)
