"""OGM-GE mechanism: the dominant encoder's gradients are scaled by 1 - tanh(alpha * rho), the weak one's are not."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.ogm_ge import ogm_coefficients
from mmbench.models.multimodal import ModelSpec


def _setup(data_dir, **params):
    torch.manual_seed(0)
    batch = load_split("tiny", "train", data_dir).index(slice(0, 64))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=32, feature_dim=16))
    method = build_method(MethodConfig("ogm_ge", params))
    model = method.build_model(spec)
    # make "vector" dominant: a few steps on its unimodal logits only
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(batch).unimodal_logits["vector"], batch.labels).backward()
        opt.step()
    model.zero_grad()
    out = model(batch)
    loss, _ = method.loss(model, batch, out, TrainState())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return batch, method, model, out, grads


def _expected(out, labels, alpha):
    """Scores and coefficient computed here from the formulas, not from mmbench."""
    s = {m: F.softmax(z.detach(), 1)[torch.arange(len(labels)), labels].sum().item() for m, z in out.unimodal_logits.items()}
    rho_v = s["vector"] / s["image"]
    assert rho_v > 1, "the test set-up must make vector dominant"
    return 1 - math.tanh(alpha * rho_v)


def test_coefficient_follows_the_release_formula():
    ratios, coeffs = ogm_coefficients({"audio": torch.tensor(30.0), "visual": torch.tensor(10.0)}, alpha=0.8)
    assert ratios == pytest.approx({"audio": 3.0, "visual": 1 / 3})
    assert coeffs["audio"] == pytest.approx(1 - math.tanh(2.4)) and coeffs["visual"] == 1.0
    # no "-1": just above rho = 1 the coefficient jumps to 1 - tanh(alpha)
    _, jump = ogm_coefficients({"a": torch.tensor(10.001), "b": torch.tensor(10.0)}, alpha=0.8)
    assert jump["a"] == pytest.approx(1 - math.tanh(0.8), abs=1e-3) and jump["b"] == 1.0


def test_ogm_scales_only_the_dominant_encoder_weights(data_dir):
    batch, method, model, out, grads = _setup(data_dir, mode="OGM", alpha=0.8)
    k = _expected(out, batch.labels, 0.8)
    logs = method.after_backward(model, batch, out, TrainState(epoch=0))
    assert logs["coeff_vector"] == pytest.approx(k, rel=1e-5) and logs["coeff_image"] == 1.0
    for name, p in model.named_parameters():
        if name.startswith("encoders.vector") and p.ndim >= 2:
            torch.testing.assert_close(p.grad, grads[name] * k)
        else:  # weak encoder, biases, norms and the fusion head keep their gradients
            torch.testing.assert_close(p.grad, grads[name])


def test_ogm_ge_adds_noise_with_the_unscaled_gradient_std_to_both_encoders(data_dir):
    batch, method, model, out, grads = _setup(data_dir, mode="OGM_GE", alpha=0.8)
    k = _expected(out, batch.labels, 0.8)
    method.after_backward(model, batch, out, TrainState(epoch=0, generator=torch.Generator().manual_seed(1)))
    for modality, coeff in (("vector", k), ("image", 1.0)):
        for name, p in model.named_parameters():
            if name.startswith(f"encoders.{modality}") and p.ndim >= 2 and p.numel() >= 256:
                noise = p.grad - coeff * grads[name]
                assert noise.abs().max() > 0
                assert noise.std().item() == pytest.approx(grads[name].std().item(), rel=0.2)
    head = "fusion.fc.weight"
    torch.testing.assert_close(model.get_parameter(head).grad, grads[head])


def test_no_modulation_outside_the_inclusive_window(data_dir):
    batch, method, model, out, grads = _setup(data_dir, mode="OGM_GE", modulation_starts=2, modulation_ends=4)
    logs = method.after_backward(model, batch, out, TrainState(epoch=5))
    assert logs["coeff_vector"] == 1.0
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name])
    batch, method, model, out, grads = _setup(data_dir, mode="OGM", modulation_starts=2, modulation_ends=4)
    logs = method.after_backward(model, batch, out, TrainState(epoch=4))
    assert logs["coeff_vector"] < 1.0


def test_conv_scope_selects_convolution_kernels_only(data_dir):
    batch, method, model, out, grads = _setup(data_dir, mode="OGM", scope="conv")
    model.fusion.fc.weight.grad.zero_()  # irrelevant here; keep the check on encoders
    method.after_backward(model, batch, out, TrainState(epoch=0))
    # the dominant encoder is an MLP: it has no 4-D weights, so nothing is scaled
    for name, p in model.named_parameters():
        if name.startswith("encoders."):
            torch.testing.assert_close(p.grad, grads[name])


def test_coefficients_are_logged_per_epoch(make_cfg):
    from mmbench.run import train_run

    folder, _ = train_run(make_cfg("ogm_ge"))
    metrics = folder.read_metrics()
    for col in ("coeff_vector", "coeff_image", "ratio_vector", "ratio_image"):
        assert col in metrics.columns
    assert ((metrics[["coeff_vector", "coeff_image"]] > 0) & (metrics[["coeff_vector", "coeff_image"]] <= 1)).all().all()
