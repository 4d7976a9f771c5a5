"""EAU mechanism: uncertainty-weighted fusion, the contrastive loss, the gradient scaling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.methods.base import TrainState
from mmbench.methods.eau import contrastive
from tests.conftest import tiny_method


def _model(data_dir, **params):
    method, model, batch, train = tiny_method("eau", data_dir, n=16, **params)
    return method, model.eval(), batch, train


def test_fusion_weights_are_a_softmax_of_negative_variances(data_dir):
    _, model, batch, _ = _model(data_dir)
    with torch.no_grad():
        out = model(batch)
        var = torch.stack([out.extras[f"logvar_{m}"].exp() for m in ("vector", "image")])
        torch.testing.assert_close(torch.stack([out.extras["weight_vector"], out.extras["weight_image"]]),
                                   torch.softmax(-var, 0).mean(2))
        model.fusion.logvar["image"].bias.add_(1.0)  # a more uncertain image embedding
        louder = model(batch)
    assert (louder.extras["weight_image"] < out.extras["weight_image"]).all()


def test_contrastive_loss_is_the_releases_two_view_ntxent():
    z1, z2 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.randn(6, 4)
    s = torch.exp(F.normalize(z1) @ F.normalize(z2).t() / 0.5)
    expected = [0.5 * (-torch.log(s[i, i] / (2 * s[i].sum() - s[i, i])) - torch.log(s[i, i] / (2 * s[:, i].sum() - s[i, i])))
                for i in range(6)]
    assert contrastive(z1, z2, 0.5).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    assert contrastive(z1, z1, 0.5) < contrastive(z1, z2, 0.5)  # matching views cost less


def test_gradients_are_scaled_by_the_other_modalitys_cognitive_uncertainty(data_dir):
    method, model, batch, train = _model(data_dir, zeta=0.5, modulation_start=0)
    model.train()
    state = TrainState(train=train)
    out = method.forward(model, batch, state)
    loss, _ = method.loss(model, batch, out, state)
    loss.backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    state_copy = state.generator.get_state()
    logs = method.after_backward(model, batch, out, state)
    state.generator.set_state(state_copy)
    cog = {m: c.mean() for m, c in method.cognitive_uncertainty(model, out, state.generator).items()}
    for n, p in model.named_parameters():
        if n not in before:
            continue
        own = next((m for m in ("vector", "image") if f".{m}." in f".{n}."), None)
        expected = before[n] * (1 + 0.5 * cog["image" if own == "vector" else "vector"]) if own else before[n]
        torch.testing.assert_close(p.grad, expected, msg=n)
    assert logs["cog_vector"] == pytest.approx(cog["vector"].item())
