"""Sample-level modality valuation: per-sample Shapley contributions, copies of the weakly
contributing modality (1/2/3 by the release's bounds), and a loss over originals plus copies."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.sample import modality_copies, sample_copies, shapley_contributions
from mmbench.models.multimodal import ModelSpec
from mmbench.run import train_run
from mmbench.testing import assert_same_run
from tests.test_resume import FAST, Stop, stop_after


def test_two_modality_contributions_are_the_release_formula():
    cases = list(itertools.product([False, True], repeat=3))  # (fused right, audio alone right, visual alone right)
    right = torch.tensor(cases)
    correct = {frozenset({"a", "v"}): right[:, 0], frozenset({"a"}): right[:, 1], frozenset({"v"}): right[:, 2]}
    phi = shapley_contributions(correct, ["a", "v"])
    for k, (all_, a, v) in enumerate(cases):  # sample_level.py: (value_a + value_all - value_v) / 2, value_all = 2
        assert phi[k].tolist() == [(a + 2 * all_ - v) / 2, (v + 2 * all_ - a) / 2]
    # BalanceMM's valuation: v(S) = 1 when right
    phi = shapley_contributions(correct, ["a", "v"], value="shapley")
    for k, (all_, a, v) in enumerate(cases):
        assert phi[k].tolist() == [(a + all_ - v) / 2, (v + all_ - a) / 2]


def test_shapley_values_are_efficient_for_three_modalities():
    gen = torch.Generator().manual_seed(0)
    mods = ["a", "b", "c"]
    coalitions = [frozenset(s) for r in (1, 2, 3) for s in itertools.combinations(mods, r)]
    correct = {s: torch.rand(50, generator=gen) > 0.5 for s in coalitions}
    for value, scale in (("release", 3.0), ("shapley", 1.0)):
        phi = shapley_contributions(correct, mods, value)
        torch.testing.assert_close(phi.sum(1), correct[frozenset(mods)].float() * scale)  # sum = v(all) - v(empty)


def test_copies_follow_the_release_bounds():
    phi = torch.tensor([[-0.5, 0.0], [0.5, 1.0], [1.5, 0.4], [-0.1, 0.39]])
    assert sample_copies(phi).tolist() == [[3, 2], [1, 0], [0, 0], [0, 2]]


def test_modality_level_copies_go_to_the_larger_gap():
    phi = torch.cat([torch.full((1000, 1), 1.0), torch.full((1000, 1), 0.25)], 1)  # gaps 0 and 0.75
    copies, difference = modality_copies(phi, 0.2, 1.0, torch.Generator().manual_seed(0))
    assert difference == pytest.approx(0.75 * 2 / 3)
    assert copies[:, 0].sum() == 0 and copies[:, 1].sum() == int(difference * 1000)


def _trained(data_dir, **params):
    torch.manual_seed(0)
    data = load_split("tiny", "train", data_dir)
    spec = ModelSpec(data.meta.modalities, data.meta.num_classes, ModelConfig(hidden_dim=32, feature_dim=16))
    method = build_method(MethodConfig("sample", params))
    model = method.build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        F.cross_entropy(model(data).logits, data.labels).backward()
        opt.step()
    return data, method, model


def test_epoch_end_values_every_training_sample_by_masked_predictions(data_dir):
    data, method, model = _trained(data_dir, warmup=1)
    state = TrainState(epoch=0, model=model, train=data, batch_size=32)
    method.on_epoch_end(state)
    model.eval()
    with torch.no_grad():  # independent path: the model's own masking, whole split at once
        full = model(data).logits.argmax(1) == data.labels
        alone = {m: model(data, mask=[o for o in data.modalities if o != m]).logits.argmax(1) == data.labels
                 for m in data.modalities}
    a, v = data.modalities
    phi_a = (alone[a].float() + 2 * full.float() - alone[v].float()) / 2
    phi_v = (alone[v].float() + 2 * full.float() - alone[a].float()) / 2
    expected = sample_copies(torch.stack([phi_a, phi_v], 1))
    assert torch.equal(method.copies, expected)
    assert method.copies.sum() > 0 and state.epoch_logs[f"contribution_{a}"] == pytest.approx(phi_a.mean().item())


def test_loss_is_the_mean_over_originals_and_their_copies(data_dir):
    data, method, model = _trained(data_dir, warmup=0)
    batch = data.index(slice(0, 24))
    batch.ids = torch.arange(24)
    gen = torch.Generator().manual_seed(1)
    method.copies = torch.randint(0, 4, (len(data), 2), generator=gen)
    out = model(batch)
    loss, logs = method.loss(model, batch, out, TrainState(epoch=1))
    # the release's way: append the copies to the batch, the other modality's features zeroed
    feats = {m: [out.features[m]] for m in data.modalities}
    labels = [batch.labels]
    for j, m in enumerate(data.modalities):
        rows = torch.repeat_interleave(torch.arange(24), method.copies[:24, j])
        for o in data.modalities:
            f = out.features[o][rows]
            feats[o].append(f if o == m else torch.zeros_like(f))
        labels.append(batch.labels[rows])
    logits, _ = model.fuse({m: torch.cat(f) for m, f in feats.items()})
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.cat(labels)))
    assert logs["copies"] == pytest.approx(method.copies[:24].sum().item() / 24)
    # during the warm-up: plain fused cross-entropy
    plain, _ = method.loss(model, batch, out, TrainState(epoch=0))
    method_warm = build_method(MethodConfig("sample", {"warmup": 5}))
    method_warm.copies = method.copies
    torch.testing.assert_close(method_warm.loss(model, batch, out, TrainState(epoch=4))[0],
                               F.cross_entropy(out.logits, batch.labels))


@pytest.mark.parametrize("level", ["sample", "modality"])
def test_training_with_copies_resumes_identically(level, make_cfg, tmp_path):
    sets = FAST + ["method.warmup=1", f"method.level={level}"]
    full, _ = train_run(make_cfg("sample", epochs=3, sets=sets))
    metrics = full.read_metrics()
    assert metrics["copies"].iloc[1:].notna().all()  # the copies' loss ran from the epoch after the warm-up
    if level == "sample":
        assert metrics["copies"].iloc[1:].gt(0).all()
    cfg = make_cfg("sample", epochs=3, sets=sets)
    cfg.output.results_dir = str(tmp_path / "resumed")
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(1))
    resumed, _ = train_run(cfg, resume=True)
    assert_same_run(full, resumed)
