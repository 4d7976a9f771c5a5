"""AGM mechanism: Shapley-like outputs, the running-average coefficient rule, per-branch gradient scaling."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.data.types import MultimodalData
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.modulation import subset_logits
from mmbench.models.multimodal import ModelSpec, build_model


def _setup(data_dir, dataset="tiny", **params):
    torch.manual_seed(0)
    data = load_split(dataset, "train", data_dir)
    spec = ModelSpec(data.meta.modalities, data.meta.num_classes, ModelConfig(hidden_dim=32, feature_dim=16))
    method = build_method(MethodConfig("agm", params))
    model = method.build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):  # make "vector" dominant, and move the norm layers' running statistics
        opt.zero_grad()
        F.cross_entropy(model(data).unimodal_logits["vector"], data.labels).backward()
        opt.step()
    for module in model.modules():  # freeze running statistics so repeated train-mode passes agree
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0
    model.zero_grad()
    return data, method, model.train()


def _muted(model, batch, keep):
    """Fused logits in eval mode with every modality outside ``keep`` zeroed at the input (the release's padding)."""
    model.eval()
    inputs = {m: x if m in keep else torch.zeros_like(x) for m, x in batch.inputs.items()}
    out = model(batch.with_inputs(inputs)).logits
    model.train()
    return out


def _release_outputs(model, batch):
    """``m_a = 1/2 (f(a,v) - f(0,v) + f(a,0))`` and ``m_v`` likewise (CREMAD_net.py), with gradients."""
    full = model(batch).logits
    only_vector, only_image = _muted(model, batch, {"vector"}), _muted(model, batch, {"image"})
    return {"vector": 0.5 * (full - only_image + only_vector), "image": 0.5 * (full - only_vector + only_image)}


def _score(z, y):
    p = F.softmax(z.detach(), 1)[torch.arange(len(y)), y]
    return (-torch.log(torch.clamp(p, min=1e-8))).mean().item()


def test_outputs_are_the_release_shapley_halves_with_eval_mode_muted_passes(data_dir):
    data, method, model = _setup(data_dir)
    batch = data.index(slice(0, 48))
    expected = _release_outputs(model, batch)
    out = method.forward(model, batch, TrainState())
    assert model.training
    for m in ("vector", "image"):
        torch.testing.assert_close(out.unimodal_logits[m], expected[m])
    torch.testing.assert_close(out.logits, model(batch).logits)  # m_a + m_v = f(a, v)
    # muted passes in train mode (batch statistics) would give different outputs
    train_mode = model(batch.with_inputs({**batch.inputs, "vector": torch.zeros_like(batch.inputs["vector"])})).logits
    assert not torch.allclose(train_mode, _muted(model, batch, {"image"}), atol=1e-4)


def test_a_muted_input_is_zero_as_the_network_sees_it_also_for_uint8_pixels(data_dir):
    data = load_split("tiny", "train", data_dir).index(slice(0, 16))
    image = dataclasses.replace(data.meta.modalities["image"], dtype="uint8", mean=100.0, std=50.0)
    meta = dataclasses.replace(data.meta, modalities={**data.meta.modalities, "image": image})
    pixels = torch.randint(0, 256, data.inputs["image"].shape, dtype=torch.uint8)
    batch = MultimodalData({**data.inputs, "image": pixels}, data.labels, meta)
    model = build_model(ModelSpec(meta.modalities, meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8)))
    seen = []
    model.encoders["image"].encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    subset_logits(model, batch, [frozenset({"vector"})], mute="input")
    assert len(seen) == 1 and torch.equal(seen[0], torch.zeros_like(seen[0]))  # standardised: 0, not black


def test_three_modalities_use_shapley_values_plus_an_equal_share_of_the_empty_output(data_dir):
    data, method, model = _setup(data_dir, dataset="tiny3", mute="features")
    batch = data.index(slice(0, 40))
    mods = ["vector", "image", "sequence"]
    model.eval()
    f = {frozenset(s): model(batch, mask=[m for m in mods if m not in s]).logits
         for s in [(), ("vector",), ("image",), ("sequence",), ("vector", "image"), ("vector", "sequence"),
                   ("image", "sequence")]}
    model.train()
    f[frozenset(mods)] = model(batch).logits
    out = method.forward(model, batch, TrainState())
    for m in mods:
        a, b = [o for o in mods if o != m]
        phi = (f[frozenset({m})] - f[frozenset()]) / 3 + (f[frozenset(mods)] - f[frozenset({a, b})]) / 3 \
            + (f[frozenset({m, a})] - f[frozenset({a})]) / 6 + (f[frozenset({m, b})] - f[frozenset({b})]) / 6
        torch.testing.assert_close(out.unimodal_logits[m], phi + f[frozenset()] / 3)
    torch.testing.assert_close(out.logits, f[frozenset(mods)])


def test_coefficient_follows_the_cumulative_mean_of_scores_across_epochs(data_dir):
    alpha = 2.5
    data, method, model = _setup(data_dir, alpha=alpha, modulation_ends=5)
    running = {"vector": 0.0, "image": 0.0}
    for t, (epoch, start) in enumerate([(0, 0), (0, 48), (1, 96), (1, 144)]):
        batch = data.index(slice(start, start + 48))
        expected = _release_outputs(model, batch)
        s = {m: _score(z, batch.labels) for m, z in expected.items()}
        ratio = {"vector": math.exp(s["image"] - s["vector"]), "image": math.exp(s["vector"] - s["image"])}
        optimal = {"vector": math.exp(running["image"] - running["vector"]),
                   "image": math.exp(running["vector"] - running["image"])}
        coeff = {m: math.exp(alpha * min(optimal[m] - ratio[m], 10)) for m in s}
        _, logs = method.loss(model, batch, method.forward(model, batch, TrainState(epoch=epoch, step=t)), TrainState())
        for m in s:
            assert logs[f"score_{m}"] == pytest.approx(s[m], rel=1e-5)
            assert logs[f"optimal_ratio_{m}"] == pytest.approx(optimal[m], rel=1e-5)
            assert logs[f"coeff_{m}"] == pytest.approx(coeff[m], rel=1e-4)
            assert logs[f"scale_{m}"] == logs[f"coeff_{m}"]
        n = t + 1  # the running mean takes this step's score only after the coefficient
        running = {m: running[m] * (n - 1) / n + s[m] / n for m in s}
    assert logs["coeff_vector"] != pytest.approx(1.0, abs=1e-3)


def _branch_gradients(model, batch):
    """Per branch, the parameter gradients of CE(m_a + m_v) through that branch alone."""
    outputs = _release_outputs(model, batch)
    logits = sum(outputs.values()).detach().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(logits, batch.labels), logits)
    params = [p for p in model.parameters()]
    return {m: torch.autograd.grad(z, params, grad_outputs=g, retain_graph=True, allow_unused=True)
            for m, z in outputs.items()}


def test_each_branch_gradient_is_scaled_by_its_own_coefficient(data_dir):
    data, method, model = _setup(data_dir, alpha=1.5, conditional_clip=False)
    batch = data.index(slice(0, 64))
    branch = _branch_gradients(model, batch)
    out = method.forward(model, batch, TrainState(epoch=0, step=0))
    loss, logs = method.loss(model, batch, out, TrainState())
    model.zero_grad()
    loss.backward()
    coeff = {m: logs[f"coeff_{m}"] for m in branch}
    assert coeff["vector"] < 0.95 and coeff["image"] > 1.05, "vector dominant: slowed; image: sped up"
    for i, (name, p) in enumerate(model.named_parameters()):
        parts = [coeff[m] * branch[m][i] for m in branch if branch[m][i] is not None]
        if parts:
            torch.testing.assert_close(p.grad, sum(parts), msg=name)


def _plain_gradients(model, batch):
    model.zero_grad()
    F.cross_entropy(model(batch).logits, batch.labels).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return grads


def _method_gradients(method, model, batch, state):
    out = method.forward(model, batch, state)
    loss, logs = method.loss(model, batch, out, state)
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, logs


@pytest.mark.parametrize("after", ["reset", "keep_last"])
def test_scale_outside_the_window(data_dir, after):
    data, method, model = _setup(data_dir, modulation_starts=1, modulation_ends=1, scale_after_window=after,
                                 conditional_clip=False)
    batch = data.index(slice(0, 64))
    plain = _plain_gradients(model, batch)
    grads, logs = _method_gradients(method, model, batch, TrainState(epoch=0, step=0))  # before the window
    assert logs["scale_vector"] == logs["scale_image"] == 1.0 and logs["coeff_vector"] != 1.0
    for name, g in plain.items():  # scale 1 on every branch: the muted passes cancel, plain CE gradient
        torch.testing.assert_close(grads[name], g, msg=name)
    _, inside = _method_gradients(method, model, data.index(slice(64, 128)), TrainState(epoch=1, step=1))
    _, outside = _method_gradients(method, model, data.index(slice(128, 192)), TrainState(epoch=2, step=2))
    for m in ("vector", "image"):
        assert inside[f"scale_{m}"] == inside[f"coeff_{m}"] != 1.0
        assert outside[f"scale_{m}"] == (1.0 if after == "reset" else inside[f"coeff_{m}"])


def test_conditional_clip_fires_only_on_a_large_fusion_head_gradient(data_dir):
    data, method, model = _setup(data_dir)
    batch = data.index(slice(0, 8))
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    assert method.after_backward(model, batch, None, TrainState()) == {"clipped": 0.0}
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    model.fusion.fc.weight.grad[0, 0] = 3.0
    before = [p.grad.clone() for p in model.parameters()]
    assert method.after_backward(model, batch, None, TrainState()) == {"clipped": 1.0}
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert total.item() == pytest.approx(1.0, rel=1e-4)
    norm = torch.sqrt(sum((g ** 2).sum() for g in before))
    for p, g in zip(model.parameters(), before):
        torch.testing.assert_close(p.grad, g / norm, rtol=1e-4, atol=1e-7)


def test_coefficients_are_logged_per_epoch(make_cfg):
    from mmbench.run import train_run

    folder, _ = train_run(make_cfg("agm"))
    metrics = folder.read_metrics()
    for m in ("vector", "image"):
        for key in ("score", "ratio", "optimal_ratio", "coeff", "scale"):
            assert f"{key}_{m}" in metrics.columns
        assert (metrics[f"coeff_{m}"] > 0).all()
        assert metrics[f"scale_{m}"].tolist() == pytest.approx(metrics[f"coeff_{m}"].tolist())  # inside 0-19
    assert metrics["clipped"].between(0, 1).all()
