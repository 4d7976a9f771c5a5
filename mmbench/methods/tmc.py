"""TMC / ETMC: Trusted Multi-View Classification (with Dynamic Evidential Fusion).

Han, Zhang, Fu, Zhou. *Trusted Multi-View Classification*, ICLR 2021, arXiv 2102.02051; *Trusted
Multi-View Classification with Dynamic Evidential Fusion*, TPAMI 2022, arXiv 2204.11423.
Official code: https://github.com/hanmenghan/TMC, line-checked at 08d0ca4 (ICLR ``model.py``
``KL`` / ``ce_loss`` / ``DS_Combin``, ``train.py``; TPAMI ``models/TMC.py``, ``train_ETMC_nyud2.py``).
Equality with the release, measured: ``docs/methods/tmc.md``.

From the official code [V-code]:
- per modality, evidence ``e = softplus(linear(features))`` (no ReLU), ``alpha = e + 1``,
  ``S = sum_k alpha_k``, belief ``b = e / S``, uncertainty ``u = K / S``;
- reduced Dempster combination of two opinions: conflict ``C = sum_{i != j} b1_i b2_j``,
  ``b = (b1 * b2 + b1 * u2 + b2 * u1) / (1 - C)``, ``u = u1 * u2 / (1 - C)``, back to a Dirichlet by
  ``S = K / u``, ``e = b * S``, ``alpha = e + 1``; more views: applied two at a time in order
  (mmbench computes ``1 - C`` as the sum of the non-conflicting masses, the same number without the
  release's cancellation when two nearly certain opinions disagree);
- loss per Dirichlet (``ce_loss``): ``sum_k y_k (digamma(S) - digamma(alpha_k)) + lambda_t *
  KL(Dir(alpha~) || Dir(1))`` with ``alpha~ = y + (1 - y) * alpha`` (the true class's evidence
  removed) and ``lambda_t = min(1, t / annealing_epochs)``, **t the epoch**; summed over every
  modality's Dirichlet and the combined one, averaged over the batch;
- ETMC (``variant="etmc"``): a pseudo-view classifier on the concatenated features gives a third
  opinion, combined last: ``DS(DS(alpha_1, alpha_2, ...), alpha_pseudo)``; its loss term is added.

mmbench's choices:
- The epoch as annealing step: ICLR counts epochs from 1 (lambda = 1/50 in the first epoch),
  ETMC from 0; ``annealing_start`` is the step of mmbench's first epoch (epoch 0): 1 (ICLR,
  default) or 0 (ETMC). ETMC's evaluation passes ``inf`` (lambda 1) for its loss; mmbench's
  evaluation loss is the cross-entropy of the fused prediction instead.
- The prediction: ``logits = log(alpha / S)``, the log of the Dirichlet mean, so the argmax is the
  release's argmax of the evidence and ``softmax(logits)`` is the expected class probability; the
  unimodal logits are each modality's ``log(alpha_m / S_m)``.
- The ICLR code classifies raw view vectors with one linear layer; mmbench puts the evidence layer
  on the configured encoder's features. ETMC's test-set model selection is not reproduced
  (selection on validation).
- A masked (absent) modality is a vacuous opinion (``alpha = 1``, ``u = 1``), the identity of the
  combination; the ETMC pseudo-view sees zeros for it. With nothing present: ``alpha = 1``.

Observed in mmbench (not a choice): strong *additive* Gaussian input noise tends to *raise* the evidence of
ReLU encoders (features grow with the input's norm), so a noised modality's ``u`` falls while the conflict
``C`` between the opinions rises with the noise level; destroying a modality's signal at the data's own
scale raises its ``u`` and the fused ``u`` (``tests/test_tmc.py``).

Logged per epoch: ``kl_coef`` (lambda_t), ``uncertainty`` (fused ``u``), ``uncertainty_<m>``,
``conflict`` (mean conflict ``C`` of the combinations). ``ModelOutput.extras`` holds per-sample
``alpha``, ``uncertainty`` and ``uncertainty_<m>`` (and ``alpha_<m>``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE
from mmbench.methods.base import Method, check_choices
from mmbench.models.multimodal import HeadFusionModel, ModelSpec, configured_encoders
from mmbench.registry import METHODS

VARIANTS = ("tmc", "etmc")


def opinion(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Belief masses ``b = (alpha - 1) / S`` ``[B, K]`` and uncertainty ``u = K / S`` ``[B]``."""
    s = alpha.sum(1, keepdim=True)
    return (alpha - 1) / s, alpha.shape[1] / s.squeeze(1)


def ds_combine(alpha1: torch.Tensor, alpha2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced Dempster combination of two Dirichlet opinions: ``(alpha, conflict C)``."""
    k = alpha1.shape[1]
    b1, u1 = opinion(alpha1)
    b2, u2 = opinion(alpha2)
    agree = b1 * b2 + b1 * u2[:, None] + b2 * u1[:, None]
    # 1 - C, C = sum_{i != j} b1_i b2_j, computed as the non-conflicting mass (the same number, without the
    # cancellation of 1 - C when both opinions are nearly certain and disagree)
    keep = agree.sum(1) + u1 * u2
    b, u = agree / keep[:, None], u1 * u2 / keep
    return b * (k / u)[:, None] + 1, 1 - keep


def combine(alphas: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two at a time, in order: ``DS(DS(a1, a2), a3)...``; returns the mean conflict per sample too."""
    alpha, conflicts = alphas[0], []
    for nxt in alphas[1:]:
        alpha, c = ds_combine(alpha, nxt)
        conflicts.append(c)
    mean_conflict = torch.stack(conflicts).mean(0) if conflicts else torch.zeros_like(alpha[:, 0])
    return alpha, mean_conflict


def kl_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """``KL(Dir(alpha) || Dir(1, ..., 1))`` per sample."""
    k = alpha.shape[1]
    s = alpha.sum(1)
    log_b = torch.lgamma(s) - torch.lgamma(alpha).sum(1) - math.lgamma(k)
    return ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(s)[:, None])).sum(1) + log_b


def evidential_loss(alpha: torch.Tensor, labels: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """TMC's ``ce_loss`` per sample: ``sum_k y_k (psi(S) - psi(alpha_k)) + kl_coef * KL(Dir(alpha~) || Dir(1))``."""
    y = F.one_hot(labels, alpha.shape[1]).to(alpha.dtype)
    s = alpha.sum(1, keepdim=True)
    fit = (y * (torch.digamma(s) - torch.digamma(alpha))).sum(1)
    return fit + kl_coef * kl_uniform(y + (1 - y) * alpha)


def annealing_coefficient(epoch: int, annealing_epochs: int, start: int = 1) -> float:
    """``lambda_t = min(1, t / annealing_epochs)`` with ``t = epoch + start``."""
    return min(1.0, (epoch + start) / annealing_epochs)


class TMCHead(nn.Module):
    """Evidence heads per modality (plus ETMC's pseudo-view) and their Dempster combination."""

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int, variant: str):
        super().__init__()
        self.modalities, self.num_classes, self.feature_dim = list(modalities), num_classes, feature_dim
        self.heads = nn.ModuleDict({m: nn.Linear(feature_dim, num_classes) for m in modalities})
        self.pseudo = nn.Linear(feature_dim * len(modalities), num_classes) if variant == "etmc" else None

    def forward(self, features, batch_size, device):
        alphas = {m: F.softplus(self.heads[m](f)) + 1 for m, f in features.items()}
        views = list(alphas.values())
        extras = {}
        if self.pseudo is not None:
            zeros = torch.zeros(batch_size, self.feature_dim, device=device)
            pseudo = F.softplus(self.pseudo(torch.cat([features.get(m, zeros) for m in self.modalities], 1))) + 1
            views.append(pseudo)
            extras["alpha_pseudo"] = pseudo
        if not views:
            views = [torch.ones(batch_size, self.num_classes, device=device)]
        fused, conflict = combine(views)
        logits = torch.log(fused) - torch.log(fused.sum(1, keepdim=True))
        unimodal = {m: torch.log(a) - torch.log(a.sum(1, keepdim=True)) for m, a in alphas.items()}
        extras.update({"alpha": fused, "uncertainty": opinion(fused)[1], "conflict": conflict})
        for m, a in alphas.items():
            extras[f"alpha_{m}"] = a
            extras[f"uncertainty_{m}"] = opinion(a)[1]
        return logits, unimodal, extras


@METHODS.register("tmc")
class TMC(Method):
    """TMC/ETMC (ICLR 2021/TPAMI 2022): Dirichlet evidence per modality, reduced Dempster combination."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        annealing_epochs: Annotated[int, AT_LEAST_ONE] = 50  # ICLR --lambda-epochs 50; ETMC --annealing_epoch 10
        annealing_start: Annotated[int, NON_NEGATIVE] = 1  # annealing step of epoch 0: 1 (ICLR, epochs from 1) | 0 (ETMC)
        variant: str = "tmc"  # tmc | etmc (pseudo-view from the concatenated features)

        def __post_init__(self):
            check_choices(self, variant=VARIANTS)

    def build_model(self, spec: ModelSpec) -> HeadFusionModel:
        head = TMCHead(list(spec.modalities), spec.config.feature_dim, spec.num_classes, self.params.variant)
        return HeadFusionModel(configured_encoders(spec), head)

    def loss(self, model, batch, out, state):
        p = self.params
        y = batch.labels
        coef = annealing_coefficient(state.epoch, p.annealing_epochs, p.annealing_start)
        alphas = [out.extras[f"alpha_{m}"] for m in out.unimodal_logits]
        if "alpha_pseudo" in out.extras:
            alphas.append(out.extras["alpha_pseudo"])
        per_sample = sum(evidential_loss(a, y, coef) for a in alphas) + evidential_loss(out.extras["alpha"], y, coef)
        logs = {"kl_coef": coef, "uncertainty": out.extras["uncertainty"].mean().item(),
                "conflict": out.extras["conflict"].mean().item()}
        logs.update({f"uncertainty_{m}": out.extras[f"uncertainty_{m}"].mean().item() for m in out.unimodal_logits})
        return per_sample.mean(), logs
