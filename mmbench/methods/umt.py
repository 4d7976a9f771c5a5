"""UMT: Uni-Modal Teacher — distil unimodal teachers' features into the multimodal model's encoders.

Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao. *On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning*. ICML 2023, arXiv 2305.01233. No official code was found; the rule and defaults are read
in BalanceMM (https://github.com/GeWu-Lab/BalanceBenchmark @ 4c1482f,
``balancemm/trainer/UMT_trainer.py``, ``configs/trainer_config.yaml``). Sources and deviations:
``docs/methods/umt.md``.

The rule (paper; BalanceMM):
- first, one unimodal model per modality (encoder + linear head) is trained alone with
  cross-entropy: the teachers; they are then frozen;
- the multimodal model (the configured encoders and fusion, from scratch) minimises
  ``CE(fused logits, y) + scaling * sum_m MSE(teacher_m features, encoder_m features)``, the MSE a
  mean over batch and feature dimensions, the teacher side without gradient, while
  ``modulation_starts <= epoch <= modulation_ends``; plain cross-entropy outside that window.

mmbench's (``reconstructed``): the teachers are trained inside the run, before its first epoch
(:func:`mmbench.methods.unimodal_members.fit_unimodal`: the run's optimizer at its base learning
rate, no schedule, ``teacher_epochs`` epochs each, the last epoch kept), so a run is
self-contained and resumes identically; BalanceMM loads the newest checkpoint of separate
``unimodalTrainer`` runs (30 epochs, scheduled, best on its test loader). The teachers live in the
model (``model.teachers``, saved with its weights, excluded from the optimizer). They run in eval
mode (``teacher_mode=eval``); BalanceMM never switches its loaded teachers to eval, so they run in
train mode (batch statistics, dropout): ``teacher_mode=train``.

Defaults (BalanceMM ``configs/trainer_config.yaml`` UMT): ``scaling`` 10, ``modulation_starts`` 0,
``modulation_ends`` 80 (every epoch of its 30); its ``alpha`` 1 is unused by the trainer.
Logged: ``distill`` (the summed MSE) and ``distill_<m>`` per modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE
from mmbench.evaluation import eval_mode
from mmbench.methods.base import Method, check_choices
from mmbench.methods.unimodal_members import fit_unimodal, unimodal_ensemble
from mmbench.models.multimodal import ModelSpec, MultimodalModel, build_model
from mmbench.registry import METHODS


class WithTeachers(MultimodalModel):
    """A multimodal model (the student: its forward is the student's) carrying frozen ``teachers``."""

    def __init__(self, student: MultimodalModel, teachers: MultimodalModel):
        super().__init__(dict(student.encoders), student.fusion, dict(student.heads) if student.heads else None)
        self.teachers = teachers.requires_grad_(False)


@METHODS.register("umt")
class UMT(Method):
    """UMT (ICML 2023): cross-entropy plus feature MSE to frozen unimodal teachers trained first in the run."""

    reconstructed = ("teachers trained inside the run with fit_copy (base lr, no schedule, last epoch kept)",)

    @dataclass(frozen=True)
    class Params:
        scaling: Annotated[float, NON_NEGATIVE] = 10.0  # weight of the feature distillation (BalanceMM)
        modulation_starts: Annotated[int, NON_NEGATIVE] = 0  # first epoch with distillation
        modulation_ends: Annotated[int, NON_NEGATIVE] = 80  # last epoch with distillation (inclusive)
        teacher_epochs: Annotated[int | None, AT_LEAST_ONE] = None  # each teacher's epochs; None: the run's
        teacher_mode: str = "eval"  # eval (frozen teachers) | train (BalanceMM: batch statistics, dropout)

        def __post_init__(self):
            check_choices(self, teacher_mode=("eval", "train"))

    def __init__(self, params=None):
        super().__init__(params)
        self.teachers_trained = False

    def build_model(self, spec: ModelSpec) -> WithTeachers:
        return WithTeachers(build_model(spec), unimodal_ensemble(spec))

    def on_epoch_start(self, state):
        if self.teachers_trained:
            return
        teachers = state.model.teachers.requires_grad_(True)
        fit_unimodal(state, teachers, self.params.teacher_epochs or state.num_epochs)
        teachers.requires_grad_(False)
        self.teachers_trained = True

    @torch.no_grad()
    def teacher_features(self, model: WithTeachers, batch) -> dict[str, torch.Tensor]:
        """The frozen teachers' features of ``batch`` (in train mode as the student for ``teacher_mode=train``)."""
        if self.params.teacher_mode == "train":
            return model.teachers(batch).features
        with eval_mode(model.teachers):
            return model.teachers(batch).features

    def loss(self, model, batch, out, state):
        loss = F.cross_entropy(out.logits, batch.labels)
        p = self.params
        if not p.modulation_starts <= state.epoch <= p.modulation_ends:
            return loss, {}
        target = self.teacher_features(model, batch)
        mse = {m: F.mse_loss(f, target[m]) for m, f in out.features.items()}
        distill = sum(mse.values())
        return loss + p.scaling * distill, {"distill": distill.item(), **{f"distill_{m}": v.item() for m, v in mse.items()}}
