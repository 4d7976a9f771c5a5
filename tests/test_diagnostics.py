"""Imbalance diagnostics: exact Shapley values, imbalance degree, linear probes, modality gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.evaluation import linear_probe, shapley
from mmbench.measures import imbalance_degree, shapley_values
from mmbench.methods.base import build_method
from mmbench.models.multimodal import ModelSpec, build_model
from mmbench.run import train_run


@torch.no_grad()
def _masked_accuracy(model, data, mask, batch_size=512) -> float:
    """The reference ``v(S)``: accuracy of masked forward passes (what Shapley re-fuses from one encoding)."""
    model.eval()
    pred = torch.cat([model(batch, mask=mask).logits.argmax(1) for batch in data.batches(batch_size)])
    return (pred == data.labels).float().mean().item()


def test_two_player_shapley_matches_the_closed_form():
    v = {frozenset(): 0.1, frozenset("a"): 0.6, frozenset("b"): 0.3, frozenset("ab"): 0.8}
    phi = shapley_values(v, ["a", "b"])
    assert phi["a"] == pytest.approx(0.5 * (0.6 - 0.1) + 0.5 * (0.8 - 0.3))
    assert phi["b"] == pytest.approx(0.5 * (0.3 - 0.1) + 0.5 * (0.8 - 0.6))


def test_shapley_axioms_on_three_players():
    rng = np.random.default_rng(0)
    players = ["a", "b", "c"]
    subsets = [frozenset(s) for s in ([], ["a"], ["b"], ["c"], ["a", "b"], ["a", "c"], ["b", "c"], players)]
    # c is a dummy player: adding it never changes the value
    base = {s: rng.random() for s in subsets if "c" not in s}
    v = {s: base[s - {"c"}] for s in subsets}
    phi = shapley_values(v, players)
    assert sum(phi.values()) == pytest.approx(v[frozenset(players)] - v[frozenset()])  # efficiency
    assert phi["c"] == pytest.approx(0.0)  # dummy
    swapped = {frozenset({"a": "b", "b": "a"}.get(p, p) for p in s): x for s, x in v.items()}
    phi_swapped = shapley_values(swapped, players)
    assert phi_swapped["a"] == pytest.approx(phi["b"])  # symmetry


def test_imbalance_degree():
    assert imbalance_degree({"a": 0.3, "b": 0.3}) == 0.0
    assert imbalance_degree({"a": 0.4, "b": 0.0}) == 1.0
    assert imbalance_degree({"a": 0.3, "b": 0.1}) == pytest.approx(0.5)


def test_a_modality_the_model_ignores_gets_zero_shapley(data_dir):
    raw = load_split("tiny", "test", data_dir)
    k = int(torch.bincount(raw.labels).min())  # balanced classes: a constant prediction scores chance
    raw = raw.index(torch.cat([(raw.labels == c).nonzero().squeeze(1)[:k] for c in range(3)]))
    data = raw.with_inputs({**raw.inputs, "vector": torch.nn.functional.one_hot(raw.labels, 3).float()})
    model = build_model(ModelSpec(data.meta.modalities, 3, ModelConfig(hidden_dim=8, feature_dim=3)))
    model.encoders["vector"] = torch.nn.Identity()
    model.encoders["vector"].out_dim = 3
    with torch.no_grad():  # the head reads the label from vector and ignores image
        model.fusion.fc.weight.zero_()
        model.fusion.fc.weight[:, :3] = 5 * torch.eye(3)
    result = shapley(model, data)
    full, none = _masked_accuracy(model, data, []), _masked_accuracy(model, data, ["vector", "image"])
    assert full == 1.0 and none < 0.5
    assert result["shapley_image"] == pytest.approx(0.0, abs=1e-6)
    assert result["shapley_vector"] == pytest.approx(full - 1 / 3)  # the empty coalition is worth chance
    assert result["imbalance"] == pytest.approx(1.0)


@pytest.mark.parametrize("method,fusion", [("joint", "concat"), ("joint", "late"), ("joint", "film"),
                                           ("qmf", "concat"), ("tmc", "concat")])
def test_shapley_from_one_encoding_equals_masked_forward_passes(data_dir, method, fusion):
    torch.manual_seed(0)
    data = load_split("tiny", "test", data_dir)
    spec = ModelSpec(data.meta.modalities, 3, ModelConfig(hidden_dim=8, feature_dim=4, fusion=fusion))
    model = build_method(MethodConfig(method)).build_model(spec)
    for p in model.parameters():  # a model whose coalitions all differ
        torch.nn.init.normal_(p, std=0.5)
    modalities = list(model.modalities)
    value = {frozenset(s): _masked_accuracy(model, data, [m for m in modalities if m not in s], batch_size=50)
             for s in (["vector"], ["image"], modalities)}
    value[frozenset()] = 1 / 3
    phi = shapley_values(value, modalities)
    result = shapley(model, data, batch_size=50)
    assert [result[f"shapley_{m}"] for m in modalities] == [phi[m] for m in modalities]


@pytest.mark.parametrize("fusion", ["concat", "sum", "late", "gated", "film"])
def test_empty_coalition_is_worth_chance_for_every_fusion_head(data_dir, fusion):
    """One convention across heads: ``sum_m phi_m = v(all) - 1/C``, although the all-masked prediction's
    accuracy (a constant class, chosen by the head's biases) differs from head to head."""
    torch.manual_seed(0)
    raw = load_split("tiny", "test", data_dir)
    k = int(torch.bincount(raw.labels).min())  # classes 0, 1, 2 in shares 4:2:1, none near chance
    data = raw.index(torch.cat([(raw.labels == c).nonzero().squeeze(1)[:k].repeat(r) for c, r in ((0, 4), (1, 2), (2, 1))]))
    shares = torch.bincount(data.labels) / len(data)
    spec = ModelSpec(data.meta.modalities, 3, ModelConfig(hidden_dim=8, feature_dim=4, fusion=fusion))
    model = build_model(spec)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    none = _masked_accuracy(model, data, list(model.modalities))
    assert min(abs(none - s) for s in shares.tolist()) < 1e-9 and abs(none - 1 / 3) > 0.04  # a constant class
    result = shapley(model, data)
    full = _masked_accuracy(model, data, [])
    assert sum(result[f"shapley_{m}"] for m in model.modalities) == pytest.approx(full - 1 / 3, abs=1e-6)


def test_probe_chooses_C_on_validation(data_dir, monkeypatch):
    import mmbench.evaluation as evaluation

    splits = {s: load_split("tiny", s, data_dir) for s in ("train", "val", "test")}
    model = build_model(ModelSpec(splits["train"].meta.modalities, 3, ModelConfig(hidden_dim=16, feature_dim=8)))
    seen = []
    real = evaluation.LogisticRegression

    class Recording(real):
        def fit(self, x, y):
            seen.append((self.C, len(y)))
            return super().fit(x, y)

    monkeypatch.setattr(evaluation, "LogisticRegression", Recording)
    result = linear_probe(model, splits, "vector")
    assert [c for c, _ in seen] == list(evaluation.PROBE_C)
    assert all(n == len(splits["train"]) for _, n in seen)  # fitted on train only
    assert result["C"] in evaluation.PROBE_C and 0 <= result["test"] <= 1


def test_probe_reads_a_separable_encoder_perfectly(data_dir):
    def label_coded(d):  # the input carries its label: an identity encoder is perfectly separable
        return d.with_inputs({**d.inputs, "vector": torch.nn.functional.one_hot(d.labels, 3).float()})

    splits = {s: label_coded(load_split("tiny", s, data_dir)) for s in ("train", "val", "test")}
    model = build_model(ModelSpec(splits["train"].meta.modalities, 3, ModelConfig(hidden_dim=16, feature_dim=8)))
    model.encoders["vector"] = torch.nn.Identity()
    assert linear_probe(model, splits, "vector")["test"] == 1.0


def test_run_records_gap_ratios_shapley_and_probes(make_cfg):
    folder, _ = train_run(make_cfg("joint", epochs=3))
    gap = folder.load_arrays("gap.npz")
    probs = gap["true_class_prob"].astype(np.float64)
    assert probs.shape == (3, len(gap["labels"]), 2) and list(gap["modalities"]) == ["vector", "image"]
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    metrics = folder.read_metrics()
    for epoch in range(3):  # the logged ratio is the epoch's summed true-class probabilities, vector over image
        expected = probs[epoch, :, 0].sum() / probs[epoch, :, 1].sum()
        assert metrics.loc[epoch, "imbalance_ratio_vector"] == pytest.approx(expected, rel=1e-2)
    test = folder.read_summary()["test"]
    assert {"shapley_vector", "shapley_image", "imbalance", "probe_vector", "probe_image"} <= set(test)
    assert test["shapley_vector"] + test["shapley_image"] == pytest.approx(test["acc"] - 1 / 3, abs=1e-6)
