"""Fusion modules: per-modality features -> fused logits (each owns its classifier).

A *decomposable* fusion's logits are a sum of per-modality terms, which are its unimodal
logits (OGM-GE splits the concat head this way). A non-decomposable fusion (gated, FiLM)
gets separate per-modality heads from :class:`~mmbench.models.MultimodalModel`.
All take ``(modalities, feature_dim, num_classes)``; ``forward(features, present)`` gets
zeros for masked modalities and the list of modalities that are present.
:class:`PrototypeBank` keeps class prototypes for the fusion heads of MICINet and QADM.
"""

from __future__ import annotations

import torch
from torch import nn

from mmbench.errors import MMBenchError
from mmbench.registry import FUSIONS


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate features, one linear head; unimodal logits ``f_m W_m^T + b / M`` (OGM-GE)."""

    decomposable = True

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int):
        super().__init__()
        self.modalities = list(modalities)
        self.feature_dim = feature_dim
        self.fc = nn.Linear(feature_dim * len(modalities), num_classes)

    def forward(self, features: dict[str, torch.Tensor], present: list[str]):
        logits = self.fc(torch.cat([features[m] for m in self.modalities], dim=1))
        d, share = self.feature_dim, self.fc.bias / len(self.modalities)
        unimodal = {m: features[m] @ self.fc.weight[:, i * d:(i + 1) * d].T + share
                    for i, m in enumerate(self.modalities) if m in present}
        return logits, unimodal


@FUSIONS.register("sum")
class SumFusion(nn.Module):
    """Sum of per-modality linear heads (a masked modality contributes its head's bias)."""

    decomposable = True

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int):
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Linear(feature_dim, num_classes) for m in modalities})

    def forward(self, features: dict[str, torch.Tensor], present: list[str]):
        logits = {m: head(features[m]) for m, head in self.heads.items()}
        return self.combine(logits, present), {m: logits[m] for m in present}

    def combine(self, logits: dict[str, torch.Tensor], present: list[str]) -> torch.Tensor:
        return torch.stack(list(logits.values())).sum(0)


@FUSIONS.register("late")
class LateFusion(SumFusion):
    """Average of per-modality heads' logits over the modalities present (all heads' biases if none)."""

    def combine(self, logits: dict[str, torch.Tensor], present: list[str]) -> torch.Tensor:
        return torch.stack([logits[m] for m in present or logits]).mean(0)


class _TwoModalityFusion(nn.Module):
    decomposable = False

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int):
        super().__init__()
        if len(modalities) != 2:
            raise MMBenchError(f"{self.registry_name} fusion needs exactly 2 modalities, got {len(modalities)}; "
                               "use concat, sum or late for more")
        self.first, self.second = modalities
        self.fc_out = nn.Linear(feature_dim, num_classes)


@FUSIONS.register("gated")
class GatedFusion(_TwoModalityFusion):
    """The first modality gates the second: ``fc_out(sigmoid(fc_x(x)) * fc_y(y))`` (OGM-GE's gated fusion)."""

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int):
        super().__init__(modalities, feature_dim, num_classes)
        self.fc_x = nn.Linear(feature_dim, feature_dim)
        self.fc_y = nn.Linear(feature_dim, feature_dim)

    def forward(self, features: dict[str, torch.Tensor], present: list[str]):
        gate = torch.sigmoid(self.fc_x(features[self.first]))
        return self.fc_out(gate * self.fc_y(features[self.second])), {}


@FUSIONS.register("film")
class FiLMFusion(_TwoModalityFusion):
    """The first modality scales and shifts the second: ``fc_out(gamma(x) * y + beta(x))`` (FiLM)."""

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int):
        super().__init__(modalities, feature_dim, num_classes)
        self.film = nn.Linear(feature_dim, 2 * feature_dim)

    def forward(self, features: dict[str, torch.Tensor], present: list[str]):
        gamma, beta = self.film(features[self.first]).chunk(2, dim=1)
        return self.fc_out(gamma * features[self.second] + beta), {}


class PrototypeBank(nn.Module):
    """Class prototypes (means) and per-dimension class variances of some features, as buffers.

    :meth:`update` moves them toward the (optionally weighted) class means of a batch by an
    exponential moving average (the first batch that contains a class sets it); classes not
    seen yet are at infinite distance. Saved with the model, so evaluation uses the training
    statistics, never the test batch's.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.register_buffer("protos", torch.zeros(num_classes, dim))
        self.register_buffer("var", torch.ones(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes))

    @property
    def ready(self) -> bool:
        return bool(self.seen.any())

    def sq_distances(self, x: torch.Tensor) -> torch.Tensor:
        """``||x_i - p_k||^2`` for every sample and class, ``inf`` for classes not seen yet."""
        d = torch.cdist(x.float(), self.protos).pow(2)
        return d.masked_fill(self.seen[None] == 0, float("inf"))

    @torch.no_grad()
    def update(self, x: torch.Tensor, labels: torch.Tensor, momentum: float,
               weights: torch.Tensor | None = None) -> None:
        x = x.detach().float()
        w = torch.ones(len(x), device=x.device) if weights is None else weights.detach().float()
        onehot = torch.nn.functional.one_hot(labels, self.protos.shape[0]).float() * w[:, None]  # [B, C]
        mass = onehot.sum(0)
        has = mass > 1e-12
        mean = (onehot.T @ x) / mass.clamp_min(1e-12)[:, None]
        var = (onehot.T @ x.pow(2)) / mass.clamp_min(1e-12)[:, None] - mean.pow(2)
        rate = torch.where(self.seen > 0, torch.full_like(mass, momentum), torch.ones_like(mass))
        rate = (rate * has)[:, None]
        self.protos.mul_(1 - rate).add_(rate * mean)
        self.var.mul_(1 - rate).add_(rate * var.clamp_min(0))
        self.seen.copy_(torch.maximum(self.seen, has.float()))
