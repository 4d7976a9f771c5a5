"""ARL mechanism: shared-head unimodal losses, steps 1-4 of the weights, (1 + weight) on encoder feature gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.arl import arl_weights
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.modulation import scale_grad
from mmbench.models.multimodal import ModelSpec


def _setup(data_dir, **params):
    torch.manual_seed(0)
    data = load_split("tiny", "train", data_dir)
    spec = ModelSpec(data.meta.modalities, data.meta.num_classes, ModelConfig(hidden_dim=32, feature_dim=16))
    method = build_method(MethodConfig("arl", params))
    model = method.build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):  # make "vector" dominant
        opt.zero_grad()
        F.cross_entropy(model(data).unimodal_logits["vector"], data.labels).backward()
        opt.step()
    model.zero_grad()
    return data.index(slice(0, 64)), method, model


def _shared_head(model, features):
    """``fc([f_m, 0]) = f_m W_m^T + b`` with the **full** bias (the release's auxiliary logits)."""
    w, b, d = model.fusion.fc.weight, model.fusion.fc.bias, features["vector"].shape[1]
    return {"vector": features["vector"] @ w[:, :d].T + b, "image": features["image"] @ w[:, d:].T + b}


def _release_weights(z, T, floor=0.3):
    """Steps 1-4 of main_arl_variance.py, written out for two modalities (audio = vector, visual = image)."""
    calc_a, calc_b = (z[m].detach().abs().mean(0).sum().item() for m in ("vector", "image"))
    calc_a, calc_b = calc_a / (calc_a + calc_b), calc_b / (calc_a + calc_b)
    h = {}
    for m in ("vector", "image"):
        p = torch.softmax(z[m].detach(), 1)
        h[m] = torch.sum(-p * torch.log(p + 1e-16), 1).mean().item()
    h_a, h_v = max(h["vector"] / (h["vector"] + h["image"]), floor), max(h["image"] / (h["vector"] + h["image"]), floor)
    a_w, v_w = 1 / h_a, 1 / h_v
    a_w, v_w = a_w / (a_w + v_w), v_w / (a_w + v_w)
    e = [math.exp(calc_b * a_w * T), math.exp(calc_a * v_w * T)]  # crossed magnitudes
    return {"vector": e[0] / sum(e), "image": e[1] / sum(e)}


def test_unimodal_logits_come_from_the_shared_head_with_the_other_modality_zeroed(data_dir):
    batch, method, model = _setup(data_dir)
    out = method.forward(model, batch, TrainState())
    expected = _shared_head(model, out.features)
    for m in expected:
        torch.testing.assert_close(out.unimodal_logits[m], expected[m])
    assert not torch.allclose(out.unimodal_logits["vector"], model(batch).unimodal_logits["vector"])  # not b / 2
    loss, _ = method.loss(model, batch, out, TrainState(epoch=6))
    y = batch.labels
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, y)
                               + 1.0 * sum(F.cross_entropy(z, y) for z in expected.values()))


def test_weights_follow_steps_one_to_four(data_dir):
    batch, method, model = _setup(data_dir, temperature=8.0)
    out = method.forward(model, batch, TrainState())
    method.loss(model, batch, out, TrainState())[0].backward()
    logs = method.after_backward(model, batch, out, TrainState(epoch=0))
    expected = _release_weights(_shared_head(model, out.features), T=8.0)
    for m in expected:
        assert logs[f"weight_{m}"] == pytest.approx(expected[m], rel=1e-5)
    assert abs(logs["weight_vector"] - 0.5) > 1e-3


def test_entropy_floor_and_crossed_magnitudes_on_handmade_logits():
    z = {"vector": torch.tensor([[8.0, 0.0, 0.0], [0.0, 9.0, 0.0]]), "image": torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.0, 0.2]])}
    mag, ent, weight = arl_weights(z, temperature=4.0, entropy_floor=0.3)
    assert ent["vector"] == pytest.approx(0.3)  # confident: its normalised entropy is clamped at the floor
    expected = _release_weights(z, T=4.0)
    assert weight == pytest.approx(expected, rel=1e-5)
    assert mag["vector"] + mag["image"] == pytest.approx(1.0)
    three = {**z, "sequence": torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 0.0]])}
    mag3, ent3, weight3 = arl_weights(three, temperature=4.0, entropy_floor=0.3)
    inv = {m: 1 / ent3[m] for m in three}
    logits = torch.tensor([4.0 * (1 - mag3[m]) * inv[m] / sum(inv.values()) for m in three])
    assert list(weight3.values()) == pytest.approx(torch.softmax(logits, 0).tolist(), rel=1e-5)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _reference_grads(model, batch, gamma, factor):
    """CE(out) + gamma * sum_m CE(fc([f_m, 0])), encoder-output gradients scaled by ``factor[m]`` via a feature hook."""
    model.zero_grad()
    out = model(batch, feature_hook=lambda m, f: scale_grad(f, factor[m]))
    y = batch.labels
    uni = _shared_head(model, out.features)
    (F.cross_entropy(out.logits, y) + gamma * sum(F.cross_entropy(z, y) for z in uni.values())).backward()
    grads = _grads(model)
    model.zero_grad()
    return grads


def _method_step(method, model, batch, epoch):
    model.zero_grad()
    state = TrainState(epoch=epoch)
    out = method.forward(model, batch, state)
    method.loss(model, batch, out, state)[0].backward()
    logs = method.after_backward(model, batch, out, state)
    return _grads(model), logs, out


@pytest.mark.parametrize("mode", ["intended", "released"])
def test_encoder_feature_gradients_are_scaled_by_one_plus_weight_after_start(data_dir, mode):
    batch, method, model = _setup(data_dir, gamma=4.0, temperature=8.0, start=2, weight_mode=mode)
    grads, logs, out = _method_step(method, model, batch, epoch=3)
    weight = _release_weights(_shared_head(model, out.features), T=8.0)
    applied = weight if mode == "intended" else {"vector": 0.5, "image": 0.5}
    factor = {m: 1.0 + w for m, w in applied.items()}
    assert logs["scale_vector"] == pytest.approx(factor["vector"]) and logs["scale_image"] == pytest.approx(factor["image"])
    reference = _reference_grads(model, batch, gamma=4.0, factor=factor)
    unscaled = _reference_grads(model, batch, gamma=4.0, factor={"vector": 1.0, "image": 1.0})
    for name, g in reference.items():
        torch.testing.assert_close(grads[name], g, msg=name)
        if name.startswith("encoders.") and name.endswith("weight"):
            assert not torch.allclose(grads[name], unscaled[name])
        elif name.startswith("fusion."):  # the shared head is not scaled
            torch.testing.assert_close(grads[name], unscaled[name])


def test_no_scaling_and_unit_unimodal_weight_until_start(data_dir):
    batch, method, model = _setup(data_dir, gamma=4.0, start=2)
    grads, logs, _ = _method_step(method, model, batch, epoch=2)  # epoch > start is required
    assert logs["scale_vector"] == logs["scale_image"] == 1.0
    reference = _reference_grads(model, batch, gamma=1.0, factor={"vector": 1.0, "image": 1.0})
    for name, g in reference.items():
        torch.testing.assert_close(grads[name], g, msg=name)


def test_weights_and_scales_are_logged_per_epoch(make_cfg):
    from mmbench.run import train_run

    folder, _ = train_run(make_cfg("arl", sets=["method.start=0"]))
    metrics = folder.read_metrics()
    for m in ("vector", "image"):
        for key in ("magnitude", "entropy", "weight", "scale", "loss"):
            assert f"{key}_{m}" in metrics.columns
    assert metrics.loc[0, "scale_vector"] == 1.0  # epoch 0 is not after start
    assert metrics.loc[1, "scale_vector"] == pytest.approx(1 + metrics.loc[1, "weight_vector"])
    assert (metrics["weight_vector"] + metrics["weight_image"]).tolist() == pytest.approx([1.0, 1.0])
