"""UME mechanism: the prediction is the mean of unimodal models' logits, each trained as if alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig, OptimConfig
from mmbench.data.store import load_split
from mmbench.errors import MMBenchError
from mmbench.methods.base import TrainState, build_method, method_params
from mmbench.models.multimodal import ModelSpec
from mmbench.training import Trainer
from tests.conftest import tiny_method


def _unimodal_twin(ume_model, spec: ModelSpec, m: str):
    """The ``unimodal`` method's model for ``m``, holding the UME member's weights."""
    method = build_method(MethodConfig("unimodal", {"modality": m}))
    twin = method.build_model(spec)
    member = ume_model.state_dict()
    twin.load_state_dict({
        **{k: member[k] for k in twin.state_dict() if k.startswith("encoders.")},
        "fusion.fc.weight": member[f"fusion.heads.{m}.weight"], "fusion.fc.bias": member[f"fusion.heads.{m}.bias"],
    })
    return method, twin


def _spec(train):
    return ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))


@pytest.mark.parametrize("dataset", ["tiny", "tiny3"])
def test_prediction_is_the_mean_of_the_unimodal_models_logits(data_dir, dataset):
    method, model, batch, train = tiny_method("ume", data_dir, dataset)
    twins = [_unimodal_twin(model, _spec(train), m)[1].eval() for m in batch.modalities]
    with torch.no_grad():
        expected = torch.stack([t(batch).logits for t in twins]).mean(0)
        torch.testing.assert_close(method.predict(model.eval(), batch).logits, expected)
        # a member never sees another modality
        first = batch.modalities[0]
        other = {m: x if m == first else torch.randn_like(x.float()).to(x.dtype) for m, x in batch.inputs.items()}
        assert torch.equal(model(batch).unimodal_logits[first], model(other).unimodal_logits[first])


def test_each_member_trains_exactly_as_a_unimodal_run(data_dir):
    train, val = load_split("tiny", "train", data_dir), load_split("tiny", "val", data_dir)
    optim = OptimConfig(optimizer="sgd", lr=0.05, epochs=1, batch_size=16)  # one epoch: no checkpoint choice
    method, model, _, _ = tiny_method("ume", data_dir)
    twins = [(m, *_unimodal_twin(model, _spec(train), m)) for m in train.modalities]
    Trainer(method, model, optim, torch.device("cpu"), seed=0).fit(train, val)
    moved = False
    for m, twin_method, twin in twins:
        start = {k: v.clone() for k, v in twin.state_dict().items()}
        Trainer(twin_method, twin, optim, torch.device("cpu"), seed=0).fit(train, val)  # same seed: same batches
        _, trained = _unimodal_twin(model, _spec(train), m)
        for k, v in twin.state_dict().items():
            torch.testing.assert_close(trained.state_dict()[k], v, rtol=1e-5, atol=1e-6)
            moved |= not torch.allclose(start[k], v)
    assert moved


def test_loss_is_the_sum_of_the_members_cross_entropies(data_dir):
    method, model, batch, _ = tiny_method("ume", data_dir, "tiny3")
    out = model(batch)
    loss, logs = method.loss(model, batch, out, TrainState())
    expected = sum(F.cross_entropy(z, batch.labels) for z in out.unimodal_logits.values())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and set(logs) == {f"loss_{m}" for m in batch.modalities}


def test_ume_takes_no_parameters():
    with pytest.raises(MMBenchError, match="unknown parameter 'method.scaling'"):
        method_params(MethodConfig("ume", {"scaling": 1.0}))
