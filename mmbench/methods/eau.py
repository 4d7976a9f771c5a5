"""EAU: Embracing Unimodal Aleatoric Uncertainty for robust multimodal fusion (reconstructed ‡).

Gao, Jiang, Xu, Shen, Li, Shen. *Embracing Unimodal Aleatoric Uncertainty for Robust Multimodal
Fusion*. CVPR 2024, pp. 26876-26885. No official repository survives; a third-party fork,
https://github.com/Knightrider16/EAURMF at its first commit 17d012d, carries the authors' README and
MVSA-Single code (``src/models/late_fusion.py``, ``src/models/bert.py`` / ``image.py``, ``util.py``,
``train.py``), read for the formulas and defaults. The paper itself was not available to check them.
Details: ``docs/methods/eau.md``.

From the fork's code:
- per modality a Gaussian embedding: ``mu_m = Linear(f_m)``, ``logvar_m = Linear(f_m)`` (``embed_dim``
  128), a unimodal classifier on a reparameterised sample;
- uncertainty-weighted fusion: per dimension ``w_m = softmax_m(-exp(logvar_m))`` (the release's
  ``softmax(stack([img_var, txt_var]))`` read with its swapped indices), ``mu_m * w_m`` stacked over the
  modalities, a channel gate sums them;
- information-bottleneck head: ``mu = Linear(g)``, ``logvar = Linear(g)``, ``z = mu + exp(logvar) * eps``
  (the release's scale: the variance), IB classifier on ``z``; the prediction is a linear layer on ``mu``;
- loss ``CE(fused) + kl_weight * (KL(mu, logvar) + sum_m KL(mu_m, logvar_m) + CE(IB(z)))
  + pair_kl_weight * KL_pair(1 -> 2) + contrastive_weight * sum_m NTXent(two samples of m)``, KL to
  N(0, I) summed over dimensions; the contrastive samples are ``mu_m + exp(logvar_m) * eps`` at
  temperature 0.5 (the release's ``Contrastive_loss``: both similarity matrices between the two views);
- uncertainty-guided gradient scaling (``train.py``) from ``modulation_start`` to ``modulation_end``:
  each modality's embedding is sampled ``cog_samples`` times with the others at their means, the
  variance over classes of the head's prediction is its "cognitive uncertainty" ``c_m``; every
  gradient of modality ``j``'s branch is multiplied by ``1 + zeta * mean_{m != j} c_m``.

Reconstructed / mmbench's choices:
- ‡ The channel gate: the fork's ``attention.py`` is a stand-in (its self-test calls another
  signature); mmbench follows it: ``x * sigmoid(conv1d_M(mean_d x)) + x`` summed over modalities.
- ‡ The source is a third-party copy; nothing was checked against the paper.
- The unimodal classifiers get no loss in the release (their outputs are unused); mmbench trains them
  on the detached samples (means in eval), so per-modality accuracy is measurable without changing
  anything else. Evaluation uses the means (the release samples its unimodal outputs in eval too).
- The release samples the image's cognitive-uncertainty draws with ``logvar`` as the scale (its text
  with the variance); mmbench uses the variance for every modality.
- ``KL_pair`` is the release's ``KL_regular`` (with its squared variances) between consecutive
  modalities; more than two modalities: every consecutive pair.
- Randomness comes from the run's seeded generator; a masked modality has weight 0 and a zero slot
  in the gate.

Logged per epoch: ``kl``, ``ib_loss``, ``pair_kl``, ``contrastive``, ``weight_<m>`` (mean fusion weight),
``var_<m>`` (mean variance), ``cog_<m>``. ``ModelOutput.extras``: ``mu_<m>``, ``logvar_<m>``, ``weight_<m>``
(per sample, mean over dimensions), ``fused_mu``, ``fused_logvar``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from mmbench.methods.base import Method
from mmbench.models.multimodal import HeadFusionModel, ModelSpec, configured_encoders
from mmbench.registry import METHODS


def noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal draws shaped like ``like``, from ``generator`` (on its device) when given."""
    if generator is None:
        return torch.randn_like(like)
    return torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over dimensions, averaged over the batch."""
    return (-(1 + logvar - mu.pow(2) - logvar.exp()) / 2).sum(1).mean()


def kl_pair(mu1, logvar1, mu2, logvar2) -> torch.Tensor:
    """The release's ``KL_regular`` between two diagonal Gaussians (as written, with squared variances)."""
    var1, var2 = logvar1.exp(), logvar2.exp()
    return (logvar2 - logvar1 + (var1.pow(2) + (mu1 - mu2).pow(2)) / (2 * var2.pow(2)) - 0.5).sum(1).mean()


def contrastive(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The release's ``Contrastive_loss``: ``s = exp(cos(z1_i, z2_j) / t)``, per sample
    ``-log(s_ii / (2 sum_j s_ij - s_ii))`` in both directions, averaged."""
    s = torch.exp(F.normalize(z1) @ F.normalize(z2).t() / temperature)

    def one_way(m):
        d = m.diagonal()
        return -torch.log(d / (2 * m.sum(1) - d))

    return ((one_way(s) + one_way(s.t())) * 0.5).mean()


class ChannelGate(nn.Module):
    """``x [B, M, D] -> sum_m x_m * (1 + sigmoid(conv1d(mean_d x))_m)`` (the fork's gate ‡)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = torch.sigmoid(self.conv(x.mean(2, keepdim=True)))
        return (x * score + x).sum(1)


class EAUHead(nn.Module):
    """Gaussian embeddings per modality, uncertainty-weighted gated fusion and the bottleneck head."""

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int, embed_dim: int):
        super().__init__()
        self.modalities = list(modalities)
        self.mu = nn.ModuleDict({m: nn.Linear(feature_dim, embed_dim) for m in modalities})
        self.logvar = nn.ModuleDict({m: nn.Linear(feature_dim, embed_dim) for m in modalities})
        self.clf = nn.ModuleDict({m: nn.Linear(embed_dim, num_classes) for m in modalities})
        self.gate = ChannelGate(len(modalities))
        self.fused_mu, self.fused_logvar = nn.Linear(embed_dim, embed_dim), nn.Linear(embed_dim, embed_dim)
        self.ib, self.out = nn.Linear(embed_dim, num_classes), nn.Linear(embed_dim, num_classes)
        self.generator: torch.Generator | None = None  # set by the method for a training step

    def fuse(self, slots: torch.Tensor):
        """``slots [B, M, D]`` -> ``(logits, mu, logvar)`` of the bottleneck."""
        g = self.gate(slots)
        mu = self.fused_mu(g)
        return self.out(mu), mu, self.fused_logvar(g)

    def forward(self, features, batch_size, device):
        mus = {m: self.mu[m](f) for m, f in features.items()}
        logvars = {m: self.logvar[m](f) for m, f in features.items()}
        if not mus:
            return torch.zeros(batch_size, self.out.out_features, device=device), {}, {}
        weights = torch.softmax(-torch.stack([lv.exp() for lv in logvars.values()]), 0)  # [M_present, B, D]
        weighted = dict(zip(mus, (w * mu for w, mu in zip(weights, mus.values()))))
        zeros = torch.zeros_like(next(iter(mus.values())))
        logits, mu, logvar = self.fuse(torch.stack([weighted.get(m, zeros) for m in self.modalities], 1))
        unimodal = {}
        for m in mus:
            embedding = mus[m].detach()
            if self.training:
                embedding = embedding + logvars[m].detach().exp().sqrt() * noise(embedding, self.generator)
            unimodal[m] = self.clf[m](embedding)
        extras = {"fused_mu": mu, "fused_logvar": logvar}
        for i, m in enumerate(mus):
            extras.update({f"mu_{m}": mus[m], f"logvar_{m}": logvars[m], f"weight_{m}": weights[i].mean(1)})
        return logits, unimodal, extras


@METHODS.register("eau")
class EAU(Method):
    """EAU (CVPR 2024) ‡: Gaussian unimodal embeddings, uncertainty-weighted fusion, contrastive and IB losses."""

    trains_unimodal_heads = True
    reconstructed = ("channel gate: the fork's stand-in for the missing attention module",
                     "formulas from a third-party copy of the code, not checked against the paper")

    @dataclass(frozen=True)
    class Params:
        embed_dim: Annotated[int, AT_LEAST_ONE] = 128  # late_fusion.py / bert.py: Linear(., 128)
        kl_weight: Annotated[float, NON_NEGATIVE] = 1e-3  # util.totolloss: each KL and the IB CE x 1e-3
        pair_kl_weight: Annotated[float, NON_NEGATIVE] = 1e-5  # train.py: 1e-5 * KL_regular
        contrastive_weight: Annotated[float, NON_NEGATIVE] = 1e-3  # train.py: conloss * 1e-3
        temperature: Annotated[float, POSITIVE] = 0.5  # util.con_loss: Contrastive_loss(0.5)
        zeta: Annotated[float, NON_NEGATIVE] = 0.01  # train.py --zeta
        modulation_start: Annotated[int, NON_NEGATIVE] = 5  # --modulation_starts (epochs from 0)
        modulation_end: Annotated[int, NON_NEGATIVE] = 100  # --modulation_ends (inclusive)
        cog_samples: Annotated[int, AT_LEAST_ONE] = 10  # cog_uncertainty_sample(sample_times=10)

    def build_model(self, spec: ModelSpec) -> HeadFusionModel:
        head = EAUHead(list(spec.modalities), spec.config.feature_dim, spec.num_classes, self.params.embed_dim)
        return HeadFusionModel(configured_encoders(spec), head)

    def forward(self, model, batch, state):
        model.fusion.generator = state.generator
        try:
            return model(batch)
        finally:
            model.fusion.generator = None

    def loss(self, model, batch, out, state):
        p, y, g, x = self.params, batch.labels, state.generator, out.extras
        present = list(out.unimodal_logits)
        kl = kl_normal(x["fused_mu"], x["fused_logvar"]) + sum(kl_normal(x[f"mu_{m}"], x[f"logvar_{m}"]) for m in present)
        z = x["fused_mu"] + x["fused_logvar"].exp() * noise(x["fused_mu"], g)
        ib = F.cross_entropy(model.fusion.ib(z), y)
        pair = sum((kl_pair(x[f"mu_{a}"], x[f"logvar_{a}"], x[f"mu_{b}"], x[f"logvar_{b}"])
                    for a, b in zip(present, present[1:])), torch.zeros((), device=y.device))
        con = torch.zeros((), device=y.device)
        for m in present:
            mu, scale = x[f"mu_{m}"], x[f"logvar_{m}"].exp()
            con = con + contrastive(mu + scale * noise(mu, g), mu + scale * noise(mu, g), p.temperature)
        total = (F.cross_entropy(out.logits, y) + p.kl_weight * (kl + ib) + p.pair_kl_weight * pair
                 + p.contrastive_weight * con + sum(F.cross_entropy(z_m, y) for z_m in out.unimodal_logits.values()))
        logs = {"kl": kl.item(), "ib_loss": ib.item(), "pair_kl": pair.item(), "contrastive": con.item()}
        for m in present:
            logs[f"weight_{m}"] = x[f"weight_{m}"].mean().item()
            logs[f"var_{m}"] = x[f"logvar_{m}"].exp().mean().item()
        return total, logs

    @torch.no_grad()
    def cognitive_uncertainty(self, model, out, generator) -> dict[str, torch.Tensor]:
        """Per modality ``m``: the variance over classes of the head's prediction with ``m`` sampled
        ``cog_samples`` times and the others at their means (unweighted, ``m`` in the last slot)."""
        head, x, s = model.fusion, out.extras, self.params.cog_samples
        present = list(out.unimodal_logits)
        result = {}
        for m in present:
            mu, var = x[f"mu_{m}"], x[f"logvar_{m}"].exp()
            b, d = mu.shape
            draws = (mu[:, None] + var[:, None] * noise(mu[:, None].expand(b, s, d), generator)).reshape(b * s, d)
            others = [x[f"mu_{o}"].repeat_interleave(s, 0) for o in present if o != m]
            slots = torch.stack([*others, draws], 1)
            if slots.shape[1] < len(head.modalities):  # masked modalities: zero slots
                pad = slots.new_zeros(b * s, len(head.modalities) - slots.shape[1], d)
                slots = torch.cat([pad, slots], 1)
            result[m] = head.fuse(slots)[0].var(-1)
        return result

    def after_backward(self, model, batch, out, state):
        p = self.params
        if not p.modulation_start <= state.epoch <= p.modulation_end or len(out.unimodal_logits) < 2:
            return {}
        cog = {m: c.mean() for m, c in self.cognitive_uncertainty(model, out, state.generator).items()}
        head = model.fusion
        for j in cog:
            coeff = 1 + p.zeta * torch.stack([c for m, c in cog.items() if m != j]).mean()
            for module in (model.encoders[j], head.mu[j], head.logvar[j], head.clf[j]):
                for param in module.parameters():
                    if param.grad is not None:
                        param.grad.mul_(coeff)
        return {f"cog_{m}": c.item() for m, c in cog.items()}
