"""Generic checks every registered method, fusion, encoder and embedded dataset must pass."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_meta, load_split, prepare
from mmbench.data.types import MODALITY_KINDS, ModalitySpec
from mmbench.errors import MMBenchError
from mmbench.evaluation import predict
from mmbench.methods.base import TrainState, build_method
from mmbench.models.encoders import DEFAULT_ENCODER
from mmbench.models.multimodal import ModelOutput, ModelSpec, build_encoder, build_model
from mmbench.registry import DATASETS, ENCODERS, FUSIONS, METHODS
from mmbench.run import load_trained, train_run


def _method_sets(name: str, modalities: list[str]) -> list[str]:
    """Required parameters without a default (``None``) that name a modality get the first one."""
    fields = dataclasses.fields(METHODS.get(name).Params)
    return [f"method.{f.name}={modalities[0]}" for f in fields if f.default is None and "modality" in f.name]


@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("dataset", ["tiny", "tiny3"])
def test_method_trains_saves_reloads_and_is_deterministic(name, dataset, make_cfg, data_dir, tmp_path):
    mods = list(load_meta(dataset, data_dir).modalities)
    cfg = make_cfg(name, dataset=dataset, sets=_method_sets(name, mods))
    limit = METHODS.get(name).max_modalities
    if limit is not None and len(mods) > limit:
        with pytest.raises(MMBenchError, match=f"at most {limit} modalities"):
            train_run(cfg)
        return
    folder, trained = train_run(cfg)
    assert trained and folder.complete
    metrics = folder.read_metrics()
    assert list(metrics["epoch"]) == [0, 1] and {"train_loss", "val_acc", "val_f1"} <= set(metrics.columns)
    summary = folder.read_summary()
    assert summary["test_samples"] == load_meta(dataset, data_dir).splits["test"]
    assert 0.0 <= summary["test"]["acc"] <= 1.0

    # same config and seed -> identical metrics.csv, from a second results folder
    again = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, results_dir=str(tmp_path / "again")))
    folder2, _ = train_run(again)
    assert (folder2.path / "metrics.csv").read_bytes() == (folder.path / "metrics.csv").read_bytes()

    # the saved weights reload into the method's model and give the summary's test accuracy
    _, method, model, test = load_trained(folder)
    logits, _ = predict(model, method, test)
    assert len(logits) == len(test)
    acc = (logits.argmax(1) == test.labels).float().mean().item()
    assert acc == pytest.approx(summary["test"]["acc"], abs=1e-6)


@pytest.mark.parametrize("name", METHODS.names())
def test_method_output_contract(name, data_dir):
    batch = load_split("tiny", "train", data_dir).index(slice(0, 16))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    params = {f.name: batch.modalities[0] for f in dataclasses.fields(METHODS.get(name).Params)
              if f.default is None and "modality" in f.name}
    method = build_method(MethodConfig(name, params))
    model = method.build_model(spec)
    out = model(batch)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (16, batch.meta.num_classes)
    assert set(out.unimodal_logits) <= set(batch.modalities)
    for z in out.unimodal_logits.values():
        assert z.shape == (16, batch.meta.num_classes)
    loss, logs = method.loss(model, batch, out, TrainState())
    assert loss.ndim == 0 and torch.isfinite(loss) and isinstance(logs, dict)
    loss.backward()
    assert any(p.grad is not None for p in model.parameters())
    assert isinstance(method.predict(model.eval(), batch), ModelOutput)


STRING_PARAMETERS = [(name, f) for name in METHODS.names() for f in dataclasses.fields(METHODS.get(name).Params)
                     if f.type in (str, "str")]


def test_there_are_string_parameters_to_check():
    assert len({name for name, _ in STRING_PARAMETERS}) >= 5


@pytest.mark.parametrize("name,field", STRING_PARAMETERS, ids=[f"{n}.{f.name}" for n, f in STRING_PARAMETERS])
def test_method_string_parameters_are_checked_choices(name, field):
    """Every ``str`` parameter is a choice: a typo is a one-line error naming the field and listing its default."""
    with pytest.raises(MMBenchError) as e:
        build_method(MethodConfig(name, {field.name: field.default + "_typo"}))
    message = str(e.value)
    assert f"{field.name} must be one of" in message and repr(field.default) in message and "\n" not in message


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_fusion_forward_masking_and_decomposition(fusion, data_dir):
    batch = load_split("tiny", "val", data_dir).index(slice(0, 10))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(fusion=fusion, hidden_dim=16, feature_dim=8))
    model = build_model(spec).eval()
    out = model(batch)
    assert out.logits.shape == (10, batch.meta.num_classes)
    assert set(out.unimodal_logits) == set(batch.modalities)
    if model.fusion.decomposable:
        stacked = torch.stack(list(out.unimodal_logits.values()))
        combined = stacked.mean(0) if fusion == "late" else stacked.sum(0)
        torch.testing.assert_close(combined, out.logits)
    else:
        assert model.heads is not None
    masked = model(batch, mask=["image"])
    assert set(masked.unimodal_logits) == {"vector"} and "image" not in masked.features
    # masking must not depend on the masked modality's content
    noisy = batch.with_inputs({**batch.inputs, "image": torch.randn_like(batch.inputs["image"])})
    torch.testing.assert_close(model(noisy, mask=["image"]).logits, masked.logits)
    nothing = model(batch, mask=batch.modalities)  # every modality masked: a constant prediction
    assert nothing.logits.shape == out.logits.shape and not nothing.unimodal_logits
    assert torch.allclose(nothing.logits, nothing.logits[:1].expand_as(nothing.logits))


KIND_SPECS = {  # one modality of every kind, as the store describes it
    "vector": ModalitySpec("v", "vector", (12,)),
    "image": ModalitySpec("i", "image", (2, 8, 8)),
    "sequence": ModalitySpec("s", "sequence", (3, 20)),
    "video": ModalitySpec("f", "video", (2, 3, 8, 8), "uint8", 120.0, 50.0),
    "text": ModalitySpec("t", "text", (7,), "int64", vocab_size=30),
}


def example_batch(spec: ModalitySpec, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if spec.kind == "text":
        x = torch.randint(1, spec.vocab_size, (n, *spec.shape), generator=g)
        x[:, 4:] = 0  # padding
        return x
    if spec.dtype == "uint8":
        return torch.randint(0, 256, (n, *spec.shape), generator=g, dtype=torch.uint8)
    return torch.randn(n, *spec.shape, generator=g)


@pytest.mark.parametrize("encoder", ENCODERS.names())
@pytest.mark.parametrize("kind", list(KIND_SPECS))
def test_encoder_maps_to_feature_dim(encoder, kind):
    """Every encoder maps every kind it declares to [B, feature_dim], and refuses the others clearly."""
    spec = KIND_SPECS[kind]
    assert set(KIND_SPECS) == set(MODALITY_KINDS)
    cfg = ModelConfig(hidden_dim=16, feature_dim=8, depth=2)
    if kind not in getattr(ENCODERS.get(encoder), "kinds", MODALITY_KINDS):
        with pytest.raises(MMBenchError, match="takes .* modalities"):
            build_encoder(spec, encoder, cfg)
        return
    enc = build_encoder(spec, encoder, cfg)
    out = enc(example_batch(spec, 5))
    assert out.shape == (5, 8) and torch.isfinite(out).all()
    out.sum().backward()


@pytest.mark.parametrize("kind", list(KIND_SPECS))
def test_every_kind_has_a_default_encoder_that_accepts_it(kind):
    assert kind in ENCODERS.get(DEFAULT_ENCODER[kind]).kinds


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if DATASETS.get(n).embedded])
def test_embedded_dataset_prepares_with_three_stratified_splits(name, tmp_path):
    path = prepare(name, data_dir=tmp_path)
    meta = load_meta(path.name, tmp_path)
    assert set(meta.splits) == {"train", "val", "test"} and min(meta.splits.values()) > 0
    labels = {}
    for split in ("train", "val", "test"):
        data = load_split(name, split, tmp_path)
        assert len(data) == meta.splits[split]
        for m, x in data.inputs.items():
            assert tuple(x.shape[1:]) == meta.modalities[m].shape
            assert torch.isfinite(x).all()
        labels[split] = data.labels.numpy()
    assert "seed" in meta.info["split"]
    props = [np.bincount(labels[s], minlength=meta.num_classes) / len(labels[s]) for s in labels]
    assert np.abs(props[0] - props[2]).max() < 0.05, "splits must be stratified"


def test_modality_spec_round_trip():
    spec = ModalitySpec("image", "image", (1, 4, 4), "float32", 0.5, 2.0)
    assert ModalitySpec.from_dict(spec.to_dict()) == spec
