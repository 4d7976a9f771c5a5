"""UME: Uni-Modal Ensemble — unimodal models trained separately, their predictions averaged.

Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao. *On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning*. ICML 2023, arXiv 2305.01233. No official code was found and BalanceMM
(GeWu-Lab/BalanceBenchmark @ 4c1482f) has no UME trainer: the method is read in the paper.
Sources and deviations: ``docs/methods/ume.md``.

The rule: one unimodal model per modality (the configured encoder and a linear head), each trained
with cross-entropy on its own modality alone; at test time their predictions are combined.

mmbench's (``reconstructed``): the members are one model
(:func:`mmbench.methods.unimodal_members.unimodal_ensemble`) trained in the run's loop on the sum of
their cross-entropies. They share no parameter and each sees only its modality, so every member gets
exactly the gradient (and, without ``optim.grad_clip``, the updates) of a ``unimodal`` run on the same
batches; with ``optim.grad_clip`` the norm is taken over all members together. The combination is
the mean of the members' logits (over the modalities present when some are masked), and the
checkpoint is selected on the ensemble's validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmbench.methods.base import Method
from mmbench.methods.unimodal_members import unimodal_ensemble, unimodal_losses
from mmbench.models.multimodal import ModelSpec, MultimodalModel
from mmbench.registry import METHODS


@METHODS.register("ume")
class UME(Method):
    """UME (ICML 2023): unimodal models trained separately, their logits averaged at test time."""

    trains_unimodal_heads = True
    reconstructed = ("members trained in one loop on the sum of their losses; logits averaged",)

    @dataclass(frozen=True)
    class Params:
        pass

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        return unimodal_ensemble(spec)

    def loss(self, model, batch, out, state):
        losses = unimodal_losses(out, batch.labels)
        return sum(losses.values()), {f"loss_{m}": v.item() for m, v in losses.items()}
