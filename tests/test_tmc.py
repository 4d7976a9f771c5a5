"""TMC mechanism: Dirichlet opinions, the reduced Dempster combination, the annealed evidential loss,
and what the uncertainty and conflict do when a modality is corrupted."""

from __future__ import annotations

import pytest
import torch

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.tmc import combine, ds_combine, evidential_loss, kl_uniform, opinion
from mmbench.models.multimodal import ModelSpec
from tests.robust_fusion_data import extras, noised, signal_destroyed, train_small


def test_reduced_dempster_combination_matches_a_hand_computation():
    a1 = torch.tensor([[3.0, 1.0, 2.0]])  # e = (2, 0, 1), S = 6: b = (1/3, 0, 1/6), u = 1/2
    a2 = torch.tensor([[2.0, 2.0, 1.0]])  # e = (1, 1, 0), S = 5: b = (1/5, 1/5, 0), u = 3/5
    b, u = opinion(a1)
    torch.testing.assert_close(b, torch.tensor([[1 / 3, 0.0, 1 / 6]]))
    assert u.item() == pytest.approx(3 / 6)  # u = K / S
    # C = sum_{i != j} b1_i b2_j = 1/3 (1/5 + 0) + 0 + 1/6 (1/5 + 1/5) = 2/15
    # b = (b1 b2 + b1 u2 + b2 u1) / (1 - C) = (11/30, 1/10, 1/10) / (13/15) = (11/26, 3/26, 3/26)
    # u = u1 u2 / (1 - C) = (3/10) / (13/15) = 9/26; S = K / u = 26/3; alpha = b S + 1 = (14/3, 2, 2)
    alpha, conflict = ds_combine(a1, a2)
    assert conflict.item() == pytest.approx(2 / 15)
    torch.testing.assert_close(alpha, torch.tensor([[14 / 3, 2.0, 2.0]]))
    b, u = opinion(alpha)
    assert u.item() == pytest.approx(9 / 26) and b.sum().item() + u.item() == pytest.approx(1.0)
    # two agreeing opinions give a more certain combination than either
    assert u.item() < min(opinion(a1)[1].item(), opinion(a2)[1].item())


def test_combination_properties():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.rand(5, 4, generator=g) * 5 + 1 for _ in range(3))
    torch.testing.assert_close(ds_combine(a, b)[0], ds_combine(b, a)[0])  # two views: order-free
    torch.testing.assert_close(ds_combine(a, torch.ones_like(a))[0], a)  # a vacuous opinion is the identity
    torch.testing.assert_close(combine([a, b, c])[0], ds_combine(ds_combine(a, b)[0], c)[0])


def test_evidential_loss_is_the_digamma_fit_plus_the_kl_of_the_misleading_evidence():
    alpha = torch.tensor([[5.0, 2.0, 1.5], [1.2, 4.0, 3.0]])
    y = torch.tensor([0, 2])
    expected_kl = torch.distributions.kl_divergence(torch.distributions.Dirichlet(alpha), torch.distributions.Dirichlet(torch.ones(3)))
    torch.testing.assert_close(kl_uniform(alpha), expected_kl)
    tilde = torch.tensor([[1.0, 2.0, 1.5], [1.2, 4.0, 1.0]])  # alpha~ = y + (1 - y) alpha
    s = alpha.sum(1)
    fit = torch.digamma(s) - torch.digamma(alpha[torch.arange(2), y])
    torch.testing.assert_close(evidential_loss(alpha, y, 0.3), fit + 0.3 * kl_uniform(tilde))


def _model(data_dir, **params):
    torch.manual_seed(0)
    batch = load_split("tiny", "train", data_dir).index(slice(0, 16))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("tmc", params))
    return method, method.build_model(spec), batch


def test_model_output_is_the_combined_dirichlet(data_dir):
    method, model, batch = _model(data_dir)
    out = model(batch)
    alphas = [out.extras[f"alpha_{m}"] for m in ("vector", "image")]
    fused = combine(alphas)[0]
    torch.testing.assert_close(out.extras["alpha"], fused)
    torch.testing.assert_close(out.logits, torch.log(fused / fused.sum(1, keepdim=True)))
    k = batch.meta.num_classes
    for m, a in zip(("vector", "image"), alphas):
        torch.testing.assert_close(out.extras[f"uncertainty_{m}"], k / a.sum(1))
        torch.testing.assert_close(torch.softmax(out.unimodal_logits[m], 1), a / a.sum(1, keepdim=True))
    # a masked modality is a vacuous opinion: the fused opinion is the other one's
    masked = model(batch, mask=["image"])
    torch.testing.assert_close(masked.extras["alpha"], masked.extras["alpha_vector"])


@pytest.mark.parametrize("variant, annealing, start, epochs_and_coef", [
    ("tmc", 50, 1, [(0, 1 / 50), (24, 25 / 50), (49, 1.0), (80, 1.0)]),  # ICLR: epochs counted from 1
    ("etmc", 10, 0, [(0, 0.0), (5, 0.5), (10, 1.0)]),  # TPAMI: epochs from 0
])
def test_kl_is_annealed_with_the_epoch(data_dir, variant, annealing, start, epochs_and_coef):
    method, model, batch = _model(data_dir, variant=variant, annealing_epochs=annealing, annealing_start=start)
    out = model(batch)
    views = [out.extras["alpha_vector"], out.extras["alpha_image"]]
    if variant == "etmc":
        views.append(out.extras["alpha_pseudo"])
        torch.testing.assert_close(out.extras["alpha"], ds_combine(ds_combine(views[0], views[1])[0], views[2])[0])
    y = batch.labels
    for epoch, coef in epochs_and_coef:
        loss, logs = method.loss(model, batch, out, TrainState(epoch=epoch))
        assert logs["kl_coef"] == pytest.approx(min(1.0, (epoch + start) / annealing)) == pytest.approx(coef)
        expected = sum(evidential_loss(a, y, coef) for a in views + [out.extras["alpha"]]).mean()
        torch.testing.assert_close(loss, expected)


@pytest.fixture(scope="module")
def trained(data_dir):
    _, model, test = train_small(data_dir, "tmc")
    return model, test


def test_conflict_rises_with_the_noise_level_on_one_modality(trained):
    model, test = trained
    conflict = [extras(model, noised(test, "b", level))["conflict"].mean().item() for level in (0, 1, 2, 4)]
    assert conflict == sorted(conflict) and conflict[-1] > conflict[0] + 0.05


def test_destroying_a_modalitys_signal_raises_its_uncertainty_and_the_fused_one(trained):
    model, test = trained
    clean, broken = extras(model, test), extras(model, signal_destroyed(test, "b"))
    assert broken["uncertainty_b"].mean() > clean["uncertainty_b"].mean()
    assert broken["uncertainty"].mean() > clean["uncertainty"].mean()
    torch.testing.assert_close(broken["uncertainty_a"], clean["uncertainty_a"])  # the other opinion is untouched
