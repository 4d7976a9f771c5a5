"""MICINet mechanism (reconstructed): the global ICI mixture follows the class confusions, sample ICI is
its posterior mean and is removed, and the relative discriminative power moves compensation toward the
clean modality when the other one is noised."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.methods.micinet import MICIBranch, discriminative_power
from tests.robust_fusion_data import extras, noised, train_small


def test_global_ici_follows_the_soft_confusion_matrix():
    branch = MICIBranch(dim=2, num_classes=3)
    c = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 2])
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.0, 0.2, 0.8]])
    branch.update_ici(c, probs, labels, momentum=0.1)
    beta = branch.ici_beta
    # beta[c, c'] = mean over class-c samples of p(c' | x), the off-diagonal soft confusion matrix
    torch.testing.assert_close(beta, torch.tensor([[0.0, 0.5, 0.1], [0.5, 0.0, 0.1], [0.0, 0.2, 0.0]]))
    # mu[0, 1] = confusion-weighted mean of the class-0 shared features: (0.3 (1, 0) + 0.7 (3, 2)) / 1.0
    torch.testing.assert_close(branch.ici_mean[0, 1], torch.tensor([2.4, 1.4]))
    var = 0.3 * torch.tensor([1.0, 0.0]) ** 2 + 0.7 * torch.tensor([3.0, 2.0]) ** 2 - torch.tensor([2.4, 1.4]) ** 2
    torch.testing.assert_close(branch.ici_var[0, 1], var)
    assert branch.ici_seen[2, 0] == 0 and branch.ici_seen[0, 1] == 1  # class 2 never confused with class 0
    # later batches move the statistics by the momentum
    branch.update_ici(torch.zeros(1, 2), torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([0]), momentum=0.1)
    torch.testing.assert_close(branch.ici_mean[0, 1], 0.9 * torch.tensor([2.4, 1.4]))
    torch.testing.assert_close(beta[0], torch.tensor([0.0, 0.9 * 0.5 + 0.1, 0.9 * 0.1]))


def test_sample_ici_is_the_posterior_mean_of_the_mixture():
    branch = MICIBranch(dim=1, num_classes=2)
    branch.ici_mean.copy_(torch.tensor([[[0.0], [-1.0]], [[2.0], [0.0]]]))
    branch.ici_var.copy_(torch.tensor([[[1.0], [1.0]], [[0.5], [1.0]]]))
    branch.ici_beta.copy_(torch.tensor([[0.0, 0.3], [0.1, 0.0]]))
    branch.ici_seen.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    c = torch.tensor([[0.0], [1.5]])
    c_hat, resp = branch.sample_ici(c)

    def normal(x, mu, var):
        return math.exp(-(x - mu) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)

    for i, x in enumerate((0.0, 1.5)):
        w = [0.75 * normal(x, -1.0, 1.0), 0.25 * normal(x, 2.0, 0.5)]  # beta normalised over the pairs
        r = [v / sum(w) for v in w]
        assert resp[i].tolist() == pytest.approx(r, rel=1e-5)
        assert c_hat[i].item() == pytest.approx(-1.0 * r[0] + 2.0 * r[1], rel=1e-5)


def test_discriminative_power_is_margin_times_typicality():
    sq = torch.tensor([[1.0, 4.0, 9.0], [16.0, 25.0, 1e4]])
    expected = [(2 - 1) / (2 + 1) * math.exp(-1 / 4), (5 - 4) / (5 + 4) * math.exp(-16 / 4)]
    assert discriminative_power(sq, 2.0).tolist() == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def trained(data_dir):
    _, model, test = train_small(data_dir, "micinet")
    return model, test


def test_removal_and_compensation_follow_the_relative_power(trained):
    model, test = trained
    with torch.no_grad():
        out = model(test)
        br = model.fusion.branches
        raw = {m: discriminative_power(br[m].bank.sq_distances(out.extras[f"specific_{m}"]), br[m].spread) for m in "ab"}
        pi = {m: raw[m] / (raw["a"] + raw["b"]) for m in "ab"}
        fused = 0
        for m, n in (("a", "b"), ("b", "a")):
            torch.testing.assert_close(out.extras[f"power_{m}"], pi[m])
            torch.testing.assert_close(out.extras[f"compensation_{m}"], pi[n])  # omega_m = 1 - pi_m
            s, c, c_hat = (out.extras[f"{k}_{m}"] for k in ("specific", "shared", "ici"))
            torch.testing.assert_close(c_hat, br[m].sample_ici(c)[0])
            omega = pi[n][:, None]
            z = s + (1 - omega) * (c - c_hat) + omega * br[n].compensate(out.extras[f"specific_{n}"])
            fused = fused + pi[m][:, None] * br[m].head(z)
        torch.testing.assert_close(out.logits, fused)
        # alone, a modality only loses its globally expected ICI: z = s + c - c_hat
        alone = model(test, mask=["b"])
        s, c, c_hat = (alone.extras[f"{k}_a"] for k in ("specific", "shared", "ici"))
        torch.testing.assert_close(alone.extras["clean_a"], s + c - c_hat)
        torch.testing.assert_close(alone.logits, br["a"].head(s + c - c_hat))


def test_noised_modality_loses_power_and_receives_more_compensation(trained):
    model, test = trained
    runs = [extras(model, noised(test, "b", level)) for level in (0, 1, 2, 4)]
    power = [r["power_b"].mean().item() for r in runs]
    compensation = [r["compensation_b"].mean().item() for r in runs]
    assert power == sorted(power, reverse=True) and power[-1] < power[0] - 0.1
    assert compensation == sorted(compensation)
    # the clean modality's discriminative power itself is untouched; only its relative share grows
    torch.testing.assert_close(runs[-1]["discriminative_a"], runs[0]["discriminative_a"])
    assert runs[-1]["power_a"].mean() > runs[0]["power_a"].mean()
