"""One modality alone: the reference that shows how much a modality is under-trained in fusion."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from mmbench.errors import MMBenchError
from mmbench.methods.base import Method
from mmbench.models.multimodal import ModelSpec, build_model
from mmbench.registry import METHODS, unknown_name_message


@METHODS.register("unimodal")
class Unimodal(Method):
    """one modality alone (method.modality=NAME): the reference for under-training."""

    @dataclass(frozen=True)
    class Params:
        modality: str | None = None

    def build_model(self, spec: ModelSpec):
        m = self.params.modality
        if m is None:
            raise MMBenchError(f"unimodal needs the modality to train: --set method.modality=NAME "
                               f"(one of {', '.join(spec.modalities)})")
        if m not in spec.modalities:
            raise MMBenchError(unknown_name_message("modality for method.modality", m, list(spec.modalities)))
        return build_model(spec.only([m]))

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {}
