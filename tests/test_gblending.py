"""G-Blending mechanism: each head's loss weight is |G| / O^2 of its measured train/held-out losses over a
super-epoch, normalised. Default estimator: a copy per head trained on train minus a held-out share;
``trajectory``: the blended run's own losses on train/val, equal weights before the first measurement."""

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


def test_trajectory_weights_follow_the_measured_generalisation_and_overfitting(data_dir):
    torch.manual_seed(0)
    train, val = load_split("tiny", "train", data_dir), load_split("tiny", "val", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("gblending", {"super_epoch": 3, "estimator": "trajectory"}))
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


def test_heldout_estimate_trains_a_copy_per_head_and_leaves_the_run_model_alone(data_dir):
    torch.manual_seed(0)
    data = load_split("tiny", "train", data_dir)
    cut = len(data) * 3 // 4
    train, holdout = data.index(slice(0, cut)), data.index(slice(cut, None))
    spec = ModelSpec(data.meta.modalities, data.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("gblending", {"super_epoch": 2}))
    assert method.holdout_fraction() == 0.08
    model = method.build_model(spec)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def fit_copy(copy, loss_fn, on, epochs):  # the trainer's role: some SGD steps on the copy
        assert copy is not model and on is train
        opt = torch.optim.SGD(copy.parameters(), lr=0.3)
        for _ in range(10 * epochs):
            opt.zero_grad()
            loss_fn(copy, train.index(slice(0, 30))).backward()  # a small subset: the copy overfits
            opt.step()
        calls.append((copy, epochs))

    state = TrainState(epoch=0, model=model, train=train, holdout=holdout, batch_size=32, fit_copy=fit_copy)
    method.on_epoch_start(state)
    assert [e for _, e in calls] == [2, 2, 2]
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items()), "the run's model changed"
    raw = {}
    for (copy, _), head in zip(calls, ["vector", "image", "fused"]):
        if head != "fused":  # a unimodal copy trained its own encoder and head only
            other = ({"vector", "image"} - {head}).pop()
            assert all(torch.equal(p, q) for p, q in zip(copy.encoders[other].parameters(),
                                                         model.encoders[other].parameters()))
        before = (_losses(model, train)[head], _losses(model, holdout)[head])
        after = (_losses(copy, train)[head], _losses(copy, holdout)[head])
        gain, overfit = before[1] - after[1], (after[1] - after[0]) - (before[1] - before[0])
        assert state.epoch_logs[f"G_{head}"] == pytest.approx(gain, abs=1e-5)
        assert state.epoch_logs[f"O_{head}"] == pytest.approx(overfit, abs=1e-5)
        raw[head] = abs(gain) / overfit ** 2
    assert method.weights == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()}, rel=1e-3)
    calls.clear()
    state.epoch = 1  # not a super-epoch boundary
    method.on_epoch_start(state)
    assert not calls


def test_trainer_keeps_a_stratified_holdout_out_of_training(make_cfg):
    from mmbench.run import load_run_data
    from mmbench.training import Trainer

    cfg = make_cfg("gblending", epochs=1, sets=["method.super_epoch=1", "method.holdout=0.25"])
    data = load_run_data(cfg)
    method = build_method(cfg.method)
    spec = ModelSpec(data["train"].meta.modalities, data["train"].meta.num_classes, cfg.model)
    trainer = Trainer(method, method.build_model(spec), cfg.optim, torch.device("cpu"), seed=0)
    seen = []
    original = trainer.state.fit_copy
    trainer.state.fit_copy = lambda m, f, on, e: (seen.append(on), original(m, f, on, e))
    trainer.fit(data["train"], data["val"])
    train, holdout = trainer.state.train, trainer.state.holdout
    n = len(data["train"])
    assert len(train) + len(holdout) == n
    counts = torch.bincount(data["train"].labels)  # each class its share (rounded)
    assert torch.bincount(holdout.labels, minlength=len(counts)).tolist() == (counts * 0.25).round().long().tolist()
    rows = {tuple(r.tolist()) for r in data["train"].inputs["vector"]}
    held = {tuple(r.tolist()) for r in holdout.inputs["vector"]}
    assert held <= rows and not held & {tuple(r.tolist()) for r in train.inputs["vector"]}
    assert len(seen) == 3 and all(on is train for on in seen)  # copies train on the kept part only
    assert trainer.state.true_class_prob.shape[0] == len(train)


@pytest.mark.parametrize("estimator", ["heldout", "trajectory"])
def test_logged_weights_are_normalised_g_over_o_squared(make_cfg, estimator):
    from mmbench.run import train_run

    folder, _ = train_run(make_cfg("gblending", epochs=3, sets=["method.super_epoch=1",
                                                                f"method.estimator={estimator}"]))
    m = folder.read_metrics()
    heads = ("fused", "vector", "image")
    assert m[[f"w_{k}" for k in heads]].sum(axis=1).to_numpy() == pytest.approx([1, 1, 1])
    first = 0 if estimator == "heldout" else 1  # the trajectory estimator starts with equal weights
    if first:
        assert m.loc[0, "w_fused"] == pytest.approx(1 / 3)
    for epoch in range(first, 3):  # weights used in epoch e were set from the G, O measured at its start
        raw = {k: abs(m.loc[epoch, f"G_{k}"]) / m.loc[epoch, f"O_{k}"] ** 2 for k in heads}
        for k in heads:
            assert m.loc[epoch, f"w_{k}"] == pytest.approx(raw[k] / sum(raw.values()), rel=1e-4)


def _multibench_gradient_blend():
    """MultiBench's ``training_structures/gradient_blend.py`` with its unused imports stubbed."""
    import types

    from tests.reference import load_module

    stubs = {"eval_scripts": types.ModuleType("eval_scripts")}
    for name, attrs in {"performance": ("AUPRC", "f1_score", "accuracy"),
                        "complexity": ("all_in_one_train", "all_in_one_test"),
                        "robustness": ("relative_robustness", "effective_robustness", "single_plot")}.items():
        module = types.ModuleType(f"eval_scripts.{name}")
        for attr in attrs:
            setattr(module, attr, None)
        stubs[f"eval_scripts.{name}"] = module
    return load_module("MultiBench", "training_structures/gradient_blend.py", stubs)


def test_weights_equal_multibench_gb_estimate_on_identical_models_and_data(monkeypatch):
    """Differential check: MultiBench's ``gb_estimate`` (``delta=True``, the paper's G and O) trains its
    copies; mmbench's ``head_loss`` and ``blend_weights`` on the same copies give the same weights."""
    import copy

    from torch import nn

    from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
    from mmbench.methods.gblending import blend_weights, head_loss

    gb = _multibench_gradient_blend()
    monkeypatch.setattr(gb, "delta", True)
    torch.manual_seed(0)
    n, names = 96, ["a", "b"]
    labels = torch.arange(n) % 3
    inputs = {"a": torch.randn(n, 6) + labels[:, None], "b": torch.randn(n, 4) + 0.3 * labels[:, None]}
    specs = {m: ModalitySpec(m, "vector", (x.shape[1],)) for m, x in inputs.items()}
    data = MultimodalData(inputs, labels, DatasetMeta("d", "test", ("x", "y", "z"), specs, {"train": n}))
    train, held = data.index(slice(0, 72)), data.index(slice(72, None))
    spec = ModelSpec(specs, 3, ModelConfig(hidden_dim=16, feature_dim=8, dropout=0.0))
    model = build_method(MethodConfig("gblending")).build_model(spec)

    class Fuse(nn.Module):  # MultiBench's fuse(list of features) followed by an identity head
        def __init__(self, fusion):
            super().__init__()
            self.fusion = fusion

        def forward(self, outs):
            return self.fusion(dict(zip(names, outs)), names)[0]

    trained = {}
    train_unimodal, train_multimodal = gb.train_unimodal, gb.train_multimodal

    def keep_unimodal(enc, head, optim, trains, valids, monum, *args):
        trained[names[monum]] = (enc, head)
        return train_unimodal(enc, head, optim, trains, valids, monum, *args)

    def keep_multimodal(encs, head, fuse, *args):
        trained["fused"] = (encs, fuse)
        return train_multimodal(encs, head, fuse, *args)

    monkeypatch.setattr(gb, "train_unimodal", keep_unimodal)
    monkeypatch.setattr(gb, "train_multimodal", keep_multimodal)
    loader = [(train.inputs["a"][i:i + 16], train.inputs["b"][i:i + 16], train.labels[i:i + 16]) for i in range(0, 72, 16)]
    valid = [(held.inputs["a"], held.inputs["b"], held.labels)]
    official = gb.gb_estimate([model.encoders[m] for m in names], nn.Identity(), Fuse(model.fusion),
                              [model.heads[m] for m in names], loader, 3, 16, valid, lr=0.2)

    before, after = {}, {}
    for head in [*names, "fused"]:
        copied = copy.deepcopy(model)
        if head == "fused":
            encs, fuse = trained["fused"]
            copied.encoders = nn.ModuleDict(dict(zip(names, encs)))
            copied.fusion = fuse.fusion
        else:
            copied.encoders[head], copied.heads[head] = trained[head]
        before[head] = (head_loss(model, head, train, 16), head_loss(model, head, held, 16))
        after[head] = (head_loss(copied, head, train, 16), head_loss(copied, head, held, 16))
    weights, _, _ = blend_weights(before, after)
    assert len(set(round(w, 3) for w in official)) == 3, "the heads must get different weights"
    ours = [weights[k] for k in [*names, "fused"]]  # MultiBench's order: unimodal heads, then the fused one
    assert max(abs(o - t) for o, t in zip(official, ours)) < 1e-4, (official, ours)
