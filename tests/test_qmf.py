"""QMF mechanism: energy-weighted late fusion, the ranking regulariser on the per-sample loss history,
and the bookkeeping of that history (global min/max, order of the update)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.qmf import rank_loss
from mmbench.models.multimodal import ModelSpec
from tests.robust_fusion_data import extras, signal_destroyed, train_small


def _model(data_dir, **params):
    torch.manual_seed(0)
    train = load_split("tiny", "train", data_dir)
    ids = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:16]
    batch = train.index(ids)
    batch.ids = ids
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("qmf", params))
    return method, method.build_model(spec), batch, train


def test_fusion_weights_are_scaled_negative_energies(data_dir):
    _, model, batch, _ = _model(data_dir)
    out = model(batch)
    z = out.unimodal_logits
    conf = {m: 0.1 * torch.logsumexp(z[m], 1) for m in z}  # -Energy / 10
    torch.testing.assert_close(out.logits, conf["vector"][:, None] * z["vector"] + conf["image"][:, None] * z["image"])
    energy = {m: -torch.logsumexp(z[m], 1) for m in z}
    assert torch.equal(out.extras["conf_vector"] > out.extras["conf_image"], energy["vector"] < energy["image"])
    # lowering the image head's energy by 3 on every sample raises its weight by exactly 0.3
    with torch.no_grad():
        model.fusion.heads["image"].bias.add_(3.0)
        lowered = model(batch)
    torch.testing.assert_close(lowered.extras["conf_image"], out.extras["conf_image"] + 0.3)
    torch.testing.assert_close(lowered.extras["conf_vector"], out.extras["conf_vector"])


@pytest.mark.parametrize("detach", [True, False])
def test_confidence_is_detached_in_the_fusion_only_when_asked(data_dir, detach):
    _, model, batch, _ = _model(data_dir, detach_confidence=detach)
    out = model(batch)
    grad = torch.autograd.grad(F.cross_entropy(out.logits, batch.labels), out.extras["conf_vector"], allow_unused=True)[0]
    assert (grad is None) == detach


def _expected_rank_loss(conf, norm, gap_margin=False):
    total = 0.0
    n = len(conf)
    for i in range(n):
        j = (i + 1) % n
        t = (norm[i] > norm[j]) - (norm[i] < norm[j])
        delta = abs(norm[i] - norm[j])
        total += max(0.0, t * (conf[i] - conf[j]) + (delta if gap_margin else -delta))
    return total / n


def test_rank_loss_uses_the_global_history_and_penalises_contradicting_orderings():
    history = torch.tensor([0.0, 2.0, 6.0, 3.0, 5.0, 4.0], dtype=torch.float64)  # sample 0 not seen yet
    ids = torch.tensor([1, 2, 3, 4])
    conf = torch.tensor([0.1, 0.9, 0.2, 0.95], requires_grad=True)  # every pair contradicts its history
    norm = [2 / 6, 6 / 6, 3 / 6, 5 / 6]  # min 0 (the unseen sample), max 6 over the whole history
    loss = rank_loss(conf, ids, history)
    assert loss.item() == pytest.approx(_expected_rank_loss(conf.tolist(), norm))
    assert loss.item() == pytest.approx((0.8 - 2 / 3 + 0.7 - 1 / 2 + 0.75 - 1 / 3 + 0.85 - 1 / 2) / 4)
    batch_only = [(h - 2) / 4 for h in (2, 6, 3, 5)]  # what a batch min/max would give instead
    assert loss.item() != pytest.approx(_expected_rank_loss(conf.tolist(), batch_only))
    gap = rank_loss(conf, ids, history, margin="gap")
    assert gap.item() == pytest.approx(_expected_rank_loss(conf.tolist(), norm, gap_margin=True))
    # the gradient lowers the confidence of the sample with the larger loss history (id 2, conf 0.9)
    (grad,) = torch.autograd.grad(loss, conf)
    assert grad[1] > 0 and grad[0] < 0
    # orderings that agree with the history cost nothing; nothing to rank in an all-equal history
    agreeing = torch.tensor([0.9, 0.1, 0.8, 0.3])
    assert rank_loss(agreeing, ids, history).item() == 0.0
    assert rank_loss(agreeing, ids, torch.zeros(6, dtype=torch.float64)).item() == 0.0


def test_minimising_the_rank_loss_orders_confidences_against_the_loss_history():
    history = torch.arange(8, dtype=torch.float64)  # sample i has the i-th smallest loss history
    ids = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    conf = history[ids].float().clone().requires_grad_(True)  # confidence grows with the loss: all wrong
    opt = torch.optim.SGD([conf], lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        rank_loss(conf, ids, history, margin="gap").backward()
        opt.step()
    order = history[ids]
    pairs = [(i, (i + 1) % 8) for i in range(8)]
    assert all((conf[i] - conf[j]) * (order[i] - order[j]) < 0 for i, j in pairs)


@pytest.mark.parametrize("order", ["before", "after"])
def test_history_accumulates_each_samples_unimodal_loss_and_feeds_the_rank_loss(data_dir, order):
    method, model, batch, train = _model(data_dir, history_update=order, rank_weight=0.5)
    state = TrainState(train=train)
    y, ids = batch.labels, batch.ids
    for step in range(2):
        before = None if method.history is None else method.history.clone()
        out = model(batch)
        loss, logs = method.loss(model, batch, out, state)
        history = method.history
        assert history.shape == (len(train), 2)
        ce = {m: F.cross_entropy(z, y, reduction="none").detach().double() for m, z in out.unimodal_logits.items()}
        for j, m in enumerate(model.modalities):
            torch.testing.assert_close(history[ids, j], (step + 1) * ce[m])  # cumulative per sample, keyed by ids
            seen_by_rank = history[:, j] if order == "before" else before[:, j] if before is not None else None
            if seen_by_rank is None:  # RGB-D order, first batch: all-zero history, 0/0 -> zero loss
                assert logs[f"rank_loss_{m}"] == 0.0
            else:
                assert logs[f"rank_loss_{m}"] == pytest.approx(rank_loss(out.extras[f"conf_{m}"], ids, seen_by_rank).item())
        others = torch.ones(len(train), dtype=torch.bool)
        others[ids] = False
        assert (history[others] == 0).all()
        expected = (F.cross_entropy(out.logits, y) + sum(F.cross_entropy(z, y) for z in out.unimodal_logits.values())
                    + 0.5 * sum(logs[f"rank_loss_{m}"] for m in model.modalities))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_weight_moves_away_from_a_modality_whose_signal_is_destroyed(data_dir):
    _, model, test = train_small(data_dir, "qmf")
    clean, broken = extras(model, test), extras(model, signal_destroyed(test, "b"))
    assert broken["conf_b"].mean() < clean["conf_b"].mean()
    share = {k: (e["conf_b"] / (e["conf_a"] + e["conf_b"])).mean() for k, e in (("clean", clean), ("broken", broken))}
    assert share["broken"] < share["clean"]
