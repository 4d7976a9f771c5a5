"""ReconBoost: modality-alternating boosting with a reconcilement regulariser.

Hua, Xu, Bao, Yang, Huang. *ReconBoost: Boosting Can Achieve Modality Reconcilement*.
ICML 2024, arXiv 2405.09321.
Official code: https://github.com/huacong/ReconBoost (``train.py``, ``models/dynamic_net.py``,
``schedule.py``; commit 14ab57a). Sources, deviations and the differential check:
``docs/methods/reconboost.md``.

From the official code (the defaults reproduce it; ``test_reference_reconboost.py`` checks it step
for step):
- one learner per modality, ``f_m = head(encoder_m(x_m))`` with a head shared by all learners
  (``--common_space``: ``Linear(D, 256) - ReLU - Linear(256, K)``); the ensemble is
  ``F = boost_rate * sum_m f_m`` over the learners trained so far (only the newest learner per
  modality is kept), ``boost_rate`` a learnable scalar (initial value ``--boost_rate``);
- stages pick the modality round-robin (``schedule.py`` fixed mode). A stage is
  **phase 1**, ``epochs_per_stage`` epochs updating only ``encoder_m`` and the head, with
  ``q = softmax(F_{-m})`` the other learners' detached ensemble and ``p = softmax(f_m)``:
  ``L = mean_b (1/K) [-w1 log p_y + w2 q_y log p_y] + alpha * MSE(p, p_pre)``
  (the code's form of the paper's KL reconcilement term: ``q log p`` on the true class only;
  ``p_pre`` is the learner of the previous stage's modality; no MSE term at stage 0); then
  **phase 2** "global rectification", ``correct_epoch`` epochs of cross-entropy on ``F``
  updating every trained learner, the head and ``boost_rate``;
- each phase starts a fresh SGD optimiser (momentum 0.9, weight decay 5e-4): the optimiser state
  is cleared at every phase start (``TrainState.reset_optimizer``);
- when no other learner has been trained yet, ``F_{-m}`` is the constant ``c0`` of shape
  ``[B, 1]``, whose softmax is 1: ``q_y = 1``;
- *memory consolidation has no gradient*: both softmaxes in the release's
  ``mse_criterion(out_obj.detach().softmax(1), pre_out_obj.detach().softmax(1))`` are detached,
  so the term is logged but changes nothing (BalanceMM copies this). ``consolidation="release"``
  (default) does the same; ``consolidation="current"`` lets the gradient reach the current
  learner (an mmbench reading of the paper's scheme, which the release never trains).
- the stage learning-rate decay (CREMA-D: x0.1 every 30 stages; AVE: x0.5 at stage 40) is the
  optimiser schedule of the recipes (``optim.schedule: step``, ``step_size`` = 30 stages in epochs).

Differences that remain (documented, not result-changing on the differential check's data):
- *Unimodal warm start* (``--use_pretrain``, used in every README command) loads pretrained
  unimodal checkpoints; mmbench trains from scratch, as the release without the flag.
- The release casts the other learners' ensemble to float32 before its softmax; mmbench keeps the
  model's dtype.
- Batch-norm statistics: the release runs the other learners' encoders twice per phase-1 batch in
  train mode (ensemble and ``p_pre``) and the untrained ones not at all; mmbench's forward runs
  every encoder once per batch.
- *Schedule in epochs*: stage ``s`` spans epochs ``[s L, (s+1) L)`` with
  ``L = epochs_per_stage + correct_epoch``; a learner joins the ensemble when its first stage
  starts (equivalent for training, since ``F_{-m}`` excludes ``m``; validation sees it mid-stage).
- Head hidden width: ``model.hidden_dim`` (the release's 256 for 512-d features).
- *More than two modalities*: round-robin over ``M`` (the release runs three on MOSEI);
  ``p_pre`` is the previous stage's modality.
- Model selection is on the validation split, every epoch (the release and BalanceMM select on
  test after each stage).

Defaults (release ``train.py`` / README CREMA-D): ``epochs_per_stage`` 4, ``correct_epoch`` 4,
``weight1`` 5 (4 on AVE, ModelNet40), ``weight2`` 1, ``alpha`` 0.5, ``boost_rate`` 1.0;
SGD lr 0.01 (``m_lr = e_lr``), batch 64 in the recipes. BalanceMM: ``T_epochs`` 1 (one epoch per
phase), ``boost_rate`` 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from mmbench.measures import true_class_prob
from mmbench.methods.base import Method, check_choices
from mmbench.models.multimodal import HeadFusionModel, ModelSpec, configured_encoders
from mmbench.registry import METHODS

CONSOLIDATION = ("release", "current")


class BoostedEnsemble(nn.Module):
    """Learner logits ``head(f_m)`` through one shared head; fused ``boost_rate * sum`` over the present
    learners marked in the ``active`` buffer (saved with the weights, so evaluation sees the same ensemble)."""

    def __init__(self, modalities: list[str], feature_dim: int, hidden_dim: int, num_classes: int, boost_rate: float):
        super().__init__()
        self.modalities = list(modalities)
        self.head = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes))
        self.boost_rate = nn.Parameter(torch.tensor(float(boost_rate)))
        self.register_buffer("active", torch.zeros(len(modalities), dtype=torch.bool))

    def ensemble(self, unimodal: dict[str, torch.Tensor], exclude: str | None = None) -> torch.Tensor | None:
        """``boost_rate * sum`` of the active learners' logits except ``exclude``; None if there are none."""
        active = dict(zip(self.modalities, self.active.tolist()))
        members = [z for m, z in unimodal.items() if active[m] and m != exclude]
        return self.boost_rate * torch.stack(members).sum(0) if members else None

    def forward(self, features: dict[str, torch.Tensor], batch_size: int, device):
        unimodal = {m: self.head(f) for m, f in features.items()}
        logits = self.ensemble(unimodal)
        if logits is None:
            logits = torch.zeros(batch_size, self.head[-1].out_features, device=device)
        return logits, unimodal, {}


@METHODS.register("reconboost")
class ReconBoost(Method):
    """ReconBoost (ICML 2024): one modality's learner per stage, boosted against the others."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        epochs_per_stage: Annotated[int, AT_LEAST_ONE] = 4  # phase 1: only the stage's modality (and the shared head) learns
        correct_epoch: Annotated[int, NON_NEGATIVE] = 4  # phase 2: global rectification of the whole ensemble
        weight1: Annotated[float, NON_NEGATIVE] = 5.0  # cross-entropy weight
        weight2: Annotated[float, NON_NEGATIVE] = 1.0  # reconcilement weight
        alpha: Annotated[float, NON_NEGATIVE] = 0.5  # memory-consolidation weight
        boost_rate: Annotated[float, POSITIVE] = 1.0  # initial value of the learnable ensemble scale
        consolidation: str = "release"  # release (no gradient, as the official code) | current

        def __post_init__(self):
            check_choices(self, consolidation=CONSOLIDATION)

    def build_model(self, spec: ModelSpec) -> HeadFusionModel:
        cfg = spec.config
        ensemble = BoostedEnsemble(list(spec.modalities), cfg.feature_dim, cfg.hidden_dim, spec.num_classes,
                                   self.params.boost_rate)
        return HeadFusionModel(configured_encoders(spec), ensemble)

    def stage(self, epoch: int) -> tuple[int, bool]:
        """``(stage, rectify)``: the epoch's stage and whether it is in phase 2."""
        length = self.params.epochs_per_stage + self.params.correct_epoch
        return epoch // length, epoch % length >= self.params.epochs_per_stage

    def on_epoch_start(self, state):
        stage, _ = self.stage(state.epoch)
        active = state.model.fusion.active
        active.copy_(torch.arange(len(active), device=active.device) <= stage)
        within = state.epoch % (self.params.epochs_per_stage + self.params.correct_epoch)
        state.reset_optimizer = within in (0, self.params.epochs_per_stage)  # each phase: a fresh optimiser

    def loss(self, model, batch, out, state):
        p = self.params
        stage, rectify = self.stage(state.epoch)
        names = model.modalities
        logs = {"stage": float(stage), "rectify": float(rectify)}
        if rectify:
            loss = F.cross_entropy(out.logits, batch.labels)
            logs.update({f"trained_{m}": float(a) for m, a in zip(names, model.fusion.active.tolist())})
            return loss, {**logs, "loss_rectify": loss.item()}
        current = names[stage % len(names)]
        z = out.unimodal_logits[current]
        log_p = F.log_softmax(z, 1).gather(1, batch.labels[:, None]).squeeze(1)
        others = model.fusion.ensemble(out.unimodal_logits, exclude=current)
        q = torch.ones_like(log_p) if others is None else \
            true_class_prob(others.detach(), batch.labels)
        boost = ((-p.weight1 * log_p + p.weight2 * q * log_p) / z.shape[1]).mean()
        logs.update({f"trained_{m}": float(m == current) for m in names}, loss_boost=boost.item())
        if stage == 0:
            return boost, logs
        previous = out.unimodal_logits[names[(stage - 1) % len(names)]].detach()
        probs = F.softmax(z, 1)
        if p.consolidation == "release":
            probs = probs.detach()
        consolidation = F.mse_loss(probs, F.softmax(previous, 1))
        logs["loss_consolidation"] = consolidation.item()
        return boost + p.alpha * consolidation, logs
