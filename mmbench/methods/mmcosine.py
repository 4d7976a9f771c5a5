"""MMCosine: multi-modal cosine loss.

Xu, Feng, Zhang, Hu. *MMCosine: Multi-Modal Cosine Loss Towards Balanced Audio-Visual Fine-Grained
Learning*. ICASSP 2023, arXiv 2303.05338.
Official code: https://github.com/GeWu-Lab/MMCosine_ICASSP23 (``main_CD.py``, commit 00ba0a9).

From the official code (``train_epoch`` and ``valid`` in ``main_CD.py``):
- each modality's logits are scaled cosines, ``z_m = s * normalize(f_m) normalize(W_m)^T``, where
  ``W_m`` is the modality's column block of the concat head ``fc_out`` (each class row normalised);
  the head's bias is not used, so it never trains;
- training loss: cross-entropy on ``sum_m z_m``;
- evaluation: the per-modality predictions are the ``z_m``; the fused prediction is the concat
  head's plain output ``W [f_1, ..., f_M] + b`` (``valid`` takes the model's ``out``), which is
  ``prediction="linear"``. BalanceBenchmark predicts with ``sum_m z_m`` (``prediction="cosine"``);
- scaling ``s = 10`` (``--scaling`` default and the README's command).

mmbench choices, documented in ``docs/methods/mmcosine.md``:
- more than two modalities: one block of ``fc_out`` per modality, as BalanceBenchmark does for three;
- the method needs the ``concat`` fusion (a head whose weight splits into per-modality blocks); the
  release's "mid-concat" gated/FiLM variants change the features before that head, mmbench's gated and
  FiLM fusions do not end in such a head;
- the release's optional NCE term (``--lam``, default 0, only in the supplementary material) is left out;
- model selection on the validation split (the release selects on the test loader).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import POSITIVE
from mmbench.errors import MMBenchError
from mmbench.methods.base import Method, check_choices
from mmbench.models.multimodal import ModelOutput
from mmbench.registry import METHODS

PREDICTIONS = ("linear", "cosine")


def cosine_logits(model, features: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """``s * cos(f_m, W_m[c])`` for every present modality, ``W_m`` its block of the concat head."""
    fusion = model.fusion
    d, weight = fusion.feature_dim, fusion.fc.weight
    return {m: scaling * F.normalize(features[m], dim=1) @ F.normalize(weight[:, i * d:(i + 1) * d], dim=1).T
            for i, m in enumerate(fusion.modalities) if m in features}


@METHODS.register("mmcosine")
class MMCosine(Method):
    """MMCosine (ICASSP 2023): fused logits as the sum of scaled cosines of L2-normalised features and weights."""

    @dataclass(frozen=True)
    class Params:
        scaling: Annotated[float, POSITIVE] = 10.0
        prediction: str = "linear"  # linear (the release's evaluation) | cosine (BalanceBenchmark)

        def __post_init__(self):
            check_choices(self, prediction=PREDICTIONS)

    def check_spec(self, spec):
        super().check_spec(spec)
        if spec.config.fusion != "concat":
            raise MMBenchError(f"method 'mmcosine' needs model.fusion=concat (a head that splits into per-modality "
                               f"weight blocks), got {spec.config.fusion!r}")

    def _cosine(self, out: ModelOutput, model) -> ModelOutput:
        unimodal = cosine_logits(model, out.features, self.params.scaling)
        return replace(out, logits=torch.stack(list(unimodal.values())).sum(0), unimodal_logits=unimodal)

    def forward(self, model, batch, state):
        return self._cosine(model(batch), model)

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {}

    def predict(self, model, batch):
        out = model(batch)
        cosine = self._cosine(out, model)
        return cosine if self.params.prediction == "cosine" else replace(cosine, logits=out.logits)
