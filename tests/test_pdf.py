"""PDF mechanism: Mono-/Holo-Confidence and Co-Belief, the relative calibration at test time, the
ConfidNet regression target, and a corrupted modality losing fusion weight after training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.methods.base import TrainState
from mmbench.methods.pdf import co_belief, relative_calibration
from tests.conftest import tiny_method
from tests.robust_fusion_data import extras, signal_destroyed, train_small


def test_co_belief_is_mono_plus_holo_confidence():
    tcp = torch.tensor([[0.9, 0.2], [0.5, 0.5], [0.3, 0.6]])
    cb = co_belief(tcp)
    for i, (a, b) in enumerate(tcp.tolist()):
        both = math.log(a) + math.log(b) + 1e-8
        assert cb[i].tolist() == pytest.approx([a + math.log(b) / both, b + math.log(a) / both])
    # the modality predicted more certain of the true class gets the larger Co-Belief and weight
    w = F.softmax(cb, 1)
    assert w[0, 0] > w[0, 1] and w[2, 1] > w[2, 0] and w[1, 0] == pytest.approx(0.5)
    three = co_belief(torch.tensor([[0.9, 0.2, 0.4]]))  # Holo: the others' log-confidence share
    logs = torch.tensor([0.9, 0.2, 0.4]).log()
    torch.testing.assert_close(three[0], torch.tensor([0.9, 0.2, 0.4]) + (logs.sum() - logs) / (logs.sum() + 1e-8))


def test_relative_calibration_scales_only_the_less_certain_modality():
    certain = torch.tensor([0.85, 0.05, 0.05, 0.05])
    unsure = torch.tensor([0.4, 0.3, 0.2, 0.1])
    probs = torch.stack([torch.stack([certain, unsure]), torch.stack([unsure, certain])])  # [B=2, M=2, K=4]
    rc = relative_calibration(probs)
    du_certain, du_unsure = (certain - 0.25).abs().mean(), (unsure - 0.25).abs().mean()
    torch.testing.assert_close(rc, torch.tensor([[1.0, du_unsure / du_certain], [du_unsure / du_certain, 1.0]]))
    uniform = torch.full((1, 2, 4), 0.25)
    assert relative_calibration(uniform).tolist() == [[1.0, 1.0]]  # 0/0 in the release


def _model(data_dir, **params):
    method, model, batch, train = tiny_method("pdf", data_dir, n=16, **params)
    return method, model, batch, train


@pytest.mark.parametrize("sharpen", [False, True])
def test_calibration_lowers_the_less_certain_modalitys_weight(data_dir, sharpen):
    _, model, batch, _ = _model(data_dir)
    _, plain, _, _ = _model(data_dir, calibrate=False)
    mods = ["vector", "image"]
    with torch.no_grad():
        if sharpen:  # a confident image head: then the vector modality is the less certain one
            model.fusion.heads["image"].bias.copy_(torch.tensor([6.0, 0.0, 0.0]))
        plain.load_state_dict(model.state_dict())
        out, uncalibrated = model.eval()(batch), plain.eval()(batch)
        in_training = model.train()(batch)
    tcp = torch.stack([out.extras[f"tcp_{m}"] for m in mods], 1)
    weight = {k: torch.stack([o.extras[f"weight_{m}"] for m in mods], 1)
              for k, o in (("calibrated", out), ("plain", uncalibrated), ("train", in_training))}
    torch.testing.assert_close(weight["plain"], F.softmax(co_belief(tcp), 1))
    probs = torch.stack([F.softmax(out.unimodal_logits[m], 1) for m in mods], 1)
    unsure = (probs - 1 / probs.shape[2]).abs().mean(2).argmin(1)  # per sample, the modality nearer uniform
    assert (unsure == (0 if sharpen else 1)).all()
    rows = torch.arange(len(batch))
    assert (weight["calibrated"][rows, unsure] < weight["plain"][rows, unsure]).all()
    # training mode never calibrates
    tcp_train = torch.stack([in_training.extras[f"tcp_{m}"] for m in mods], 1)
    torch.testing.assert_close(weight["train"], F.softmax(co_belief(tcp_train), 1))


def test_loss_regresses_the_true_class_probability_on_detached_features(data_dir):
    method, model, batch, train = _model(data_dir, confidnet_weight_decay=0.0)
    out = model(batch)
    loss, logs = method.loss(model, batch, out, TrainState(train=train))
    y = batch.labels
    expected = F.cross_entropy(out.logits, y)
    for m, z in out.unimodal_logits.items():
        p_true = F.softmax(z, 1)[torch.arange(len(y)), y]
        expected = expected + F.cross_entropy(z, y) + (out.extras[f"tcp_{m}"] - p_true).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and logs["confidnet_decay"] == 0.0
    grads = torch.autograd.grad(loss, [*model.encoders["vector"].parameters(), model.fusion.confidnets["vector"][0].weight])
    # the ConfidNet learns; its loss alone reaches no encoder (features detached) and no weight's gradient
    tcp_only = torch.autograd.grad((out.extras["tcp_vector"] - 0.5).abs().mean(),
                                   list(model.encoders["vector"].parameters()), allow_unused=True)
    assert all(g is None for g in tcp_only) and grads[-1].abs().sum() > 0
    fused_only = torch.autograd.grad(F.cross_entropy(out.logits, y), model.fusion.confidnets["vector"][0].weight,
                                     allow_unused=True)[0]
    assert fused_only is None  # the fusion weights are detached


def test_weight_moves_away_from_a_modality_whose_signal_is_destroyed(data_dir):
    _, model, test = train_small(data_dir, "pdf", epochs=12)
    clean, broken = extras(model, test), extras(model, signal_destroyed(test, "b"))
    assert broken["tcp_b"].mean() < clean["tcp_b"].mean()
    assert broken["weight_b"].mean() < clean["weight_b"].mean()
    assert broken["weight_a"].mean() > clean["weight_a"].mean()
