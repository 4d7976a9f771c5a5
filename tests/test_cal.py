"""CAL mechanism: by default the higher-contribution modality is accelerated more (every modality is
sped up), the lower-contribution one compressed harder."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.measures import shapley_values
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.cal import contributions
from mmbench.models.multimodal import ModelSpec


def test_contribution_combines_normalised_information_and_confidence():
    w = contributions({"a": 0.3, "b": 0.1}, {"a": 0.9, "b": 0.6}, alpha=0.25)
    assert w["a"] == pytest.approx(0.25 * 0.75 + 0.75 * 0.6)
    assert w["b"] == pytest.approx(0.25 * 0.25 + 0.75 * 0.4)
    assert sum(w.values()) == pytest.approx(1.0)
    assert contributions({"a": 0.5, "b": -0.2}, {"a": 1, "b": 1}, 1.0) == {"a": 1.0, "b": 0.0}  # I floored at 0


def _dominated(data_dir, **params):
    """A CAL model whose vector modality was trained a little, so it carries the prediction."""
    torch.manual_seed(0)
    batch = load_split("tiny", "train", data_dir).index(slice(0, 64))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=32, feature_dim=16))
    method = build_method(MethodConfig("cal", params))
    model = method.build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(batch, mask=["image"]).logits, batch.labels).backward()
        opt.step()
    model.zero_grad()
    return method, model, batch


def test_default_accelerates_the_higher_contribution_modality_more(data_dir):
    method, model, batch = _dominated(data_dir)
    assert method.params.accelerate == "high"
    _, logs = method.loss(model, batch, model(batch), TrainState())
    assert logs["W_vector"] > logs["W_image"], "set-up: vector must contribute more"
    assert logs["accel_vector"] > logs["accel_image"] > 1


@pytest.mark.parametrize("direction", ["high", "low"])
def test_acceleration_follows_contribution_and_never_suppresses(data_dir, direction):
    method, model, batch = _dominated(data_dir, accelerate=direction, temperature=4.0)
    out = model(batch)
    loss, logs = method.loss(model, batch, out, TrainState())
    assert logs["W_vector"] > logs["W_image"], "set-up: vector must contribute more"
    sign = -1 if direction == "low" else 1
    e = [math.exp(sign * 4.0 * logs[f"W_{m}"]) for m in ("vector", "image")]
    expected = {"vector": 1 + e[0] / sum(e), "image": 1 + e[1] / sum(e)}
    assert logs["accel_vector"] == pytest.approx(expected["vector"]) and logs["accel_image"] == pytest.approx(expected["image"])
    slower, faster = ("vector", "image") if direction == "low" else ("image", "vector")
    assert 1 < logs[f"accel_{slower}"] < logs[f"accel_{faster}"]
    loss.backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    method.after_backward(model, batch, out, TrainState())
    for name, p in model.named_parameters():
        if name in before:
            factor = next((expected[m] for m in expected if name.startswith(f"encoders.{m}.")), 1.0)
            torch.testing.assert_close(p.grad, before[name] * factor)


def test_lower_contribution_gets_the_stronger_bottleneck(data_dir):
    method, model, batch = _dominated(data_dir, beta0=0.01)
    out = model(batch)
    _, logs = method.loss(model, batch, out, TrainState())
    assert logs["beta_image"] > logs["beta_vector"]
    assert logs["beta_image"] == pytest.approx(0.01 * (1 - logs["W_image"]))


def test_information_is_the_shapley_value_of_masked_true_class_probability(data_dir):
    method, model, batch = _dominated(data_dir)
    model.eval()  # deterministic bottleneck (mu) so masked passes match the re-fused features
    with torch.no_grad():
        out = model(batch)
        _, logs = method.loss(model, batch, out, TrainState())
        y = batch.labels
        value = {}
        for subset, mask in ((frozenset(), ["vector", "image"]), (frozenset({"vector"}), ["image"]),
                             (frozenset({"image"}), ["vector"]), (frozenset({"vector", "image"}), [])):
            p = torch.softmax(model(batch, mask=mask).logits, 1)
            value[subset] = p[torch.arange(len(y)), y].mean().item()
    phi = shapley_values(value, ["vector", "image"])
    assert logs["I_vector"] == pytest.approx(phi["vector"], abs=1e-5)
    assert logs["I_image"] == pytest.approx(phi["image"], abs=1e-5)


def test_evaluation_is_deterministic(data_dir):
    method, model, batch = _dominated(data_dir)
    model.eval()
    torch.testing.assert_close(model(batch).logits, model(batch).logits)
    model.train()
    assert not torch.equal(model(batch).features["vector"], model(batch).features["vector"])  # sampled z
