"""QMF: Quality-aware Multimodal Fusion.

Zhang, Wu, Zhang, Hu, Fu, Zhou, Peng. *Provable Dynamic Fusion for Low-Quality Multimodal Data*.
ICML 2023, arXiv 2306.02050. Official code: https://github.com/QingyangZhang/QMF (MIT), line-checked
at 90bf6b1 (2024-12-02) and HEAD fe6c4c6 (2025-06-28): text-image ``src/models/late_fusion.py``,
``train_qmf.py`` (``rank_loss``, ``model_forward``), ``src/utils/utils.py`` (``History``); RGB-D
``models/QMF.py``, ``train_QMF_nyud2.py``.
Equality with the release, measured: ``docs/methods/qmf.md``.

Everything below follows the official code [V-code]:
- late fusion of per-modality classifiers (one linear head per modality on the encoder's features;
  QMF's ``clf_*`` with ``--hidden`` empty);
- confidence ``conf_m = 0.1 * logsumexp(z_m) = -Energy_m / 10``; fused logits
  ``sum_m conf_m * z_m`` over the modalities present. The confidence is **detached** in the fusion
  in the text-image code (``--df``, default on) and not in the RGB-D code (``detach_confidence``);
  the lower a modality's energy on a sample, the larger its weight there;
- loss ``sum_m CE(z_m) + CE(fused) + lambda * sum_m RankLoss_m`` (lambda 1 text-image, 0.1 RGB-D);
- RankLoss: a per-sample history adds each sample's unimodal CE (detached) every time the sample
  is seen (keyed by ``batch.ids``, its position in the training split); pairs ``(i, i+1)`` by
  rolling the batch; the history is min-max normalised by the **global** min and max over every
  training sample (unseen ones count with 0); ``t = sign(n_i - n_{i+1})``, ``D = |n_i - n_{i+1}|``;
  ``MarginRankingLoss(0)(conf_i, conf_{i+1} + D / t', -t)`` with ``t' = t`` where ``t != 0`` else 1,
  i.e. ``mean_i max(0, t_i (conf_i - conf_{i+1}) - D_i)``: the sample with the larger loss history
  must not be more confident than its partner by more than ``D``;
- order of the history update: text-image adds the batch's losses **before** the rank loss,
  RGB-D **after** (``history_update``).

Quirks and mmbench's choices:
- RGB-D's first batch normalises an all-zero history (0/0 -> NaN loss, zero gradient in the
  release); mmbench returns a zero rank loss whenever ``max == min``, so logs stay finite (the
  gradient is the same).
- The margin: CRL's ranking loss (which QMF adapts from correctness to loss history) uses ``D`` as a
  required gap; because QMF negates the target but keeps ``+ D / t'``, ``D`` becomes a *tolerance*.
  The paper PDF was not available to check which one is meant, so the default ``margin="release"``
  is the code; ``margin="gap"`` is the CRL form ``max(0, t_i (conf_i - conf_{i+1}) + D_i)``.
- The text-image code trains with plain Adam (no warm-up, no weight decay; freezing flags inactive)
  and gradient accumulation; the RGB-D code selects its checkpoint, LR schedule and early stopping
  on the **test** loader. mmbench's trainer selects on validation only; it has no accumulation and
  no ReduceLROnPlateau (the recipes say what they use instead).
- ``logsumexp`` replaces the release's ``log(sum(exp(z)))`` (same value, no overflow above ~88).
- More than two modalities: the rules are per modality and apply unchanged to every modality.
- A masked (absent) modality has no term in the fused sum.
- Observed in mmbench (not a choice): with ReLU encoders trained on clean data, strong *additive* Gaussian
  input noise can raise ``logsumexp`` (features grow with the input's norm), so the noised modality's
  weight may rise; when its signal is destroyed at the data's own scale, its weight falls
  (``tests/test_qmf.py``). The ranking regulariser only calibrates against training-loss history.

Logged per epoch: ``conf_<m>`` (mean fusion weight), ``weight_<m>`` (its mean share of the weights),
``rank_loss_<m>``; the final loss history is saved in ``artifacts.npz`` (``qmf_history``).
``ModelOutput.extras["conf_<m>"]`` holds each sample's weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import NON_NEGATIVE, POSITIVE
from mmbench.methods.base import Method, check_choices
from mmbench.models.multimodal import HeadFusionModel, ModelSpec, configured_encoders
from mmbench.registry import METHODS

ORDERS = ("before", "after")
MARGINS = ("release", "gap")


def energy_confidence(logits: torch.Tensor, scale: float = 0.1) -> torch.Tensor:
    """``conf = -scale * Energy = scale * logsumexp(logits)`` per sample."""
    return scale * torch.logsumexp(logits, dim=1)


class QMFHead(nn.Module):
    """One linear classifier per modality; fused logits ``sum_m conf_m * z_m`` over the modalities present."""

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int, scale: float, detach: bool):
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Linear(feature_dim, num_classes) for m in modalities})
        self.num_classes, self.scale, self.detach = num_classes, scale, detach

    def forward(self, features, batch_size, device):
        unimodal = {m: self.heads[m](f) for m, f in features.items()}
        conf = {m: energy_confidence(z, self.scale) for m, z in unimodal.items()}
        fused = torch.zeros(batch_size, self.num_classes, device=device)
        for m, z in unimodal.items():
            c = conf[m].detach() if self.detach else conf[m]
            fused = fused + c[:, None] * z
        return fused, unimodal, {f"conf_{m}": c for m, c in conf.items()}


def rank_loss(conf: torch.Tensor, ids: torch.Tensor, history: torch.Tensor, margin: str = "release") -> torch.Tensor:
    """QMF's ranking regulariser for one modality: ``conf`` ``[B]`` this batch's confidences, ``ids`` the
    samples' rows in ``history`` ``[N]`` (cumulative unimodal losses of every training sample)."""
    low, high = history.min(), history.max()
    if not high > low:  # all-equal history: nothing to rank (0/0 in the release)
        return conf.sum() * 0.0
    norm = ((history[ids] - low) / (high - low)).to(conf.dtype)
    partner = torch.roll(norm, -1)
    target = torch.sign(norm - partner)
    gap = (norm - partner).abs()
    if margin == "gap":
        return F.relu(target * (conf - torch.roll(conf, -1)) + gap).mean()
    nonzero = torch.where(target == 0, torch.ones_like(target), target)
    return F.margin_ranking_loss(conf, torch.roll(conf, -1) + gap / nonzero, -target, margin=0.0)


@METHODS.register("qmf")
class QMF(Method):
    """QMF (ICML 2023): energy-weighted late fusion, ranking regulariser on per-sample loss history."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        rank_weight: Annotated[float, NON_NEGATIVE] = 1.0  # lambda: 1 text-image (train_qmf.py), 0.1 RGB-D (--lamb)
        energy_scale: Annotated[float, POSITIVE] = 0.1  # conf = energy_scale * logsumexp = -Energy / 10
        detach_confidence: bool = True  # text-image --df; the RGB-D code does not detach
        history_update: str = "before"  # before (text-image) | after (RGB-D)
        margin: str = "release"  # release (the code: a tolerance) | gap (CRL's required gap)

        def __post_init__(self):
            check_choices(self, history_update=ORDERS, margin=MARGINS)

    def __init__(self, params=None):
        super().__init__(params)
        self.history: torch.Tensor | None = None  # [N_train, M] cumulative unimodal CE per sample

    def build_model(self, spec: ModelSpec) -> HeadFusionModel:
        p = self.params
        head = QMFHead(list(spec.modalities), spec.config.feature_dim, spec.num_classes, p.energy_scale,
                       p.detach_confidence)
        return HeadFusionModel(configured_encoders(spec), head)

    def _history(self, model, ids: torch.Tensor, state) -> torch.Tensor:
        n = max(len(state.train) if state.train is not None else 0, int(ids.max()) + 1)
        cols = len(model.modalities)
        if self.history is None or self.history.shape[0] < n:
            grown = torch.zeros(n, cols, dtype=torch.float64, device=ids.device)
            if self.history is not None:
                grown[: self.history.shape[0]] = self.history.to(ids.device)
            self.history = grown
        return self.history

    def loss(self, model, batch, out, state):
        p = self.params
        y = batch.labels
        ids = batch.ids if batch.ids is not None else torch.arange(len(y), device=y.device)
        history = self._history(model, ids, state)
        losses = {m: F.cross_entropy(z, y, reduction="none") for m, z in out.unimodal_logits.items()}
        total = F.cross_entropy(out.logits, y) + sum(v.mean() for v in losses.values())
        logs = {}
        weights = torch.stack([out.extras[f"conf_{m}"].detach() for m in losses]) if losses else None
        for j, m in enumerate(model.modalities):
            if m not in losses:
                continue
            if p.history_update == "before":
                history[ids, j] += losses[m].detach().double()
            rank = rank_loss(out.extras[f"conf_{m}"], ids, history[:, j], p.margin)
            if p.history_update == "after":
                history[ids, j] += losses[m].detach().double()
            total = total + p.rank_weight * rank
            logs[f"rank_loss_{m}"] = rank.item()
            logs[f"conf_{m}"] = out.extras[f"conf_{m}"].mean().item()
        if weights is not None:
            share = weights / weights.sum(0).clamp_min(1e-12)
            logs.update({f"weight_{m}": share[i].mean().item() for i, m in enumerate(losses)})
        return total, logs

    def on_epoch_end(self, state):
        if self.history is not None:
            state.artifacts["qmf_history"] = self.history.cpu().numpy()
