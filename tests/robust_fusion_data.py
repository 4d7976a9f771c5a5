"""Shared set-up of the robust-fusion mechanism tests (QMF, TMC, MICINet, QADM): a small two-vector
dataset, a short training with the real Trainer, and test-time corruption of one modality."""

from __future__ import annotations

import torch

from mmbench.attacks.noise import gaussian
from mmbench.config import MethodConfig, ModelConfig, OptimConfig
from mmbench.data.store import load_split
from mmbench.methods.base import build_method
from mmbench.models.multimodal import ModelSpec
from mmbench.training import Trainer

# two vector modalities (fast MLPs): "a" the stronger, "b" the one corrupted in the tests
PAIR = {"num_classes": 3, "num_samples": 300, "names": ["a", "b"], "kinds": ["vector", "vector"],
        "shapes": ["8", "8"], "signal": [3.0, 2.5]}


def train_small(root, name: str, epochs: int = 8, **params):
    """``(method, model in eval mode, test split)`` after a short Adam training on ``pair`` (in ``root``:
    the session's ``data_dir``)."""
    train, val, test = (load_split("pair", s, root) for s in ("train", "val", "test"))
    torch.manual_seed(0)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig(name, params))
    model = method.build_model(spec)
    optim = OptimConfig(optimizer="adam", lr=1e-2, epochs=epochs, batch_size=32)
    Trainer(method, model, optim, torch.device("cpu"), seed=0).fit(train, val)
    return method, model.eval(), test


def noised(data, modality: str, level: float, seed: int = 0):
    """``data`` with mmbench's gaussian attack (sigma = level x training std) on one modality."""
    generator = torch.Generator().manual_seed(seed)
    x = gaussian(data.inputs[modality], level, generator, data.meta.modalities[modality])
    return data.with_inputs({**data.inputs, modality: x})


def signal_destroyed(data, modality: str, seed: int = 0):
    """``data`` with one modality replaced by Gaussian noise on the data's own scale (training mean and std)."""
    spec = data.meta.modalities[modality]
    generator = torch.Generator().manual_seed(seed)
    x = spec.mean + spec.std * torch.randn(data.inputs[modality].shape, generator=generator)
    return data.with_inputs({**data.inputs, modality: x})


@torch.no_grad()
def extras(model, data) -> dict[str, torch.Tensor]:
    return model(data).extras
