"""AIM mechanism: depth blocks, per-depth strength, under-optimised masks, and the auxiliary path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
from mmbench.methods.aim import depth_features
from mmbench.methods.base import TrainState, build_method
from mmbench.models.blocks import depth_blocks
from mmbench.models.encoders import CNNEncoder, MLPEncoder, ResNet18Encoder
from mmbench.models.multimodal import ModelSpec, Standardize
from mmbench.run import train_run


@pytest.mark.parametrize("encoder, shape, depth", [(MLPEncoder, (12,), 3), (CNNEncoder, (1, 8, 8), 3),
                                                   (ResNet18Encoder, (3, 16, 16), 5)])
def test_depth_blocks_compose_to_the_encoder(encoder, shape, depth):
    enc = encoder(shape, 8, 16, 2, 0.0).eval()
    blocks = depth_blocks(enc)
    assert len(blocks) == depth  # mlp/cnn: two hidden stages plus the projection; resnet18: stem and 4 stages
    x = torch.randn(5, *shape)
    y = x
    for b in blocks:
        y = b(y)
    torch.testing.assert_close(y, enc(x))


def test_depth_blocks_of_a_uint8_image_encoder_start_by_standardising():
    enc = Standardize(CNNEncoder((1, 8, 8), 8, 16, 2, 0.0), 100.0, 40.0).eval()
    blocks = depth_blocks(enc)
    assert len(blocks) == 3
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    y = x
    for b in blocks:
        y = b(y)
    torch.testing.assert_close(y, enc.encoder((x.float() - 100.0) / 40.0))


def _setup(data_dir, **params):
    torch.manual_seed(0)
    train = load_split("tiny", "train", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("aim", {"warmup_epochs": 0, "prototype_fraction": 1.0, **params}))
    model = method.build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # make vector dominant
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(train, mask=["image"]).logits, train.labels).backward()
        opt.step()
    model.zero_grad()
    return method, model, train


def test_strength_per_depth_follows_the_depth_imbalance(data_dir):
    method, model, train = _setup(data_dir, alpha=2.0, max_fraction=0.9)
    state = TrainState(epoch=0, model=model, train=train)
    method.on_epoch_start(state)
    logs = state.epoch_logs
    assert method.dominant == "vector"
    depths = len(depth_blocks(model.encoders["vector"]))
    for d in range(depths):
        weak_d = logs[f"score_image_d{min(d, depths - 1)}"]
        rho = logs[f"score_vector_d{d}"] / weak_d
        assert logs[f"rho_d{d}"] == pytest.approx(rho)
        assert logs[f"lambda_d{d}"] == pytest.approx(min(math.tanh(2.0 * max(rho - 1, 0)), 0.9))


def test_auxiliary_path_uses_only_under_optimised_weights_and_trains_the_weak_modality(data_dir):
    method, model, train = _setup(data_dir, max_fraction=0.5)
    batch = train.index(slice(0, 32))
    state = TrainState(epoch=0, model=model, train=train)
    method.on_epoch_start(state)  # no gradient statistics yet: no masks
    out = model(batch)
    loss, _ = method.loss(model, batch, out, state)
    loss.backward()
    method.after_backward(model, batch, out, state)
    method.strength = [0.5] * len(method.strength)
    method.masks = method.under_optimised_masks(model)
    assert method.masks
    for key, keep in method.masks.items():  # the kept share is the smallest running |grad|
        ema = method.grad_ema[f"vector:{key}"]
        assert keep.sum().item() == max(int(0.5 * ema.numel()), 1)
        assert ema[keep].max() <= ema[~keep].min()
    model.zero_grad()
    aux = method.auxiliary_features(model, batch)
    aux_logits, _ = model.fuse({"vector": aux, "image": model(batch).features["image"]})
    F.cross_entropy(aux_logits, batch.labels).backward()
    blocks = depth_blocks(model.encoders["vector"])
    for d, block in enumerate(blocks):
        for name, param in block.named_parameters():
            key = f"{d}.{name}"
            if key in method.masks:  # masked-out (well-optimised) weights get no gradient from the aux path
                assert param.grad[~method.masks[key]].abs().max() == 0
                assert param.grad[method.masks[key]].abs().max() > 0
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.encoders["image"].parameters())


def test_training_logs_depth_modulation(make_cfg):
    folder, _ = train_run(make_cfg("aim", epochs=3, sets=["method.warmup_epochs=1"]))
    metrics = folder.read_metrics()
    assert {"rho_d0", "lambda_d0", "score_vector_d0", "score_image_d0"} <= set(metrics.columns)
    assert metrics.loc[0, "aux_loss"] != metrics.loc[0, "aux_loss"]  # NaN: no auxiliary path in warm-up
    assert (metrics.loc[1:, "lambda_d0"] > 0).all() and metrics.loc[1:, "aux_loss"].notna().all()


def test_auxiliary_pass_leaves_norm_buffers_untouched_and_normalises_with_batch_statistics(data_dir):
    method, model, train = _setup(data_dir)
    batch = train.index(slice(0, 32))
    out = model(batch)
    method.loss(model, batch, out, TrainState(model=model, train=train))[0].backward()
    method.after_backward(model, batch, out, TrainState())
    encoder = model.encoders["image"]  # the CNN encoder has BatchNorm layers
    method.dominant, method.strength = "image", [0.5] * len(depth_blocks(encoder))
    method.masks = method.under_optimised_masks(model)
    assert method.masks and any("running_mean" in n for n, _ in encoder.named_buffers())
    model.train()
    before = {n: b.clone() for n, b in encoder.named_buffers()}
    loss, logs = method.loss(model, batch, model(batch, mask=["image"]), TrainState(model=model, train=train))
    assert logs["aux_loss"] > 0
    for n, b in encoder.named_buffers():
        assert torch.equal(b, before[n]), f"the auxiliary pass changed {n}"
    # with every weight kept, the auxiliary pass is the train-mode forward (batch statistics) ...
    method.masks = {k: torch.ones_like(v) for k, v in method.masks.items()}
    aux = method.auxiliary_features(model, batch)
    assert all(torch.equal(b, before[n]) for n, b in encoder.named_buffers())
    torch.testing.assert_close(aux, encoder(batch.inputs["image"]))
    # ... which, unlike the auxiliary pass, does update the running statistics
    assert any(not torch.equal(b, before[n]) for n, b in encoder.named_buffers() if "running" in n)


def test_depth_scores_use_a_seeded_stratified_subset_of_class_sorted_data(data_dir):
    method, model, train = _setup(data_dir, prototype_fraction=0.25)
    order = torch.argsort(train.labels, stable=True)  # a source that stores samples sorted by class
    sorted_train = train.index(order)
    counts = torch.bincount(sorted_train.labels)
    method.on_epoch_start(TrainState(model=model, train=sorted_train, generator=torch.Generator().manual_seed(3)))
    subset = method.subset
    n = int(len(train) * 0.25)
    assert torch.bincount(sorted_train.labels[subset], minlength=len(counts)).tolist() == \
        (counts * n / len(train)).round().long().tolist()
    assert subset.max() >= n  # not the first n samples, which would hold a single class
    again = build_method(MethodConfig("aim", {"prototype_fraction": 0.25}))
    again.on_epoch_start(TrainState(model=model, train=sorted_train, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(again.subset, subset)  # seeded
    first = subset.clone()
    method.on_epoch_start(TrainState(epoch=1, model=model, train=sorted_train))
    assert torch.equal(method.subset, first)  # drawn once per run: scores stay comparable across epochs


def _video_data(n=48, frames=3):
    """Two modalities shaped like CREMA-D's: a spectrogram image and uint8 video frames."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    audio = torch.randn(n, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1).float()
    video = torch.randint(0, 256, (n, frames, 3, 8, 8), generator=g, dtype=torch.uint8)
    video[:, :, 0] = (labels * 80).view(-1, 1, 1, 1).to(torch.uint8)
    specs = {"audio": ModalitySpec("audio", "image", (1, 8, 8)),
             "visual": ModalitySpec("visual", "video", (frames, 3, 8, 8), "uint8", 120.0, 60.0)}
    meta = DatasetMeta("video_tiny", "test", ("a", "b", "c"), specs, {"train": n})
    return MultimodalData({"audio": audio, "visual": video}, labels, meta)


def test_video_modality_runs_its_frame_encoder_per_depth(data_dir):
    data = _video_data()
    spec = ModelSpec(data.meta.modalities, 3, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("aim", {"warmup_epochs": 0, "prototype_fraction": 1.0}))
    model = method.build_model(spec).eval()
    encoder = model.encoders["visual"]
    features = depth_features(encoder, data.inputs["visual"])
    assert len(features) == len(depth_blocks(encoder)) and all(f.shape[0] == len(data) for f in features)
    torch.testing.assert_close(features[-1], encoder(data.inputs["visual"]))  # frames pooled as FramePool does
    model.train()
    state = TrainState(model=model, train=data)
    method.on_epoch_start(state)
    assert {"score_visual_d0", "score_audio_d0", "rho_d0"} <= set(state.epoch_logs)
    batch = data.index(slice(0, 16))
    out = model(batch)
    loss, _ = method.loss(model, batch, out, state)
    loss.backward()
    method.after_backward(model, batch, out, state)
    method.dominant, method.strength = "visual", [0.5] * len(features)
    method.masks = method.under_optimised_masks(model)
    assert method.masks
    loss, logs = method.loss(model, batch, model(batch), state)
    assert math.isfinite(logs["aux_loss"]) and loss.requires_grad
