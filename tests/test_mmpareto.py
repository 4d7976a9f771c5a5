"""MMPareto mechanism: per encoder, equal weights when the multimodal and unimodal gradients agree,
MGDA min-norm weights when they conflict; per tensor, rescaled up (never down) to the summed
gradient's norm, times gamma; heads keep the summed gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.mmpareto import min_norm_weights
from mmbench.models.multimodal import ModelSpec

GAMMA = 1.5


def test_min_norm_weights_match_a_grid_search():
    gen = torch.Generator().manual_seed(0)
    g1 = torch.randn(50, generator=gen, dtype=torch.float64)
    g2 = -0.6 * g1 + 0.8 * torch.randn(50, generator=gen, dtype=torch.float64)  # conflicting
    assert g1 @ g2 < 0
    grid = torch.linspace(0, 1, 100001, dtype=torch.float64)
    norms = ((grid[:, None] * g1 + (1 - grid[:, None]) * g2) ** 2).sum(1)
    c, rest = min_norm_weights(g1, g2)
    assert c == pytest.approx(grid[norms.argmin()].item(), abs=2e-5) and rest == pytest.approx(1 - c)
    # the solver's boundary cases: one vector already inside the other's half-space
    assert min_norm_weights(g1, 3 * g1)[0] == pytest.approx(0.999)
    assert min_norm_weights(3 * g1, g1)[0] == pytest.approx(0.001)


def _setup(data_dir, sign: float):
    """The vector head is ``sign`` x the vector slice of the fused head: -1 makes the vector encoder's
    two gradients conflict, +1 makes them agree (checked below, not assumed)."""
    torch.manual_seed(0)
    batch = load_split("tiny", "train", data_dir).index(slice(0, 64))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("mmpareto", {"gamma": GAMMA}))
    model = method.build_model(spec)
    with torch.no_grad():
        model.heads["vector"].weight.copy_(sign * model.fusion.fc.weight[:, :8])
        model.heads["vector"].bias.copy_(sign * model.fusion.fc.bias)
    return batch, method, model


def _per_loss_gradients(model, batch):
    """Each loss back-propagated alone (as the release does), here with plain ``backward``."""
    out = model(batch)
    losses = {"mm": F.cross_entropy(out.logits, batch.labels)}
    losses.update({m: F.cross_entropy(z, batch.labels) for m, z in out.unimodal_logits.items()})
    grads = {}
    for key, loss in losses.items():
        model.zero_grad()
        loss.backward(retain_graph=True)
        grads[key] = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                      for n, p in model.named_parameters()}
    summed = {n: sum(grads[k][n] for k in grads) for n, _ in model.named_parameters()}
    return grads, summed


def _expected(model, grads, summed):
    """MMPareto's encoder gradients from the formulas; also returns each encoder's cosine and weight."""
    expected, info = dict(summed), {}
    for m in ("vector", "image"):
        names = [n for n, _ in model.named_parameters() if n.startswith(f"encoders.{m}.")]
        g1 = torch.cat([grads["mm"][n].flatten() for n in names])
        g2 = torch.cat([grads[m][n].flatten() for n in names])
        cos = (g1 @ g2 / (g1.norm() * g2.norm())).item()
        # min_c |c g1 + (1 - c) g2|^2: derivative zero at c = <g2, g2 - g1> / |g1 - g2|^2
        c = 0.5 if cos > 0 else ((g2 @ (g2 - g1)) / ((g1 - g2) @ (g1 - g2))).item()
        info[m] = (cos, c)
        for n in names:
            new = 2 * c * grads["mm"][n] + 2 * (1 - c) * grads[m][n]
            if summed[n].norm() > new.norm():
                new = new * summed[n].norm() / new.norm()
            expected[n] = GAMMA * new
    return expected, info


def _run_method(method, model, batch):
    out = model(batch)
    loss, _ = method.loss(model, batch, out, TrainState())
    model.zero_grad()
    loss.backward()
    logs = method.after_backward(model, batch, out, TrainState())
    return {n: p.grad for n, p in model.named_parameters()}, logs


def test_conflicting_gradients_get_min_norm_weights_rescaled_up_only(data_dir):
    batch, method, model = _setup(data_dir, sign=-1.0)
    grads, summed = _per_loss_gradients(model, batch)
    expected, info = _expected(model, grads, summed)
    cos, c = info["vector"]
    assert cos < 0 and 0.001 < c < 0.999, "the set-up must make the vector encoder's gradients conflict"
    got, logs = _run_method(method, model, batch)
    assert logs["cos_vector"] == pytest.approx(cos, abs=1e-5) and logs["conflict_vector"] == 1.0
    assert logs["k_mm_vector"] == pytest.approx(c, rel=1e-4)
    for n, g in got.items():
        torch.testing.assert_close(g, expected[n], rtol=1e-4, atol=1e-7)
    # both sides of the upward-only rule occur among the vector encoder's tensors
    scaled = [summed[n].norm() > (2 * c * grads["mm"][n] + 2 * (1 - c) * grads["vector"][n]).norm()
              for n in grads["mm"] if n.startswith("encoders.vector.")]
    assert any(scaled) and not all(scaled)


def test_agreeing_gradients_get_equal_weights_so_encoders_get_gamma_times_the_sum(data_dir):
    batch, method, model = _setup(data_dir, sign=1.0)
    grads, summed = _per_loss_gradients(model, batch)
    expected, info = _expected(model, grads, summed)
    assert info["vector"][0] > 0, "the set-up must make the vector encoder's gradients agree"
    got, logs = _run_method(method, model, batch)
    assert logs["k_mm_vector"] == 0.5 and logs["conflict_vector"] == 0.0
    for n, g in got.items():
        if n.startswith("encoders.vector."):
            torch.testing.assert_close(g, GAMMA * summed[n], rtol=1e-4, atol=1e-7)
        elif not n.startswith("encoders."):  # fused head and unimodal heads: the plain sum, no gamma
            torch.testing.assert_close(g, summed[n], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(g, expected[n], rtol=1e-4, atol=1e-7)


def test_weights_and_cosines_are_logged_per_epoch(make_cfg):
    from mmbench.run import train_run

    folder, _ = train_run(make_cfg("mmpareto", dataset="tiny3"))
    metrics = folder.read_metrics()
    for m in ("vector", "image", "sequence"):
        assert {f"cos_{m}", f"k_mm_{m}", f"conflict_{m}", f"loss_{m}"} <= set(metrics.columns)
        assert metrics[f"k_mm_{m}"].between(0, 1).all()
