"""QADM-Net / Multi-QuAD: (Multi-Level) Quality-Adaptive Dynamic Multimodal Network.

Shen, (Zhang,) Chen (South China University of Technology). arXiv 2412.14489: v1 "QADM-Net:
Quality-adaptive Dynamic Network for Reliable Multimodal Classification" (Dec 2024), v2
"QADM-Net: Multi-Level Quality-Adaptive Dynamic Network ...", v3 "Multi-QuAD: Multi-Level
Quality-Adaptive Dynamic Network for Reliable Multimodal Classification" (IEEE style). No official
code is known; only the abstracts and secondary summaries were available, so the mechanics below
are mmbench reconstructions. Leaderboards mark the method "reconstructed".

From the abstracts [V-abs]: (v1) **confidence-guided dynamic depths**: the network's depth follows
each sample's difficulty, set by the quality of its modalities; **informativeness-based dynamic
parameters**: per-sample behaviour driven by feature-level quality. (v2/v3) quality is estimated
at modality and feature level with **noise-free prototypes** and a **classifier-free** design;
**Global Confidence Normalized Depth (GCND)** normalises depth across modalities and samples so
that hard modality inputs do not distort it; **Layer-wise Greedy Parameter (LGP)**: sample-adaptive
parameters from feature-level quality, predicted cross-modally, layer by layer, for networks of
variable depth. Degradation is simulated by additive Gaussian noise of intensity sigma (v2 Fig. 1).

Reconstruction (``docs/methods/qadm.md``), every choice listed in ``QADM.reconstructed``:
1. *Network*: per modality, the configured encoder then ``num_layers`` residual blocks on its
   features, ``h <- h + 1[l < depth] * (gamma_l * relu(W_l h) + beta_l)``, and a linear head.
2. *Noise-free prototypes*: class means (and per-dimension variances) of every block's input on
   training data, moving averages weighted by the unimodal head's true-class probability (samples
   the modality gets right dominate; noisy ones barely count); ``spread`` = the weighted mean
   squared distance of training features to their own class prototype. Buffers saved with the model.
3. *Modality-level quality* (classifier-free): ``q_m = exp(-min_k ||h_m - p_k||^2 / (2 spread_m))`` on
   the encoder's features: about ``exp(-1/2)`` for a typical clean sample, toward 0 far from every
   prototype.
4. *GCND*: ``q~ = sigmoid((q - mean_q) / std_q)`` with each modality's running mean/std of ``q`` over
   training samples (normalised across samples by global, not batch, statistics -- a test
   prediction never depends on its batch -- and across modalities by each modality's own scale);
   ``depth = clamp(ceil(L (1 - q~)), min_depth, L)``: lower confidence, deeper network. Every block
   is computed and masked per sample (the compute saving of early exits is not reproduced).
5. *LGP*: block ``l``'s FiLM ``(gamma_l, beta_l) = (1 + tanh(a), b)`` with ``(a, b) = H_l([i_l, q_other])``,
   ``H_l`` linear and zero-initialised (identity at the start); ``i_l = exp(-(h_l - p_l[k])^2 / (2 var_l[k]))``
   per dimension is the feature-level informativeness of the block's input ``h_l`` against its
   nearest noise-free prototype ``k`` at that layer (greedy: each layer's parameters come from the
   previous layer's output), and ``q_other`` the mean quality of the other modalities present
   (cross-modality; the modality's own quality when alone).
6. *Fusion*: ``sum_m w_m head_m(h_m^L)`` with ``w = softmax_m(log q_m)`` (quality-weighted late fusion).
   Loss: ``CE(fused) + unimodal_weight * sum_m CE(head_m)``.
Before any statistics exist (first step): ``q = 1``, ``depth = ceil(L / 2)``, informativeness 1.
Defaults (all reconstructed): ``num_layers = 3``, ``min_depth = 1``, ``momentum = 0.1``, ``unimodal_weight = 1``.
Logged: ``quality_<m>``, ``depth_<m>``, ``weight_<m>``, ``informativeness_<m>`` (batch means);
``ModelOutput.extras`` holds them per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE, Range
from mmbench.measures import true_class_prob
from mmbench.methods.base import Method
from mmbench.models.fusion import PrototypeBank
from mmbench.models.multimodal import HeadFusionModel, ModelSpec, configured_encoders
from mmbench.registry import METHODS


def gcnd_depth(quality: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, num_layers: int,
               min_depth: int) -> torch.Tensor:
    """``clamp(ceil(L * (1 - sigmoid((q - mean) / std))), min_depth, L)`` as a float tensor."""
    normalised = torch.sigmoid((quality - mean) / std.clamp_min(1e-6))
    return torch.ceil(num_layers * (1 - normalised)).clamp(min_depth, num_layers)


class QADMBranch(nn.Module):
    """One modality: residual blocks with predicted FiLM parameters, a head, per-layer noise-free prototypes."""

    def __init__(self, dim: int, num_classes: int, num_layers: int):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(dim, dim) for _ in range(num_layers)])
        self.hypers = nn.ModuleList([nn.Linear(dim + 1, 2 * dim) for _ in range(num_layers)])
        for h in self.hypers:
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)
        self.head = nn.Linear(dim, num_classes)
        self.banks = nn.ModuleList([PrototypeBank(num_classes, dim) for _ in range(num_layers)])
        self.register_buffer("spread", torch.ones(()))
        self.register_buffer("q_mean", torch.zeros(()))
        self.register_buffer("q_var", torch.ones(()))
        self.register_buffer("q_seen", torch.zeros(()))

    @property
    def ready(self) -> bool:
        return self.banks[0].ready and bool(self.q_seen > 0)

    def log_quality(self, h: torch.Tensor) -> torch.Tensor:
        """``log q = -min_k ||h - p_k||^2 / (2 spread)`` (0 before any statistics)."""
        if not self.banks[0].ready:
            return torch.zeros(len(h), device=h.device)
        return -self.banks[0].sq_distances(h.detach()).min(1).values / (2 * self.spread)

    def informativeness(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Per-dimension ``exp(-(h - p[k])^2 / (2 var[k]))`` against the nearest prototype ``k`` of ``layer``."""
        bank = self.banks[layer]
        if not bank.ready:
            return torch.ones_like(h)
        h = h.detach()
        k = bank.sq_distances(h).argmin(1)
        return torch.exp(-(h - bank.protos[k]).pow(2) / (2 * bank.var[k].clamp_min(1e-4)))

    def depth(self, quality: torch.Tensor, num_layers: int, min_depth: int) -> torch.Tensor:
        if not self.ready:
            return torch.full_like(quality, float(max(min_depth, math.ceil(num_layers / 2))))
        return gcnd_depth(quality, self.q_mean, self.q_var.sqrt(), num_layers, min_depth)

    def run(self, h: torch.Tensor, depth: torch.Tensor, q_other: torch.Tensor):
        """The blocks: returns the output, each block's input and the first layer's informativeness."""
        inputs, info0 = [], None
        for layer, (block, hyper) in enumerate(zip(self.blocks, self.hypers)):
            inputs.append(h)
            info = self.informativeness(layer, h)
            if info0 is None:
                info0 = info
            film = hyper(torch.cat([info, q_other[:, None]], 1))
            gamma, beta = film.chunk(2, dim=1)
            delta = (1 + torch.tanh(gamma)) * F.relu(block(h)) + beta
            h = h + (depth > layer).to(h.dtype)[:, None] * delta
        return h, inputs, info0

    @torch.no_grad()
    def update(self, inputs: list[torch.Tensor], quality: torch.Tensor, labels: torch.Tensor,
               weights: torch.Tensor, momentum: float) -> None:
        for bank, x in zip(self.banks, inputs):
            bank.update(x, labels, momentum, weights)
        h0 = inputs[0].detach().float()
        sq = (h0 - self.banks[0].protos[labels]).pow(2).sum(1)
        spread = (weights * sq).sum() / weights.sum().clamp_min(1e-12)
        q = quality.detach().float()
        rate = momentum if self.q_seen > 0 else 1.0
        self.spread.mul_(1 - rate).add_(rate * spread.clamp_min(1e-8))
        self.q_mean.mul_(1 - rate).add_(rate * q.mean())
        self.q_var.mul_(1 - rate).add_(rate * q.var(unbiased=False).clamp_min(1e-8))
        self.q_seen.fill_(1)


class QADMHead(nn.Module):
    def __init__(self, modalities: list[str], dim: int, num_classes: int, num_layers: int, min_depth: int):
        super().__init__()
        self.branches = nn.ModuleDict({m: QADMBranch(dim, num_classes, num_layers) for m in modalities})
        self.num_classes, self.num_layers, self.min_depth = num_classes, num_layers, min_depth

    def forward(self, features, batch_size, device):
        mods = list(features)
        if not mods:
            return torch.zeros(batch_size, self.num_classes, device=device), {}, {}
        br = self.branches
        log_q = {m: br[m].log_quality(f) for m, f in features.items()}
        q = {m: v.exp() for m, v in log_q.items()}
        unimodal, extras = {}, {}
        for m, f in features.items():
            others = [q[n] for n in mods if n != m]
            q_other = torch.stack(others).mean(0) if others else q[m]
            depth = br[m].depth(q[m], self.num_layers, self.min_depth)
            out, inputs, info = br[m].run(f, depth, q_other)
            unimodal[m] = br[m].head(out)
            extras.update({f"quality_{m}": q[m], f"depth_{m}": depth, f"informativeness_{m}": info.mean(1),
                           f"layers_{m}": torch.stack([x.detach() for x in inputs])})
        weights = torch.softmax(torch.stack([log_q[m] for m in mods]), dim=0)
        fused = sum(weights[i][:, None] * unimodal[m] for i, m in enumerate(mods))
        extras.update({f"weight_{m}": weights[i] for i, m in enumerate(mods)})
        return fused, unimodal, extras


@METHODS.register("qadm")
class QADM(Method):
    """QADM-Net/Multi-QuAD: quality-guided per-sample depth and parameters (reconstructed)."""

    trains_unimodal_heads = True

    reconstructed: ClassVar[tuple[str, ...]] = (
        "residual FiLM blocks on the encoder features, masked per sample",
        "noise-free prototypes: EMA class means weighted by the true-class probability",
        "quality q = exp(-min_k ||h - p_k||^2 / (2 spread)), classifier-free",
        "GCND: ceil(L (1 - sigmoid(z-scored q))) with each modality's running statistics",
        "LGP: zero-initialised linear hypernetwork per layer on [informativeness, others' quality]",
        "fusion softmax(log q) late fusion, loss terms and all defaults")

    @dataclass(frozen=True)
    class Params:
        num_layers: Annotated[int, AT_LEAST_ONE] = 3
        min_depth: Annotated[int, NON_NEGATIVE] = 1
        momentum: Annotated[float, Range(0, 1, low_open=True)] = 0.1
        unimodal_weight: Annotated[float, NON_NEGATIVE] = 1.0

        def __post_init__(self):
            if self.min_depth > self.num_layers:
                raise ValueError(f"min_depth must be at most num_layers, got {self.min_depth} > {self.num_layers}")

    def build_model(self, spec: ModelSpec) -> HeadFusionModel:
        p = self.params
        head = QADMHead(list(spec.modalities), spec.config.feature_dim, spec.num_classes, p.num_layers, p.min_depth)
        return HeadFusionModel(configured_encoders(spec), head)

    def loss(self, model, batch, out, state):
        y = batch.labels
        unimodal = sum(F.cross_entropy(z, y) for z in out.unimodal_logits.values())
        total = F.cross_entropy(out.logits, y) + self.params.unimodal_weight * unimodal
        logs = {}
        for m in out.unimodal_logits:
            for key in ("quality", "depth", "weight", "informativeness"):
                logs[f"{key}_{m}"] = out.extras[f"{key}_{m}"].float().mean().item()
        return total, logs

    def after_backward(self, model, batch, out, state):
        y = batch.labels
        for m, logits in out.unimodal_logits.items():
            weights = true_class_prob(logits.detach().float(), y)
            model.fusion.branches[m].update(list(out.extras[f"layers_{m}"]), out.extras[f"quality_{m}"], y, weights,
                                            self.params.momentum)
        return {}
