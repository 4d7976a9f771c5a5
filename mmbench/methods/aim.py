"""AIM: Adaptive Intra-Network Modulation for balanced multimodal learning.

Shen, Chen, Zhang. arXiv 2508.19769 (2025). No official code is known; only the abstract
(v1, v3) and secondary summaries were available, so the mechanics are mmbench reconstructions.

From the abstract [V-abs]: imbalance comes from intra-network optimisation bias (parameters
and depths converge at different paces). AIM decouples the dominant modality's
*under-optimised parameters* into **Auxiliary Blocks** and has the model rely on these
performance-degraded blocks during joint training with the weak modality, so the weak
modality is not suppressed and the under-optimised parameters get targeted optimisation;
it measures the imbalance **at each depth** and sets the **modulation strength per depth**
(PAM: parameter-adaptive, DAM: depth-adaptive modulation); Depth-Adaptive Prototypes (DAP)
score each depth's sub-network [V-sec].

Reconstruction, every choice a parameter (``docs/methods/aim.md``):
- *Depth blocks*: an encoder's layer sequence split after each activation (``mlp``, ``cnn``,
  ``conv1d``; an encoder may instead define ``blocks()``); block outputs are average-pooled
  to vectors for scoring. Video modalities: the frame encoder's blocks run on every frame and
  each depth's pooled output is averaged over frames, as :class:`FramePool` does.
- *Per-depth performance* (a documented proxy for DAP): at each epoch start, class-mean
  prototypes of every depth's pooled features on a seeded, stratified random subset of
  ``prototype_fraction`` of the training set (drawn once per run; sources may store samples
  sorted by class), no gradients, eval mode, as PMR does; ``s^m_d`` = mean true-class
  probability of ``softmax(-distance)`` on that subset.
- *Dominant modality* = the highest last-depth score; per-depth imbalance
  ``rho_d = s^dom_d / mean_{weak} s^weak_d``; DAM strength ``lambda_d = tanh(alpha * max(rho_d - 1, 0))``,
  capped at ``max_fraction``.
- *PAM / Auxiliary Blocks*: in the dominant encoder's depth-d block, the fraction ``lambda_d`` of
  weights (tensors with ``ndim >= 2``) with the smallest running mean of ``|grad|`` are the
  under-optimised parameters. The auxiliary path runs the dominant encoder with **only those
  weights active** (the others masked to zero: performance-degraded; biases and norms kept),
  is fused with the weak modalities' features, and adds ``aux_weight * CE`` to the loss: the
  weak modalities must carry that prediction, and the under-optimised parameters get gradient.
  The auxiliary pass normalises with batch statistics like the main pass but leaves the
  encoder's norm-layer buffers (running statistics) untouched.
- ``weak_boost``: the weak encoders' gradients are multiplied by ``1 + mean_d lambda_d``.
Per-depth scores, ``rho_d``, ``lambda_d`` and the auxiliary loss are logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mmbench.config import NON_NEGATIVE, UNIT, Range
from mmbench.data.types import stratified_subset
from mmbench.evaluation import eval_mode
from mmbench.measures import true_class_prob
from mmbench.methods.base import Method
from mmbench.methods.modulation import encoder_parameters, scale_gradients
from mmbench.models.blocks import depth_blocks, pooled
from mmbench.models.multimodal import FramePool, Standardize
from mmbench.registry import METHODS


def _run(d: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block(x)


def depth_features(encoder: nn.Module, x: torch.Tensor, call=_run) -> list[torch.Tensor]:
    """Every depth's output for the inputs ``x``, pooled to one vector per sample; the last is the
    encoder's output. ``call(d, block, x)`` runs block ``d``. A frame-pooled video encoder runs its
    blocks on every frame, and each depth's pooled output is averaged over the frames."""
    inner = encoder.encoder if isinstance(encoder, Standardize) else encoder
    frames = x.shape[1] if isinstance(inner, FramePool) else None
    if frames:
        x = x.flatten(0, 1)
    outputs = []
    for d, block in enumerate(depth_blocks(encoder)):
        x = call(d, block, x)
        outputs.append(pooled(x).unflatten(0, (-1, frames)).mean(1) if frames else pooled(x))
    return outputs


def prototype_scores(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean true-class probability of ``softmax(-distance to class means)`` (PMR's prototype classifier)."""
    onehot = F.one_hot(labels, num_classes).float()
    counts = onehot.sum(0).clamp_min(1)
    prototypes = onehot.T @ features / counts[:, None]
    return true_class_prob(-torch.cdist(features, prototypes), labels).mean().item()


@METHODS.register("aim")
class AIM(Method):
    """AIM: depth-adaptive auxiliary blocks of the dominant encoder's under-optimised weights (reconstructed)."""

    reconstructed: ClassVar[tuple[str, ...]] = ("depth performance proxy for DAP", "under-optimised selection",
                                                "auxiliary path", "modulation strength", "all defaults")

    @dataclass(frozen=True)
    class Params:
        alpha: Annotated[float, NON_NEGATIVE] = 1.0
        aux_weight: Annotated[float, NON_NEGATIVE] = 1.0
        max_fraction: Annotated[float, UNIT] = 0.5
        prototype_fraction: Annotated[float, Range(0, 1, low_open=True)] = 0.1
        grad_momentum: Annotated[float, UNIT] = 0.9
        warmup_epochs: Annotated[int, NON_NEGATIVE] = 1
        weak_boost: bool = True

    def __init__(self, params=None):
        super().__init__(params)
        self.dominant: str | None = None
        self.strength: list[float] = []
        self.grad_ema: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}  # parameter name in the dominant encoder -> keep mask
        self.subset: torch.Tensor | None = None  # training samples the depth scores are measured on

    # -- measuring ---------------------------------------------------------------------
    @torch.no_grad()
    def depth_scores(self, model, data) -> dict[str, list[float]]:
        """Per modality, the prototype score of every depth on the samples ``data``."""
        with eval_mode(model):
            return {m: [prototype_scores(f, data.labels, data.meta.num_classes)
                        for f in depth_features(model.encoders[m], data.inputs[m])] for m in model.encoders}

    def on_epoch_start(self, state):
        p = self.params
        if state.train is None or len(state.model.encoders) < 2:
            return
        if self.subset is None:
            n = max(int(len(state.train) * p.prototype_fraction), 4 * state.train.meta.num_classes)
            self.subset = stratified_subset(state.train.labels, n, state.generator)
        scores = self.depth_scores(state.model, state.train.index(self.subset))
        self.dominant = max(scores, key=lambda m: scores[m][-1])
        weak = [m for m in scores if m != self.dominant]
        self.strength = []
        for d, s_dom in enumerate(scores[self.dominant]):
            s_weak = sum(scores[m][min(d, len(scores[m]) - 1)] for m in weak) / len(weak)
            rho = s_dom / max(s_weak, 1e-12)
            self.strength.append(min(math.tanh(p.alpha * max(rho - 1, 0.0)), p.max_fraction))
            state.epoch_logs[f"rho_d{d}"] = rho
        for m, per_depth in scores.items():
            state.epoch_logs.update({f"score_{m}_d{d}": s for d, s in enumerate(per_depth)})
        state.epoch_logs.update({f"lambda_d{d}": lam for d, lam in enumerate(self.strength)})
        self.masks = self.under_optimised_masks(state.model) if state.epoch >= p.warmup_epochs else {}

    def under_optimised_masks(self, model) -> dict[str, torch.Tensor]:
        """Per weight tensor of the dominant encoder: True for the ``lambda_d`` share with the smallest running |grad|."""
        masks = {}
        for d, block in enumerate(depth_blocks(model.encoders[self.dominant])):
            fraction = self.strength[d]
            for name, param in block.named_parameters():
                key = f"{d}.{name}"
                ema = self.grad_ema.get(f"{self.dominant}:{key}")
                if param.ndim < 2 or ema is None or fraction <= 0:
                    continue
                ema = ema.flatten()
                k = max(int(fraction * ema.numel()), 1)
                keep = torch.zeros_like(ema, dtype=torch.bool)
                keep[torch.topk(ema, k, largest=False).indices] = True
                masks[key] = keep.view_as(param)
        return masks

    # -- training ----------------------------------------------------------------------
    def auxiliary_features(self, model, batch) -> torch.Tensor:
        """The dominant encoder with only its under-optimised weights active; its norm layers see
        copies of their buffers, so the pass leaves the running statistics as they were."""

        def masked(d, block, x):
            params = {n: (q * self.masks[f"{d}.{n}"] if f"{d}.{n}" in self.masks else q)
                      for n, q in block.named_parameters()}
            buffers = {n: b.clone() for n, b in block.named_buffers()}
            return functional_call(block, {**params, **buffers}, (x,))

        return depth_features(model.encoders[self.dominant], batch.inputs[self.dominant], masked)[-1]

    def loss(self, model, batch, out, state):
        loss = F.cross_entropy(out.logits, batch.labels)
        if not self.masks:
            return loss, {}
        features = dict(out.features)
        features[self.dominant] = self.auxiliary_features(model, batch)
        aux_logits, _ = model.fuse(features)
        aux = F.cross_entropy(aux_logits, batch.labels)
        return loss + self.params.aux_weight * aux, {"aux_loss": aux.item()}

    @torch.no_grad()
    def after_backward(self, model, batch, out, state):
        mom = self.params.grad_momentum
        for m, encoder in model.encoders.items():  # every encoder: the dominant one may change
            for d, block in enumerate(depth_blocks(encoder)):
                for name, param in block.named_parameters():
                    if param.grad is not None and param.ndim >= 2:
                        key, g = f"{m}:{d}.{name}", param.grad.abs()
                        self.grad_ema[key] = mom * self.grad_ema[key] + (1 - mom) * g if key in self.grad_ema else g.clone()
        if self.params.weak_boost and self.strength:
            boost = 1 + sum(self.strength) / len(self.strength)
            for m in model.encoders:
                if m != self.dominant:
                    scale_gradients(encoder_parameters(model, m, "all"), boost)
        return {}
