"""Joint training baselines: fused cross-entropy, optionally plus unimodal heads' cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE
from mmbench.methods.base import Method
from mmbench.registry import METHODS


@METHODS.register("joint")
class Joint(Method):
    """joint training: cross-entropy on the fused prediction."""

    def loss(self, model, batch, out, state):
        loss = F.cross_entropy(out.logits, batch.labels)
        return loss, {}


@METHODS.register("joint_uni")
class JointUni(Method):
    """fused cross-entropy plus unimodal_weight x each unimodal head's cross-entropy."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        unimodal_weight: Annotated[float, NON_NEGATIVE] = 1.0

    def loss(self, model, batch, out, state):
        fused = F.cross_entropy(out.logits, batch.labels)
        unimodal = {m: F.cross_entropy(z, batch.labels) for m, z in out.unimodal_logits.items()}
        loss = fused + self.params.unimodal_weight * sum(unimodal.values())
        return loss, {"loss_fused": fused.item(), **{f"loss_{m}": v.item() for m, v in unimodal.items()}}
