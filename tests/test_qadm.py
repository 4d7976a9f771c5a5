"""QADM mechanism (reconstructed): classifier-free quality from noise-free prototypes, globally normalised
per-sample depth, layer-wise predicted parameters, and a noised modality that gets a lower quality, a
deeper network and a lower fusion weight."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import build_method
from mmbench.methods.qadm import QADMBranch, gcnd_depth
from mmbench.models.fusion import PrototypeBank
from mmbench.models.multimodal import ModelSpec
from tests.robust_fusion_data import extras, noised, train_small


def test_prototypes_are_weighted_class_means_moved_by_the_momentum():
    bank = PrototypeBank(num_classes=2, dim=1)
    bank.update(torch.tensor([[1.0], [3.0], [10.0]]), torch.tensor([0, 0, 1]), 0.1, torch.tensor([0.25, 0.75, 1.0]))
    torch.testing.assert_close(bank.protos, torch.tensor([[2.5], [10.0]]))  # the first batch sets them
    torch.testing.assert_close(bank.var, torch.tensor([[0.75], [0.0]]))  # 0.25 * 1 + 0.75 * 9 - 2.5^2
    bank.update(torch.tensor([[0.5]]), torch.tensor([0]), 0.1)
    torch.testing.assert_close(bank.protos, torch.tensor([[0.9 * 2.5 + 0.1 * 0.5], [10.0]]))
    assert torch.isinf(PrototypeBank(3, 1).sq_distances(torch.zeros(2, 1))).all()  # nothing seen yet


def test_quality_is_classifier_free_and_falls_far_from_every_prototype():
    branch = QADMBranch(dim=2, num_classes=2, num_layers=2)
    branch.banks[0].update(torch.tensor([[0.0, 0.0], [3.0, 0.0]]), torch.tensor([0, 1]), 0.1)
    branch.spread.fill_(2.0)
    h = torch.tensor([[1.0, 0.0], [3.0, 4.0]])  # nearest squared distances 1 and 16
    torch.testing.assert_close(branch.log_quality(h), torch.tensor([-1 / 4, -16 / 4]))


def test_depth_is_deeper_for_lower_normalised_confidence():
    q = torch.tensor([0.9, 0.5, 0.1])
    depth = gcnd_depth(q, torch.tensor(0.5), torch.tensor(0.2), num_layers=4, min_depth=1)
    expected = [min(max(math.ceil(4 * (1 - 1 / (1 + math.exp(-(v - 0.5) / 0.2)))), 1), 4) for v in (0.9, 0.5, 0.1)]
    assert depth.tolist() == expected == [1, 2, 4]


def _untrained(data_dir, num_layers=3):
    torch.manual_seed(0)
    batch = load_split("tiny", "train", data_dir).index(slice(0, 16))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("qadm", {"num_layers": num_layers}))
    return method.build_model(spec), batch


def test_blocks_beyond_a_samples_depth_are_skipped(data_dir):
    model, batch = _untrained(data_dir, num_layers=3)
    branch = model.fusion.branches["vector"]
    h = model.encoders["vector"](batch.inputs["vector"]).detach()
    depth = torch.tensor([0.0, 1.0, 2.0, 3.0]).repeat(4)
    q_other = torch.rand(16)
    before, _, _ = branch.run(h, depth, q_other)
    with torch.no_grad():
        branch.blocks[2].weight.add_(1.0)  # only samples of depth 3 use the third block
    after, _, _ = branch.run(h, depth, q_other)
    deep = depth == 3
    torch.testing.assert_close(after[~deep], before[~deep])
    assert not torch.allclose(after[deep], before[deep])
    torch.testing.assert_close(before[depth == 0], h[depth == 0])  # depth 0: the encoder's features


def test_parameters_are_predicted_from_informativeness_and_the_other_modalitys_quality(data_dir):
    model, batch = _untrained(data_dir)
    branch = model.fusion.branches["vector"]
    h = model.encoders["vector"](batch.inputs["vector"]).detach()
    depth = torch.full((16,), 3.0)
    # zero-initialised hypernetworks: gamma = 1, beta = 0, plain residual blocks
    out, _, _ = branch.run(h, depth, torch.rand(16))
    expected = h
    for block in branch.blocks:
        expected = expected + torch.relu(block(expected))
    torch.testing.assert_close(out, expected)
    # once trained (here: set), the other modality's quality changes this modality's parameters
    with torch.no_grad():
        for hyper in branch.hypers:
            hyper.weight.normal_(0, 0.5)
    low, _, _ = branch.run(h, depth, torch.full((16,), 0.1))
    high, _, _ = branch.run(h, depth, torch.full((16,), 0.9))
    assert not torch.allclose(low, high)


@pytest.fixture(scope="module")
def trained(data_dir):
    _, model, test = train_small(data_dir, "qadm")
    return model, test


def test_extras_follow_quality_depth_and_weight_rules(trained):
    model, test = trained
    with torch.no_grad():
        out = model(test)
    br = model.fusion.branches
    for m in "ab":
        h = out.features[m]
        q = br[m].log_quality(h).exp()
        torch.testing.assert_close(out.extras[f"quality_{m}"], q)
        depth = gcnd_depth(q, br[m].q_mean, br[m].q_var.sqrt(), 3, 1)
        torch.testing.assert_close(out.extras[f"depth_{m}"], depth)
    q = torch.stack([out.extras["quality_a"], out.extras["quality_b"]])
    torch.testing.assert_close(out.extras["weight_a"], (q / q.sum(0))[0])  # softmax of log q
    torch.testing.assert_close(out.logits, out.extras["weight_a"][:, None] * out.unimodal_logits["a"]
                               + out.extras["weight_b"][:, None] * out.unimodal_logits["b"])


def test_noised_modality_gets_lower_quality_more_depth_and_less_weight(trained):
    model, test = trained
    runs = [extras(model, noised(test, "b", level)) for level in (0, 1, 2, 4)]
    quality = [r["quality_b"].mean().item() for r in runs]
    depth = [r["depth_b"].mean().item() for r in runs]
    weight = [r["weight_b"].mean().item() for r in runs]
    assert quality == sorted(quality, reverse=True) and quality[-1] < 0.5 * quality[0]
    assert depth == sorted(depth) and depth[-1] > depth[0]
    assert weight == sorted(weight, reverse=True) and weight[-1] < weight[0] - 0.1
    torch.testing.assert_close(runs[-1]["quality_a"], runs[0]["quality_a"])  # the clean modality's quality
    torch.testing.assert_close(runs[-1]["depth_a"], runs[0]["depth_a"])
