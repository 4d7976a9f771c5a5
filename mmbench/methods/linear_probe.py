"""Linear probe: encoders trained first, then frozen, and a fresh linear head trained on their features.

BalanceMM's ``LinearProbe`` baseline (https://github.com/GeWu-Lab/BalanceBenchmark @ 4c1482f,
``balancemm/trainer/LinearProbe_trainer.py``, ``balancemm/train.py::linear_probe_eval``,
``configs/trainer_config.yaml``): it loads the newest checkpoint of another trainer's run
(``trainer_probed``, default ``OGMTrainer``), sets ``requires_grad=False`` on the whole model and
keeps it in eval mode, and trains a new ``Linear(sum of feature sizes, classes)`` on the
concatenated encoder features (``NewLinearHead``; unimodal logits ``f_m W_m^T + b / M``) with
cross-entropy, the optimizer over the head alone, for the run's epochs. Sources and deviations:
``docs/methods/linear_probe.md``.

In mmbench (``reconstructed``): the probed encoders are trained inside the run, before its first
epoch, by the trainer's ``fit_copy`` (the run's optimizer at its base learning rate, no schedule,
``encoder_epochs`` epochs, the last epoch kept) on a copy of the model:
- ``encoders=joint`` (default): the copy trained jointly with cross-entropy on its fused logits
  (BalanceMM's ``baselineTrainer`` as the probed trainer; a BalanceMM run probing another method's
  model has no in-run equivalent);
- ``encoders=unimodal``: each encoder trained alone with a linear head, the other modalities masked
  (:func:`mmbench.methods.unimodal_members.fit_unimodal`).
The copy's encoders are loaded into the run's model, whose concat head keeps its fresh
initialisation; from then on the encoders are frozen (no gradient, eval mode) and the run's loop
trains the head alone; the checkpoint is selected on validation (BalanceMM: on its test loader).
The head is mmbench's ``concat`` fusion whatever ``model.fusion`` says (BalanceMM's ``NewLinearHead``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Annotated

import torch.nn.functional as F

from mmbench.config import AT_LEAST_ONE
from mmbench.methods.base import Method, check_choices
from mmbench.methods.unimodal_members import fit_unimodal
from mmbench.models.multimodal import ModelSpec, MultimodalModel, build_model
from mmbench.registry import METHODS


@METHODS.register("linear_probe")
class LinearProbe(Method):
    """Linear probe (BalanceMM): encoders trained, then frozen; a fresh concat linear head trained on them."""

    reconstructed = ("probed encoders trained inside the run with fit_copy (base lr, no schedule, last epoch kept)",)

    @dataclass(frozen=True)
    class Params:
        encoders: str = "joint"  # how the probed encoders are trained: joint (fused CE) | unimodal (each alone)
        encoder_epochs: Annotated[int | None, AT_LEAST_ONE] = None  # their training epochs; None: the run's

        def __post_init__(self):
            check_choices(self, encoders=("joint", "unimodal"))

    def __init__(self, params=None):
        super().__init__(params)
        self.encoders_trained = False

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        return build_model(dataclasses.replace(spec, config=dataclasses.replace(spec.config, fusion="concat")))

    def on_epoch_start(self, state):
        model = state.model
        if not self.encoders_trained:
            probed = copy.deepcopy(model)
            epochs = self.params.encoder_epochs or state.num_epochs
            if self.params.encoders == "joint":
                state.fit_copy(probed, lambda net, b: F.cross_entropy(net(b).logits, b.labels), state.train, epochs)
            else:
                fit_unimodal(state, probed, epochs)
            model.encoders.load_state_dict(probed.encoders.state_dict())
            self.encoders_trained = True
        model.encoders.requires_grad_(False).eval()

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {}
