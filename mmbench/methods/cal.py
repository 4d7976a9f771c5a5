"""CAL: Contribution-Guided Asymmetric Learning for robust multimodal fusion under imbalance and noise.

Xu, Kou, Wu, Liu. arXiv 2510.26289 (2025). No official code is known; only the abstract
(v1, v2) and secondary summaries were available, so the mechanics are mmbench reconstructions.

From the abstract: a contribution metric ``W^m`` combines an *information quantity*
``I(m)`` and a *confidence* ``D(m)``; an *asymmetric gradient acceleration* speeds modalities
up according to their contribution without suppressing the dominant one; a
*contribution-aware Asymmetric Information Bottleneck* (AIB) compresses low-contribution,
noisy modalities harder. Headline numbers: CREMA-D 79.30 %, KS 74.82 %, AVE 74.21 %.

Reconstruction (see ``docs/methods/cal.md``), every choice a parameter:
1. *Coalition values*: ``v(S)`` = batch mean true-class probability of the fused head when only
   the modalities in ``S`` are kept (features of the others zeroed; computed from this step's
   detached features, :func:`~mmbench.measures.coalition_values`).
2. ``I(m)`` = exact Shapley value of ``v`` (Shapley-inspired per the summaries), floored at 0.
3. ``D(m)`` = the unimodal head's mean max-softmax (``confidence="max_prob"``), or its mean
   true-class probability (``"true_class"``), or ``1 -`` normalised entropy (``"entropy"``).
4. ``W^m = alpha * I(m)/sum I + (1 - alpha) * D(m)/sum D``.
5. Acceleration: ``a_m = 1 + softmax(s * T * W)_m`` multiplies every gradient of encoder ``m``
   (the same as scaling the gradient of its features, as ARL's gradient-scale function does,
   since the encoder's parameters reach the loss only through its features); every modality
   is sped up (``a_m > 1``). ``accelerate="high"`` (default, ``s = +1``) speeds the
   higher-contribution modality up more, as both abstracts say ("dynamic enhancement of
   high-contribution modalities", v1; "reinforces the gradients of high-contribution
   modalities", v2); ``"low"`` (``s = -1``) is the opposite direction, kept for comparison.
6. AIB: each encoder is followed by a variational bottleneck ``z = mu + sigma * eps`` (``mu`` at
   evaluation) with ``KL(N(mu, sigma^2) || N(0, I))`` weighted by ``beta_m = beta0 * (1 - W^m)``:
   the lower the contribution, the harder the compression.
7. Loss: ``CE(fused(z)) + unimodal_weight * sum_m CE(h_m(z)) + sum_m beta_m KL_m``, ``h_m`` the
   model's unimodal output of ``m``: for the concat fusion the fused head's block of ``m`` with
   bias/M (OGM-GE's split, ARL's shared-head unimodal outputs), separate heads for fusions that
   do not decompose.
Defaults: ``alpha = 0.5``, ``T = 4`` (ARL's KS/AVE temperature), ``beta0 = 1e-3``,
``unimodal_weight = 1``. ``W``, ``I``, ``D``, the accelerations and the betas are logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import NON_NEGATIVE, POSITIVE
from mmbench.measures import coalition_values, shapley_values, true_class_prob
from mmbench.methods.base import Method, check_choices
from mmbench.methods.modulation import encoder_parameters, scale_gradients
from mmbench.models.multimodal import ModelSpec, MultimodalModel, build_model
from mmbench.registry import METHODS

CONFIDENCES = ("max_prob", "true_class", "entropy")
DIRECTIONS = ("high", "low")


class VariationalBottleneck(nn.Module):
    """``encoder`` followed by ``z = mu + sigma * eps``; keeps the per-sample KL of its last pass in ``kl``."""

    def __init__(self, encoder: nn.Module, dim: int):
        super().__init__()
        self.encoder = encoder
        self.stats = nn.Linear(dim, 2 * dim)
        self.out_dim = dim
        self.kl: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, log_var = self.stats(self.encoder(x)).chunk(2, dim=1)
        log_var = log_var.clamp(-10, 10)
        self.kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(1)
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * (0.5 * log_var).exp()


def confidence(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> float:
    p = torch.softmax(logits.detach(), 1)
    if kind == "max_prob":
        return p.max(1).values.mean().item()
    if kind == "true_class":
        return true_class_prob(logits.detach(), labels).mean().item()
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1) / math.log(p.shape[1])
    return (1 - entropy).mean().item()


def contributions(info: dict[str, float], conf: dict[str, float], alpha: float) -> dict[str, float]:
    """``W^m = alpha * norm(I) + (1 - alpha) * norm(D)`` with ``norm(x)_m = x_m / sum_k x_k`` (I floored at 0)."""
    info = {m: max(v, 0.0) for m, v in info.items()}
    n = len(info)
    si, sd = sum(info.values()), sum(conf.values())
    return {m: alpha * (info[m] / si if si > 0 else 1 / n) + (1 - alpha) * (conf[m] / sd if sd > 0 else 1 / n)
            for m in info}


@METHODS.register("cal")
class CAL(Method):
    """CAL: contribution-guided gradient acceleration and asymmetric information bottleneck (reconstructed)."""

    trains_unimodal_heads = True

    reconstructed: ClassVar[tuple[str, ...]] = ("I(m), D(m), W^m formulas", "acceleration rule", "AIB and its beta",
                                                "loss weights", "all defaults")

    @dataclass(frozen=True)
    class Params:
        alpha: Annotated[float, NON_NEGATIVE] = 0.5
        temperature: Annotated[float, POSITIVE] = 4.0
        accelerate: str = "high"  # high | low: which contribution end is sped up more
        confidence: str = "max_prob"  # max_prob | true_class | entropy
        beta0: Annotated[float, NON_NEGATIVE] = 1e-3
        unimodal_weight: Annotated[float, NON_NEGATIVE] = 1.0

        def __post_init__(self):
            check_choices(self, accelerate=DIRECTIONS, confidence=CONFIDENCES)

    def __init__(self, params=None):
        super().__init__(params)
        self._accel: dict[str, float] = {}

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        model = build_model(spec)
        bottlenecks = {m: VariationalBottleneck(enc, spec.config.feature_dim) for m, enc in model.encoders.items()}
        return MultimodalModel(bottlenecks, model.fusion, dict(model.heads) if model.heads is not None else None)

    def measure(self, model: MultimodalModel, out, labels: torch.Tensor) -> dict[str, dict[str, float]]:
        """Per-modality ``I``, ``D``, ``W``, acceleration and bottleneck weight for this batch."""
        p = self.params
        modalities = list(out.features)
        info = shapley_values(coalition_values(model, out.features, labels), modalities)
        conf = {m: confidence(out.unimodal_logits[m], labels, p.confidence) for m in modalities}
        weight = contributions(info, conf, p.alpha)
        sign = -1.0 if p.accelerate == "low" else 1.0
        w = torch.softmax(torch.tensor([sign * p.temperature * weight[m] for m in modalities]), 0)
        return {"I": info, "D": conf, "W": weight,
                "accel": {m: 1.0 + w[i].item() for i, m in enumerate(modalities)},
                "beta": {m: p.beta0 * (1.0 - weight[m]) for m in modalities}}

    def loss(self, model, batch, out, state):
        p = self.params
        y = batch.labels
        measured = self.measure(model, out, y)
        self._accel = measured["accel"]
        fused = F.cross_entropy(out.logits, y)
        unimodal = sum(F.cross_entropy(z, y) for z in out.unimodal_logits.values())
        kl = sum(measured["beta"][m] * model.encoders[m].kl.mean() for m in out.features)
        logs = {f"{k}_{m}": v for k, per in measured.items() for m, v in per.items()}
        return fused + p.unimodal_weight * unimodal + kl, logs

    def after_backward(self, model, batch, out, state):
        for m, a in self._accel.items():
            scale_gradients(encoder_parameters(model, m, "all"), a)
        return {}
