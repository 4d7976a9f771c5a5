"""AMCo: Adaptive Mask Co-optimization for modal dependence.

Zhou, Liang, Zheng, Xuan, Kumada. *Adaptive Mask Co-optimization for Modal Dependence in Multimodal
Learning*. ICASSP 2023. The authors released no code; the reference is BalanceBenchmark's implementation
(GeWu-Lab/BalanceBenchmark @ 4c1482f, ``balancemm/trainer/AMCo_trainer.py``,
``balancemm/models/avclassify_model.py`` ``BaseClassifierAMCoModel``, ``configs/trainer_config.yaml``).

From that code:
- a modality is *dependent* when its block of the softmax over the concatenated unimodal logits
  ``[B, M*C]`` holds, on batch average, more than ``sigma`` (0.5) of the mass; decided after each step,
  used by the next one, all modalities independent at the start of an epoch;
- each batch draws a class mask: ``N = int(p_t C)`` of the ``C`` logit positions, chosen at random, are
  zeroed in every dependent modality's unimodal logits; ``p_t = sin(pi/2 min(eps, l_t) / eps)`` with
  ``eps`` 0.3 and ``l_t`` restarting at 0 each epoch and growing by ``ramp * epoch`` per batch (``ramp``
  0.1: the code's ``current_epoch / 10``), so nothing is masked in epoch 0 and everything after a few
  batches of later epochs;
- fused logits: a learned ``Linear(C, C)`` on the sum of the (masked) unimodal logits; loss: the fused
  cross-entropy plus each modality's (masked) unimodal cross-entropy inside the modulation window
  (epochs ``modulation_starts``-``modulation_ends``, 0-80), the fused cross-entropy alone outside it;
- evaluation: no mask.
The configuration's ``alpha``, ``U`` (512) and ``method`` are read but never used by that code, so they
are not parameters here (``docs/methods/amco.md``). Randomness comes from the run's generator (the code:
numpy's global stream).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import NON_NEGATIVE, POSITIVE, UNIT
from mmbench.errors import MMBenchError
from mmbench.methods.base import Method
from mmbench.models.multimodal import MultimodalModel, build_model
from mmbench.registry import FUSIONS, METHODS


def mask_level(level: float, eps: float) -> float:
    """``p_t = sin(pi/2 min(eps, l_t) / eps)``: the share of class positions masked at ramp level ``l_t``."""
    return math.sin(math.pi / 2 * min(eps, level) / eps)


def class_mask(p: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``[C]`` float: ``int(p C)`` positions, chosen at random, are 0, the rest 1."""
    zeros = torch.randperm(num_classes, generator=generator, device=generator.device)[:int(p * num_classes)]
    return torch.ones(num_classes, device=generator.device).index_fill(0, zeros, 0.0)


def dependent_modalities(unimodal: dict[str, torch.Tensor], sigma: float) -> dict[str, bool]:
    """Modality -> whether its block of ``softmax(concat(unimodal logits))`` averages more than ``sigma`` per sample."""
    probs = F.softmax(torch.cat(list(unimodal.values()), 1).detach(), 1)
    mass = probs.split([z.shape[1] for z in unimodal.values()], 1)
    return {m: bool(block.sum() / len(block) > sigma) for m, block in zip(unimodal, mass)}


class AMCoModel(MultimodalModel):
    """The configured encoders and decomposable fusion; fused logits ``star(sum_m unimodal_m)`` over the
    modalities present."""

    def __init__(self, model: MultimodalModel, num_classes: int):
        super().__init__(dict(model.encoders), model.fusion, None)
        self.star = nn.Linear(num_classes, num_classes)

    def _fuse(self, features, batch_size, device):
        _, unimodal, extras = super()._fuse(features, batch_size, device)
        if not unimodal:  # every modality masked: no logits to sum
            return self.star(torch.zeros(batch_size, self.star.in_features, device=device)), unimodal, extras
        return self.combine(unimodal), unimodal, extras

    def combine(self, unimodal: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.star(torch.stack(list(unimodal.values())).sum(0))


@METHODS.register("amco")
class AMCo(Method):
    """AMCo (ICASSP 2023): mask the dependent modality's class logits on a sine ramp; fused and unimodal losses."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        sigma: Annotated[float, UNIT] = 0.5
        eps: Annotated[float, POSITIVE] = 0.3
        ramp: Annotated[float, NON_NEGATIVE] = 0.1
        modulation_starts: Annotated[int, NON_NEGATIVE] = 0
        modulation_ends: Annotated[int, NON_NEGATIVE] = 80

    def __init__(self, params=None):
        super().__init__(params)
        self.level = 0.0  # l_t
        self.dependent: dict[str, bool] = {}

    def check_spec(self, spec):
        super().check_spec(spec)
        if not getattr(FUSIONS.get(spec.config.fusion), "decomposable", False):
            raise MMBenchError(f"method 'amco' needs a decomposable fusion (concat, sum, late) whose per-modality "
                               f"logits it masks, got model.fusion={spec.config.fusion!r}")

    def build_model(self, spec):
        return AMCoModel(build_model(spec), spec.num_classes)

    def on_epoch_start(self, state):
        self.level, self.dependent = 0.0, {}

    def _active(self, epoch: int) -> bool:
        return self.params.modulation_starts <= epoch <= self.params.modulation_ends

    def forward(self, model, batch, state):
        out = model(batch)
        if not self._active(state.epoch):
            return out
        p = mask_level(self.level, self.params.eps)
        self.level += state.epoch * self.params.ramp
        num_classes = out.logits.shape[1]
        mask = class_mask(p, num_classes, state.generator).to(out.logits.device)
        unimodal = {m: z * mask if self.dependent.get(m, False) else z for m, z in out.unimodal_logits.items()}
        extras = {**out.extras, "mask_rate": torch.tensor(int(p * num_classes) / num_classes)}
        return replace(out, logits=model.combine(unimodal), unimodal_logits=unimodal, extras=extras)

    def loss(self, model, batch, out, state):
        fused = F.cross_entropy(out.logits, batch.labels)
        if not self._active(state.epoch):
            return fused, {}
        uni = sum(F.cross_entropy(z, batch.labels) for z in out.unimodal_logits.values())
        masked = {f"masked_{m}": float(self.dependent.get(m, False)) for m in out.unimodal_logits}
        self.dependent = dependent_modalities(out.unimodal_logits, self.params.sigma)
        return fused + uni, {"mask_rate": float(out.extras.get("mask_rate", 0.0)), **masked}
