"""G-Blending mechanism: each head's loss weight is |G| / O^2 of its measured train/val losses over the
last super-epoch, normalised; equal weights before the first measurement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.gblending import blend_weights
from mmbench.models.multimodal import ModelSpec


def test_blend_weights_from_hand_computed_ratios():
    before = {"fused": (1.0, 1.2), "a": (1.1, 1.3), "b": (1.05, 1.2)}  # (train, val) mean losses
    after = {"fused": (0.5, 0.9), "a": (0.4, 1.2), "b": (0.95, 1.3)}
    # G = val before - val after; O = (val - train) after - (val - train) before
    g = {"fused": 0.3, "a": 0.1, "b": -0.1}
    o = {"fused": 0.4 - 0.2, "a": 0.8 - 0.2, "b": 0.35 - 0.15}
    weights, gain, overfit = blend_weights(before, after)
    assert gain == pytest.approx(g) and overfit == pytest.approx(o)
    raw = {"fused": 0.3 / 0.04, "a": 0.1 / 0.36, "b": 0.1 / 0.04}  # |G| / O^2
    assert weights == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()})
    # same gain, twice the overfitting: a quarter of the raw weight
    w2, _, _ = blend_weights({"x": (1.0, 1.0), "y": (1.0, 1.0)}, {"x": (0.6, 0.8), "y": (0.4, 0.8)})
    assert w2 == pytest.approx({"x": 0.8, "y": 0.2})
    # no head generalised at all: no weights (the previous ones are kept)
    assert blend_weights({"x": (1.0, 1.0)}, {"x": (0.5, 1.0)})[0] == {}


def _losses(model, data):
    """Mean cross-entropy of the fused head and each unimodal head, eval mode."""
    model.eval()
    with torch.no_grad():
        out = model(data)
    model.train()
    heads = {"fused": out.logits, **out.unimodal_logits}
    return {k: F.cross_entropy(z, data.labels).item() for k, z in heads.items()}


def test_weights_follow_the_measured_generalisation_and_overfitting(data_dir):
    torch.manual_seed(0)
    train, val = load_split("tiny", "train", data_dir), load_split("tiny", "val", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("gblending", {"super_epoch": 3}))
    model = method.build_model(spec)
    state = TrainState(epoch=0, model=model, train=train, val=val, batch_size=32)

    batch = train.index(slice(0, 32))
    out = model(batch)
    loss, logs = method.loss(model, batch, out, state)
    assert logs["w_fused"] == logs["w_vector"] == logs["w_image"] == pytest.approx(1 / 3)

    start = {"train": _losses(model, train), "val": _losses(model, val)}
    method.on_epoch_start(state)  # epoch 0: measures only
    assert method.weights is None and model.training
    # some training (on a subset, so the heads generalise and overfit differently)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(30):
        opt.zero_grad()
        out = model(train.index(slice(0, 40)))
        (F.cross_entropy(out.logits, train.labels[:40])
         + sum(F.cross_entropy(z, train.labels[:40]) for z in out.unimodal_logits.values())).backward()
        opt.step()
    state.epoch = 2
    method.on_epoch_start(state)  # not a super-epoch boundary: nothing changes
    assert method.weights is None
    end = {"train": _losses(model, train), "val": _losses(model, val)}
    state.epoch = 3
    method.on_epoch_start(state)

    raw = {}
    for k in ("fused", "vector", "image"):
        gain = start["val"][k] - end["val"][k]
        overfit = (end["val"][k] - end["train"][k]) - (start["val"][k] - start["train"][k])
        assert state.epoch_logs[f"G_{k}"] == pytest.approx(gain, abs=1e-5)
        assert state.epoch_logs[f"O_{k}"] == pytest.approx(overfit, abs=1e-5)
        raw[k] = abs(gain) / overfit ** 2
    expected = {k: v / sum(raw.values()) for k, v in raw.items()}
    assert method.weights == pytest.approx(expected, rel=1e-3)
    assert len(set(round(w, 3) for w in expected.values())) == 3, "the heads must get different weights"

    out = model(batch)
    loss, logs = method.loss(model, batch, out, state)
    manual = (expected["fused"] * F.cross_entropy(out.logits, batch.labels)
              + sum(expected[m] * F.cross_entropy(z, batch.labels) for m, z in out.unimodal_logits.items()))
    assert loss.item() == pytest.approx(manual.item(), rel=1e-3)
    assert logs["w_vector"] == pytest.approx(expected["vector"], rel=1e-3)


def test_logged_weights_are_normalised_g_over_o_squared(make_cfg):
    from mmbench.training import train_run

    folder, _ = train_run(make_cfg("gblending", epochs=3, sets=["method.super_epoch=1"]))
    m = folder.read_metrics()
    heads = ("fused", "vector", "image")
    assert m[[f"w_{k}" for k in heads]].sum(axis=1).to_numpy() == pytest.approx([1, 1, 1])
    assert m.loc[0, "w_fused"] == pytest.approx(1 / 3)
    for epoch in (1, 2):  # weights used in epoch e were set from the G, O measured at its start
        raw = {k: abs(m.loc[epoch, f"G_{k}"]) / m.loc[epoch, f"O_{k}"] ** 2 for k in heads}
        for k in heads:
            assert m.loc[epoch, f"w_{k}"] == pytest.approx(raw[k] / sum(raw.values()), rel=1e-4)
