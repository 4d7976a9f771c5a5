"""ReconBoost mechanism: during a stage's boosting phase only that modality's learner (its encoder and
the shared head) changes; its loss is the weighted cross-entropy with the reconcilement term against
the other learners' ensemble plus memory consolidation; rectification then trains the whole ensemble."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig, OptimConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.models.multimodal import ModelSpec
from mmbench.training import Trainer


def _setup(data_dir, dataset, **params):
    torch.manual_seed(0)
    train = load_split(dataset, "train", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("reconboost", params))
    return train, method, method.build_model(spec)


def _groups(model) -> dict[str, list[torch.Tensor]]:
    groups: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:2])  # encoders.<m>, fusion.head, fusion.boost_rate
        groups.setdefault(key, []).append(p.detach().clone())
    return groups


def test_one_modality_learner_per_stage_then_rectification(data_dir):
    train, method, model = _setup(data_dir, "tiny3", epochs_per_stage=1, correct_epoch=1)
    train, val = train.index(slice(0, 64)), load_split("tiny3", "val", data_dir)
    a, b, c = (f"encoders.{m}" for m in train.modalities)
    snapshots = [_groups(model)]
    trainer = Trainer(method, model, OptimConfig(epochs=4, batch_size=32, lr=0.05), torch.device("cpu"),
                      progress=lambda *_: snapshots.append(_groups(model)))
    result = trainer.fit(train, val)
    # epoch 0 boosts the first learner, 1 rectifies {a}, 2 boosts the second, 3 rectifies {a, b}
    head, rate = "fusion.head", "fusion.boost_rate"
    expected = [{a, head}, {a, head, rate}, {b, head}, {a, b, head, rate}]
    for epoch, changed in enumerate(expected):
        before, after = snapshots[epoch], snapshots[epoch + 1]
        moved = {k for k in before if any(not torch.equal(x, y) for x, y in zip(before[k], after[k]))}
        assert moved == changed, f"epoch {epoch}"
    assert c in snapshots[0]  # the third learner never trained: its stage comes later
    rows = result.history
    assert [r["stage"] for r in rows] == [0, 0, 1, 1]
    assert [r["rectify"] for r in rows] == [0, 1, 0, 1]
    assert [r[f"trained_{train.modalities[1]}"] for r in rows] == [0, 0, 1, 1]


def _expected_boost(z, others, labels, w1, w2):
    k = z.shape[1]
    log_p = torch.log(F.softmax(z, 1)[torch.arange(len(labels)), labels])
    q = torch.ones_like(log_p) if others is None else F.softmax(others, 1)[torch.arange(len(labels)), labels]
    return (-w1 * log_p / k + w2 * q * log_p / k).mean()


@pytest.mark.parametrize("consolidation", ["current", "release"])
def test_boosting_loss_and_consolidation_follow_the_formula(data_dir, consolidation):
    train, method, model = _setup(data_dir, "tiny", consolidation=consolidation, weight1=5.0, weight2=1.0,
                                  alpha=0.5, epochs_per_stage=2, correct_epoch=1)
    first, second = train.modalities
    batch = train.index(slice(0, 40))
    with torch.no_grad():
        model.fusion.boost_rate.fill_(0.7)

    # stage 0 (first modality), nobody else trained yet: q_y = 1, no consolidation term
    state = TrainState(epoch=0, model=model)
    method.on_epoch_start(state)
    out = model(batch)
    loss, logs = method.loss(model, batch, out, state)
    z = out.unimodal_logits[first]
    assert loss.item() == pytest.approx(_expected_boost(z, None, batch.labels, 5.0, 1.0).item(), rel=1e-5)
    assert "loss_consolidation" not in logs

    # stage 1 (second modality, epoch 3): reconciled against boost_rate * f_first, consolidated to it
    state = TrainState(epoch=3, model=model)
    method.on_epoch_start(state)
    out = model(batch)
    loss, logs = method.loss(model, batch, out, state)
    z, prev = out.unimodal_logits[second], out.unimodal_logits[first]
    boost = _expected_boost(z, 0.7 * prev.detach(), batch.labels, 5.0, 1.0)
    mse = ((F.softmax(z, 1) - F.softmax(prev.detach(), 1)) ** 2).mean()
    assert loss.item() == pytest.approx((boost + 0.5 * mse).item(), rel=1e-5)
    assert logs["loss_consolidation"] == pytest.approx(mse.item(), rel=1e-5)

    # the gradient: through the current learner only; the consolidation term is inert in the release
    params = list(model.encoders[second].parameters()) + list(model.fusion.head.parameters())
    got = torch.autograd.grad(loss, params, retain_graph=True)
    want = torch.autograd.grad(boost + 0.5 * mse if consolidation == "current" else boost, params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in model.encoders[first].parameters())


def test_rectification_is_cross_entropy_of_the_scaled_ensemble(data_dir):
    train, method, model = _setup(data_dir, "tiny", epochs_per_stage=1, correct_epoch=1)
    batch = train.index(slice(0, 40))
    state = TrainState(epoch=3, model=model)  # stage 1, rectification: both learners active
    method.on_epoch_start(state)
    out = model(batch)
    loss, logs = method.loss(model, batch, out, state)
    learners = [model.fusion.head(model.encoders[m](batch.inputs[m])) for m in train.modalities]
    ensemble = model.fusion.boost_rate * sum(learners)
    assert logs["rectify"] == 1.0
    assert loss.item() == pytest.approx(F.cross_entropy(ensemble, batch.labels).item(), rel=1e-5)


def test_defaults_follow_the_release_and_each_phase_starts_a_fresh_optimiser(data_dir):
    train, method, model = _setup(data_dir, "tiny", epochs_per_stage=2, correct_epoch=1)
    assert build_method(MethodConfig("reconboost")).params.consolidation == "release"
    resets = []
    for epoch in range(6):  # stage 0: boost, boost, rectify; stage 1: the same
        state = TrainState(epoch=epoch, model=model)
        method.on_epoch_start(state)
        resets.append(state.reset_optimizer)
    assert resets == [True, False, True, True, False, True]
