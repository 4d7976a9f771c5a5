"""A plugin author's view: a method and an attack defined outside mmbench run mmbench's conformance
suite with one decorator (``mmbench.testing.parametrize_with_checks``); a broken method fails it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from mmbench.attacks.base import normal, register_attack
from mmbench.methods.base import Method
from mmbench.registry import ATTACKS, METHODS
from mmbench.testing import check_method_trains, parametrize_with_checks


@METHODS.register("plugin_focal")
class Focal(Method):
    """Focal loss on the fused prediction (a plugin's method)."""

    @dataclass(frozen=True)
    class Params:
        gamma: float = 2.0

    def loss(self, model, batch, out, state):
        logp = F.log_softmax(out.logits, 1).gather(1, batch.labels[:, None]).squeeze(1)
        loss = (-(1 - logp.exp()) ** self.params.gamma * logp).mean()
        return loss, {"focal": loss.item()}


@register_attack("plugin_jitter", kinds=("vector",))
def jitter(x: torch.Tensor, level: float, generator: torch.Generator, spec, *, scale: float = 1.0) -> torch.Tensor:
    """Gaussian jitter of vectors, sigma = level x scale x the training std (a plugin's attack)."""
    if level == 0:
        return x
    return x + normal(x.shape, generator) * level * scale * spec.std


@pytest.fixture(autouse=True, scope="module")
def _unregister_the_plugins():
    """The plugins exist for this module's tests only: later modules see the built-ins alone."""
    yield
    METHODS.unregister("plugin_focal")
    ATTACKS.unregister("plugin_jitter")


@parametrize_with_checks(methods=["plugin_focal"], attacks=["plugin_jitter"])
def test_plugin_conformance(check, tmp_path):
    check(tmp_path)


class Unseeded(Method):
    """Scales its loss by operating-system randomness, outside every seed: not reproducible."""

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels) * (1 + int.from_bytes(os.urandom(2), "big") / 65536), {}


def test_a_method_that_ignores_the_seed_fails_the_determinism_check(tmp_path):
    METHODS.register("plugin_unseeded")(Unseeded)
    try:
        with pytest.raises(AssertionError, match="same config and seed, different metrics.csv"):
            check_method_trains("plugin_unseeded", "tiny", tmp_path=tmp_path)
    finally:
        METHODS.unregister("plugin_unseeded")
