"""Shared fixtures: tiny prepared datasets and a config factory (runs finish in about a second)."""

from __future__ import annotations

import pytest
import torch

from mmbench.config import resolve
from mmbench.data.store import prepare
from mmbench.registry import METHODS
from mmbench.testing import TINY, TINY3
from tests.robust_fusion_data import PAIR

# mmbench's own methods, listed before any test module registers a plugin of its own
BUILTIN_METHODS = METHODS.names()

torch.set_num_threads(2)

@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare("synthetic", data_dir=root, name="tiny", options=TINY)
    prepare("synthetic", data_dir=root, name="tiny3", options=TINY3)
    prepare("synthetic", data_dir=root, name="pair", options=PAIR)  # the robust-fusion tests' data
    return root


@pytest.fixture
def make_cfg(data_dir, tmp_path):
    """``make_cfg(method, dataset="tiny", epochs=2, **sets)`` -> a resolved RunConfig in tmp dirs."""

    def factory(method="joint", dataset="tiny", epochs=2, seed=0, sets=()):
        flags = {"data.dataset": dataset, "method.name": method, "optim.epochs": epochs, "seed": seed,
                 "output.data_dir": str(data_dir), "output.results_dir": str(tmp_path / "results")}
        return resolve(flags=flags, sets=list(sets) + ["model.hidden_dim=16", "model.feature_dim=8",
                                                      "optim.batch_size=32"])

    return factory


def tiny_method(name: str, data_dir, dataset: str = "tiny", n: int = 32, **params):
    """``(method, model, batch, train)``: a method with its model on a tiny dataset (seed 0) and the first
    ``n`` training samples, for mechanism tests that call a method's pieces directly."""
    from mmbench.config import MethodConfig, ModelConfig
    from mmbench.data.store import load_split
    from mmbench.methods.base import build_method
    from mmbench.models.multimodal import ModelSpec

    torch.manual_seed(0)
    train = load_split(dataset, "train", data_dir)
    spec = ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig(name, params))
    return method, method.build_model(spec), train.index(slice(0, n)), train
