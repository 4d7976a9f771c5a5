"""gmm_gap mechanism: the GMM separates a planted bimodal gap, training posteriors find a planted
imbalanced subgroup, and the loss weights follow the posteriors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
from mmbench.gap import fit_gap_mixture
from mmbench.methods.base import TrainState, build_method
from mmbench.models.multimodal import ModelSpec
from mmbench.run import train_run


def test_mixture_separates_a_planted_bimodal_gap():
    rng = np.random.default_rng(0)
    imbalanced = rng.random(2000) < 0.3
    gap = np.where(imbalanced, rng.normal(0.7, 0.08, 2000), rng.normal(0.0, 0.05, 2000))
    fit = fit_gap_mixture(gap)
    assert fit.means[0] == pytest.approx(0.0, abs=0.02) and fit.means[1] == pytest.approx(0.7, abs=0.02)
    assert fit.weights[1] == pytest.approx(imbalanced.mean(), abs=0.02)
    # the posterior of the imbalanced component recovers the planted labels
    assert ((fit.posterior_imbalanced > 0.5) == imbalanced).mean() > 0.99


def _method_and_batch(data_dir, **params):
    torch.manual_seed(0)
    batch = load_split("tiny", "train", data_dir).index(slice(0, 32))
    batch.ids = torch.arange(32)
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("gmm_gap", {"warmup_epochs": 0, **params}))
    return method, method.build_model(spec), batch


def test_loss_follows_the_posteriors(data_dir):
    method, model, batch = _method_and_batch(data_dir, lambda_fused=2.0, lambda_gap=3.0, lambda_align=0.5,
                                             lambda_overall=0.25, unimodal_weight=1.0)
    gamma = torch.rand(32, generator=torch.Generator().manual_seed(1))
    method.gamma, method.mean_balanced = gamma, 0.1
    out = model(batch)
    loss, _ = method.loss(model, batch, out, TrainState(epoch=1))
    y = batch.labels
    ce = F.cross_entropy(out.logits, y, reduction="none")
    pv, pi = (torch.softmax(out.unimodal_logits[m], 1)[torch.arange(32), y] for m in ("vector", "image"))
    gap = pv - pi
    expected = ((1 - gamma) * 2.0 * ce + gamma * 3.0 * gap ** 2 + 0.5 * gamma * (gap.abs() - 0.1) ** 2
                + 0.25 * gap ** 2).mean() + sum(F.cross_entropy(z, y) for z in out.unimodal_logits.values())
    torch.testing.assert_close(loss, expected)
    # fully imbalanced samples get no fusion loss: no gradient reaches the fused logits
    method.gamma = torch.ones(32)
    out = model(batch)
    loss, _ = method.loss(model, batch, out, TrainState(epoch=1))
    grad = torch.autograd.grad(loss, out.logits)[0]
    assert grad.abs().max() == 0


def test_adaptive_stage_refits_each_epoch_and_logs_the_mixture(make_cfg):
    folder, _ = train_run(make_cfg("gmm_gap", epochs=4, sets=["method.warmup_epochs=2"]))
    metrics = folder.read_metrics()
    assert metrics.loc[:1, "gmm_mean_balanced"].isna().all()  # warm-up: no mixture yet
    assert metrics.loc[2:, ["gmm_mean_balanced", "gmm_mean_imbalanced", "imbalanced_share"]].notna().all().all()


def _planted_subgroup(n=600, seed=0):
    """Two vector modalities equally informative, except on a known subgroup (30 %) where the first
    carries a strong class signal and the second is pure noise: there the first modality dominates."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    subgroup = torch.rand(n, generator=g) < 0.3
    centres = 1.5 * torch.randn(3, 8, generator=g)
    a = 3.0 * centres[labels] + torch.randn(n, 8, generator=g)
    b = torch.where(subgroup, 0.0, 3.0)[:, None] * centres[labels] + torch.randn(n, 8, generator=g)
    specs = {m: ModalitySpec(m, "vector", (8,)) for m in ("a", "b")}
    meta = DatasetMeta("planted", "test", ("x", "y", "z"), specs, {"train": n})
    return MultimodalData({"a": a, "b": b}, labels, meta), subgroup


def test_training_posteriors_find_a_planted_imbalanced_subgroup():
    from mmbench.config import OptimConfig
    from mmbench.training import Trainer

    train, subgroup = _planted_subgroup()
    val, _ = _planted_subgroup(150, seed=1)
    torch.manual_seed(0)
    method = build_method(MethodConfig("gmm_gap", {"warmup_epochs": 6}))
    model = method.build_model(ModelSpec(train.meta.modalities, 3, ModelConfig(hidden_dim=32, feature_dim=16)))
    Trainer(method, model, OptimConfig(optimizer="adam", lr=1e-3, epochs=8, batch_size=32),
            torch.device("cpu"), seed=0).fit(train, val)
    gamma = method.gamma  # posteriors of the last fit (start of epoch 7), on the training samples' gaps
    inside, outside = gamma[subgroup].mean().item(), gamma[~subgroup].mean().item()
    assert inside > 0.9 and outside < 0.1, (inside, outside)
    assert ((gamma > 0.5) == subgroup).float().mean() > 0.95


def test_purification_trains_on_the_balanced_subset_and_saves_it(make_cfg):
    folder, _ = train_run(make_cfg("gmm_gap", epochs=5, sets=["method.warmup_epochs=1", "method.purify=true",
                                                             "method.purify_epochs=2"]))
    ids = folder.load_arrays("artifacts.npz")["purified_ids"]
    n_train = len(folder.load_arrays("gap.npz")["labels"])
    assert 0 < len(ids) <= n_train and len(np.unique(ids)) == len(ids)
    metrics = folder.read_metrics()
    assert metrics.loc[3:, "purified_share"].tolist() == pytest.approx([len(ids) / n_train] * 2)
    assert metrics.loc[3:, "kept"].notna().all() and metrics.loc[:2, "purified_share"].isna().all()
