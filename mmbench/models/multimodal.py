"""The multimodal model: one encoder per modality, a fusion, per-modality logits, masking."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import ModelConfig
from mmbench.data.types import ModalitySpec, MultimodalData
from mmbench.models.encoders import DEFAULT_ENCODER
from mmbench.registry import ENCODERS, FUSIONS


@dataclass
class ModelSpec:
    """What a method needs to build a model: the data's modalities and classes, and the model config."""

    modalities: dict[str, ModalitySpec]
    num_classes: int
    config: ModelConfig = field(default_factory=ModelConfig)

    def only(self, modalities: Iterable[str]) -> ModelSpec:
        return ModelSpec({m: self.modalities[m] for m in modalities}, self.num_classes, self.config)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # fused prediction [B, C]
    features: dict[str, torch.Tensor]  # per-modality encoder outputs [B, D]
    unimodal_logits: dict[str, torch.Tensor]  # per-modality predictions [B, C] (modalities present)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # method-specific outputs


Inputs = MultimodalData | dict[str, torch.Tensor]


class MultimodalModel(nn.Module):
    """``encoders[m]`` -> features, ``fusion`` -> fused logits; ``heads`` for non-decomposable fusions.

    ``forward(batch, mask)`` replaces the features of masked modalities by zeros (their
    encoders are not run), so a masked modality contributes nothing but a bias.
    ``feature_hook(modality, features) -> features``, if given, is applied to each present
    modality's features before fusion (e.g. to scale their gradients).
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module, heads: dict[str, nn.Module] | None = None):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.heads = nn.ModuleDict(heads) if heads else None

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def forward(self, batch: Inputs, mask: Iterable[str] = (),
                feature_hook: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> ModelOutput:
        inputs = batch.inputs if isinstance(batch, MultimodalData) else batch
        mask = set(mask)
        present = [m for m in self.encoders if m not in mask]
        features = {m: self.encoders[m](inputs[m]) for m in present}
        if feature_hook is not None:
            features = {m: feature_hook(m, f) for m, f in features.items()}
        if len(present) < len(self.encoders):
            ref = inputs[next(iter(inputs))]
            zeros = torch.zeros(ref.shape[0], self._feature_dim(), device=ref.device, dtype=torch.float32)
            features = {m: features.get(m, zeros) for m in self.encoders}
        logits, unimodal = self.fusion(features, present)
        if self.heads is not None:
            unimodal = {m: self.heads[m](features[m]) for m in present}
        return ModelOutput(logits, {m: features[m] for m in present}, unimodal)

    def _feature_dim(self) -> int:
        return next(iter(self.encoders.values())).out_dim

    def monitor_loss(self, out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the separate per-modality heads on *detached* features.

        It trains only those heads, so per-modality accuracy is measurable for any fusion
        without changing what the encoders learn. Zero for decomposable fusions.
        """
        if self.heads is None:
            return torch.zeros((), device=labels.device)
        return sum(F.cross_entropy(self.heads[m](f.detach()), labels) for m, f in out.features.items())


def build_encoder(spec: ModalitySpec, name: str, cfg: ModelConfig) -> nn.Module:
    return ENCODERS.get(name)(spec.shape, cfg.feature_dim, cfg.hidden_dim, cfg.depth, cfg.dropout)


def build_model(spec: ModelSpec) -> MultimodalModel:
    """The default architecture: configured encoders (default by modality kind) and fusion."""
    cfg = spec.config
    encoders = {m: build_encoder(s, cfg.encoders.get(m, DEFAULT_ENCODER[s.kind]), cfg)
                for m, s in spec.modalities.items()}
    fusion = FUSIONS.get(cfg.fusion)(list(spec.modalities), cfg.feature_dim, spec.num_classes)
    heads = None
    if not fusion.decomposable:
        heads = {m: nn.Linear(cfg.feature_dim, spec.num_classes) for m in spec.modalities}
    return MultimodalModel(encoders, fusion, heads)
