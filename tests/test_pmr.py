"""PMR mechanism: class-mean prototypes, their update rule, and the prototype CE on the weaker modality only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.pmr import prototype_indices
from mmbench.models.multimodal import ModelSpec


def _setup(data_dir, train_steps=10, **params):
    torch.manual_seed(0)
    train = load_split("tiny", "train", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=32, feature_dim=16))
    method = build_method(MethodConfig("pmr", params))
    model = method.build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(train_steps):  # make "vector" dominant
        opt.zero_grad()
        F.cross_entropy(model(train).unimodal_logits["vector"], train.labels).backward()
        opt.step()
    model.zero_grad()
    state = TrainState(model=model.train(), train=train, val=load_split("tiny", "val", data_dir), batch_size=32,
                       generator=torch.Generator().manual_seed(3))
    return train, method, model, state


@torch.no_grad()
def _class_means(model, data):
    """Expected prototypes: per modality and class, the mean eval-mode feature over all of ``data``."""
    model.eval()
    feats = model(data).features
    model.train()
    return {m: torch.stack([f[data.labels == c].mean(0) for c in range(data.meta.num_classes)]) for m, f in feats.items()}


def _perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_prototypes_are_eval_mode_class_means_of_training_features(data_dir):
    train, method, model, state = _setup(data_dir, proto_fraction=1.0)
    method.on_epoch_start(state)
    assert model.training, "the model's mode is restored"
    expected = _class_means(model, train)
    for m in ("vector", "image"):
        torch.testing.assert_close(method.prototypes[m], expected[m])
    with torch.no_grad():  # train-mode (batch-norm batch statistics) features would differ
        train_mode = model(train).features["image"]
    assert not torch.allclose(train_mode[train.labels == 0].mean(0), expected["image"][0], atol=1e-4)


def test_fraction_takes_the_first_batches_of_a_shuffled_order_plus_missed_classes():
    labels = torch.tensor([0] * 60 + [1] * 39 + [2])
    idx = prototype_indices(labels, 3, batch_size=10, fraction=0.25, generator=torch.Generator().manual_seed(5))
    order = torch.randperm(100, generator=torch.Generator().manual_seed(5))
    first = order[:20]  # 10 batches -> int(2.5) = 2 batches, as the release's len(loader) // 10
    assert torch.equal(idx[:20], first) and 99 not in first
    # class 2 is missed by the sampled batches: its sample is added, so its prototype is not 0/0
    assert torch.equal(idx[20:], torch.tensor([99]))
    covered = prototype_indices(labels, 3, batch_size=10, fraction=0.25, generator=torch.Generator().manual_seed(4))
    assert len(covered) == 20  # seed 4 samples index 99: nothing to add
    tiny = prototype_indices(labels, 3, batch_size=10, fraction=0.01, generator=torch.Generator().manual_seed(5))
    assert torch.equal(tiny[:10], order[:10])  # never fewer than one batch


def test_prototypes_are_replaced_after_epoch_zero_then_averaged_with_momentum(data_dir):
    train, method, model, state = _setup(data_dir, proto_fraction=1.0, momentum_coef=0.3)
    method.on_epoch_start(state)
    _perturb(model, 1)
    state.epoch = 0
    method.on_epoch_end(state)
    first = _class_means(model, train)
    for m in first:
        torch.testing.assert_close(method.prototypes[m], first[m])
    _perturb(model, 2)
    state.epoch = 1
    method.on_epoch_end(state)
    new = _class_means(model, train)
    for m in new:
        torch.testing.assert_close(method.prototypes[m], 0.7 * new[m] + 0.3 * first[m])
    assert {"val_proto_acc_vector", "val_proto_acc_image"} <= set(state.epoch_logs)


def _distance_logits(features, prototypes):
    return -torch.sqrt(((features[:, None, :] - prototypes[None]) ** 2).sum(-1))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_prototype_ce_is_added_to_the_weaker_modality_only(data_dir):
    alpha = 2.0
    train, method, model, state = _setup(data_dir, alpha=alpha)
    method.on_epoch_start(state)
    batch = train.index(slice(0, 64))
    out = model(batch)
    y = batch.labels
    logits = {m: _distance_logits(out.features[m], method.prototypes[m]) for m in out.features}
    score = {m: F.softmax(z.detach(), 1)[torch.arange(len(y)), y].sum().item() for m, z in logits.items()}
    assert score["vector"] / score["image"] > 1, "set-up: vector must be dominant on prototypes"
    loss, logs = method.loss(model, batch, out, state)
    fused = F.cross_entropy(out.logits, y)
    expected = fused + alpha * F.cross_entropy(logits["image"], y)
    torch.testing.assert_close(loss, expected)
    assert logs["proto_weight_image"] == alpha and logs["proto_weight_vector"] == 0.0
    assert logs["ratio_vector"] == pytest.approx(score["vector"] / score["image"], rel=1e-5)
    loss.backward()
    grads = _grads(model)
    model.zero_grad()
    F.cross_entropy(model(batch).logits, y).backward()
    plain = _grads(model)
    for name, g in plain.items():
        if name.startswith("encoders.image"):
            continue
        torch.testing.assert_close(grads[name], g, msg=name)  # dominant encoder and head: fused CE only
    changed = [n for n in plain if n.startswith("encoders.image") and not torch.allclose(grads[n], plain[n])]
    assert changed, "the weaker encoder receives the prototype CE"


def test_plain_cross_entropy_outside_the_window(data_dir):
    train, method, model, state = _setup(data_dir, train_steps=0, modulation_starts=0, modulation_ends=2)
    method.on_epoch_start(state)
    batch = train.index(slice(0, 64))
    out = model(batch)
    state.epoch = 3
    loss, logs = method.loss(model, batch, out, state)
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, batch.labels))
    assert logs["proto_weight_vector"] == logs["proto_weight_image"] == 0.0


def test_prototype_measurements_are_logged_per_epoch(make_cfg):
    from mmbench.run import train_run

    folder, _ = train_run(make_cfg("pmr", sets=["method.alpha=2.0"]))
    metrics = folder.read_metrics()
    for m in ("vector", "image"):
        for key in ("ratio", "proto_weight", "loss_proto", "proto_acc", "val_proto_acc"):
            assert f"{key}_{m}" in metrics.columns
        assert metrics[f"val_proto_acc_{m}"].between(0, 1).all()
    # binary weights: at most one modality gets alpha per step (two modalities)
    total = metrics["proto_weight_vector"] + metrics["proto_weight_image"]
    assert (total <= 2.0 + 1e-9).all() and (total > 0).all()  # and the prototype loss is applied every epoch
