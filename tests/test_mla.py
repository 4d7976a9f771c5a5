"""MLA mechanism: per batch, one step per modality through the shared head (only its encoder gets a
gradient), the head's weight gradient projected by the release's recursive projector, and test-time
fusion weights exp(max_j e_j - e_m) / sum from per-sample entropies. The equality with the official
code on identical tensors is in ``test_reference_mla.py``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig, OptimConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.models.multimodal import ModelSpec
from mmbench.training import Trainer


def _setup(data_dir, dataset="tiny3", **params):
    torch.manual_seed(0)
    train = load_split(dataset, "train", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("mla", params))
    return train, method, method.build_model(spec)


def test_each_batch_takes_one_step_per_modality_through_the_shared_head(data_dir):
    train, method, model = _setup(data_dir, projection="none")
    batch = train.index(slice(0, 32))
    names = list(train.modalities)
    assert method.steps_per_batch(model) == len(names)
    for step, current in enumerate(names):
        state = TrainState(step=step, substep=step, train=train, batch_size=32)
        out = method.forward(model, batch, state)
        loss, logs = method.loss(model, batch, out, state)
        model.zero_grad(set_to_none=True)
        loss.backward()
        expected = F.cross_entropy(model.fusion.linear(model.encoders[current](batch.inputs[current])), batch.labels)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        assert logs[f"trained_{current}"] == 1.0 and sum(logs[f"trained_{m}"] for m in names) == 1.0
        for m in names:
            has_grad = any(p.grad is not None for p in model.encoders[m].parameters())
            assert has_grad == (m == current), f"step {step}: encoder {m}"
        assert model.fusion.linear.weight.grad is not None
        with torch.no_grad():
            model.fusion.linear.weight.add_(1.0)  # an update between the steps: the next one must see it


def test_the_trainer_runs_the_encoders_once_per_batch_and_steps_once_per_modality(data_dir):
    train, method, model = _setup(data_dir, projection="none")
    train, val = train.index(slice(0, 64)), load_split("tiny3", "val", data_dir)
    calls = {m: 0 for m in train.modalities}
    for m, enc in model.encoders.items():
        enc.register_forward_hook(lambda mod, *_, m=m: calls.__setitem__(m, calls[m] + mod.training))
    trainer = Trainer(method, model, OptimConfig(epochs=1, batch_size=32, lr=0.05), torch.device("cpu"))
    trainer.fit(train, val)
    assert trainer.state.step == 2 * len(train.modalities)  # 2 batches x M steps
    assert method._features is None  # nothing kept between batches (checkpoints stay plain)
    assert calls == {m: 2 for m in train.modalities}  # training passes (evaluation runs in eval mode)


def _projector_update(p, r, a):
    """The release's recursion written out entry by entry: k = P r, P_ij - k_i k_j / (a + k_i r_j), then
    P / ||P||_F (the denominator is the outer product k r^T, divided elementwise)."""
    k = p @ r
    d = len(r)
    q = torch.stack([torch.stack([p[i, j] - k[i] * k[j] / (a + k[i] * r[j]) for j in range(d)]) for i in range(d)])
    return q / torch.sqrt((q ** 2).sum())


@pytest.mark.parametrize("projection", ["release", "balancemm", "none"])
def test_head_weight_gradient_follows_the_recursive_projector(data_dir, projection):
    train, method, model = _setup(data_dir, dataset="tiny", projection=projection)
    names = list(train.modalities)
    steps = math.ceil(len(train) / 32)
    p = torch.eye(8)
    for step in range(6):
        batch = train.index(slice(32 * (step // 2), 32 * (step // 2) + 32))
        state = TrainState(step=step, substep=step % 2, train=train, batch_size=32)
        out = method.forward(model, batch, state)
        loss, _ = method.loss(model, batch, out, state)
        model.zero_grad()
        loss.backward()
        raw_w, raw_b = model.fusion.linear.weight.grad.clone(), model.fusion.linear.bias.grad.clone()
        method.after_backward(model, batch, out, state)
        if step == 0 or projection == "none":  # the very first update is not projected
            torch.testing.assert_close(model.fusion.linear.weight.grad, raw_w)
            continue
        r = out.features[names[step % 2]].detach().mean(0)
        p = _projector_update(p, r, 0.1 ** (1 + (step // 2 % steps) / steps))
        expected = raw_w @ p.T if projection == "release" else raw_w + raw_w @ p.T
        torch.testing.assert_close(model.fusion.linear.weight.grad, expected, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(model.fusion.linear.bias.grad, raw_b)
    if projection != "none":
        assert not torch.allclose(p, p.T), "the elementwise division makes P asymmetric: P^T matters"
        torch.testing.assert_close(method.projector, p, rtol=1e-4, atol=1e-7)


def test_test_time_fusion_weights_follow_the_entropies(data_dir):
    train, method, model = _setup(data_dir)
    with torch.no_grad():
        model.fusion.linear.weight.mul_(100)  # confident predictions...
    model.eval()
    batch = load_split("tiny3", "test", data_dir)
    # ...except for "sequence", whose features are zeroed: near-uniform, maximal entropy
    out = model(batch, feature_hook=lambda m, f: f * 0 if m == "sequence" else f)
    z = out.unimodal_logits
    entropy = {m: -(F.softmax(v, 1) * torch.log(F.softmax(v, 1))).sum(1) for m, v in z.items()}
    top = torch.stack(list(entropy.values())).max(0).values
    raw = {m: torch.exp(top - e) for m, e in entropy.items()}
    weights = {m: w / sum(raw.values()) for m, w in raw.items()}
    for m in z:
        torch.testing.assert_close(out.extras[f"weight_{m}"], weights[m])
    torch.testing.assert_close(out.logits, sum(weights[m][:, None] * z[m] for m in z))
    # the most certain modality weighs most and the uncertain one least, sample by sample
    h = torch.stack([entropy[m] for m in z])
    w = torch.stack([weights[m] for m in z])
    assert torch.equal(h.argmin(0), w.argmax(0)) and torch.equal(h.argmax(0), w.argmin(0))
    assert (w[list(z).index("sequence")] < 0.25).all()
    # the method's test-time prediction is the model's fusion; one present modality is its own prediction
    torch.testing.assert_close(method.predict(model, batch).logits, model(batch).logits)
    only = model(batch, mask=[m for m in z if m != "image"])
    torch.testing.assert_close(only.logits, only.unimodal_logits["image"])


def test_mean_fusion_averages_the_head_outputs(data_dir):
    train, method, model = _setup(data_dir, fusion="mean")
    out = model.eval()(train.index(slice(0, 10)))
    torch.testing.assert_close(out.logits, torch.stack(list(out.unimodal_logits.values())).mean(0))


def test_alternation_is_logged_per_epoch(make_cfg):
    from mmbench.run import train_run

    folder, _ = train_run(make_cfg("mla"))
    m = folder.read_metrics()
    assert (m["trained_vector"] + m["trained_image"]).to_numpy() == pytest.approx([1.0, 1.0])
    assert m["trained_vector"].to_numpy() == pytest.approx([0.5, 0.5])  # 6 batches per epoch
