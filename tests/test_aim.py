"""AIM mechanism: depth blocks, per-depth strength, under-optimised masks, and the auxiliary path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.aim import depth_blocks
from mmbench.methods.base import TrainState, build_method
from mmbench.models.encoders import CNNEncoder, MLPEncoder, ResNet18Encoder
from mmbench.models.multimodal import ModelSpec, Standardize
from mmbench.training import train_run


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
