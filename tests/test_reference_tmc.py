"""TMC and ETMC against the official code (hanmenghan/TMC), step by step on identical tensors
(docs/methods/tmc.md).

TMC: the release's ``TMC`` module (``TMC ICLR/model.py``: evidence classifiers, ``DS_Combin``,
``ce_loss`` with ``KL``) on the features of mmbench's small encoders (same initial weights), trained
with the call sequence of its ``train.py`` loop (zero_grad, ``model(data, target, epoch)``, backward,
step), epochs counted from 1 as there. ETMC: the release's ``model_forward`` (``ETMC TPAMI/
train_ETMC_nyud2.py``) and ``ETMC.forward`` (``models/TMC.py``) over the same encoders, epochs from 0.
"""

from __future__ import annotations

import copy
import types

import torch
from torch import nn

from mmbench.config import MethodConfig, ModelConfig, OptimConfig
from mmbench.methods.base import build_method
from mmbench.models.multimodal import ModelSpec
from mmbench.training import Trainer
from tests.reference_steps import (
    GradNorms,
    MaxDiff,
    cpu_for_cuda,
    default_dtype,
    import_module,
    largest_change,
    returned_locals,
    stub,
    two_modality_batches,
)

REPO = "TMC"
TOL = 1e-9
EPOCHS, STEPS_PER_EPOCH, ANNEALING, CLASSES, DIM = 4, 6, 3, 5, 8
MODS = ("audio", "visual")


class _Views(nn.Module):
    """mmbench's encoders in front of the release's ``TMC``, which classifies the views it is given."""

    def __init__(self, encoders: nn.ModuleDict, tmc: nn.Module):
        super().__init__()
        self.encoders, self.tmc = encoders, tmc

    def forward(self, inputs, target, global_step):
        return self.tmc([self.encoders[m](inputs[m]) for m in MODS], target, global_step)


def test_tmc_equals_the_official_training_steps():
    official = import_module(REPO, "model", root="TMC ICLR")
    with default_dtype(torch.float64), cpu_for_cuda():
        torch.manual_seed(0)
        data, batches = two_modality_batches(EPOCHS * STEPS_PER_EPOCH, 16, (12, 10), CLASSES)
        method = build_method(MethodConfig("tmc", {"annealing_epochs": ANNEALING, "annealing_start": 1}))
        ours = method.build_model(ModelSpec(data.meta.modalities, CLASSES,
                                            ModelConfig(hidden_dim=16, feature_dim=DIM, depth=1)))
        tmc = official.TMC(CLASSES, len(MODS), [[DIM], [DIM]], ANNEALING)
        for v, m in enumerate(MODS):
            tmc.Classifiers[v].fc[0].load_state_dict(ours.fusion.heads[m].state_dict())
        theirs = _Views(copy.deepcopy(ours.encoders), tmc)

        optim = OptimConfig(optimizer="adam", lr=3e-3, weight_decay=1e-5)
        initial = {n: p.detach().clone() for n, p in ours.named_parameters()}
        trainer = Trainer(method, ours, optim, torch.device("cpu"))
        their_opt = torch.optim.Adam(theirs.parameters(), lr=optim.lr, weight_decay=1e-5)  # train.py's optimizer
        our_norms = GradNorms(trainer.optimizer, {m: list(ours.encoders[m].parameters()) for m in MODS})
        their_norms = GradNorms(their_opt, {m: list(theirs.encoders[m].parameters()) for m in MODS})

        diff = MaxDiff(TOL)
        coefs = set()
        for step, batch in enumerate(batches):
            epoch = step // STEPS_PER_EPOCH
            trainer.state.epoch = epoch
            loss, out, logs = trainer.train_step(batch)
            theirs.train()
            their_opt.zero_grad()
            with returned_locals(official.ce_loss) as calls:
                evidences, evidence_a, their_loss = theirs(batch.inputs, batch.labels, epoch + 1)  # epochs from 1
            their_loss.backward()
            their_opt.step()
            where = f"step {step} (epoch {epoch})"
            diff("loss", loss, their_loss, where)
            diff("kl_coef", logs["kl_coef"], calls[0]["annealing_coef"], where)
            coefs.add(logs["kl_coef"])
            for v, m in enumerate(MODS):
                diff("alpha_m", out.extras[f"alpha_{m}"], evidences[v] + 1, where)
            diff("alpha_combined", out.extras["alpha"], evidence_a + 1, where)
            diff("grad_norm", [our_norms.steps[-1][m] for m in MODS], [their_norms.steps[-1][m] for m in MODS], where)
        for m in MODS:
            for (name, p), q in zip(ours.encoders[m].named_parameters(), theirs.encoders[m].parameters()):
                diff("parameters", p, q, f"encoders.{m}.{name}")
        for v, m in enumerate(MODS):
            for name, p in ours.fusion.heads[m].named_parameters():
                diff("parameters", p, getattr(tmc.Classifiers[v].fc[0], name), f"heads.{m}.{name}")
    assert largest_change(ours, initial) > 1e-2
    assert len(batches) >= 20 and len(coefs) == ANNEALING  # the annealing ramp is covered: 1/3, 2/3, 1
    print(diff.summary(f"TMC, {len(batches)} steps, float64"))


def _etmc_official():
    stubs = {"models.image": stub("models.image", ImageEncoder=None),
             "torchvision": stub("torchvision"), "torchvision.transforms": stub("torchvision.transforms"),
             "data.aligned_conc_dataset": stub("data.aligned_conc_dataset", AlignedConcDataset=None),
             "utils.logger": stub("utils.logger", create_logger=None)}
    return import_module(REPO, "train_ETMC_nyud2", root="ETMC TPAMI", stubs=stubs)


def _linear_list(layer: nn.Linear) -> nn.ModuleList:
    """A copy of ``layer`` as the release's classifier list with ``--hidden`` empty."""
    return nn.ModuleList([copy.deepcopy(layer)])


def test_etmc_equals_the_official_training_steps():
    script = _etmc_official()
    etmc_cls = script.ETMC
    with default_dtype(torch.float64), cpu_for_cuda():
        torch.manual_seed(0)
        # mmbench's first modality is the release's rgb, the second its depth: the pseudo-view sees
        # [rgb, depth] as mmbench's [first, second], and the combination is symmetric in the two views
        data, batches = two_modality_batches(EPOCHS * STEPS_PER_EPOCH, 16, (12, 10), CLASSES, names=("rgb", "depth"))
        method = build_method(MethodConfig("tmc", {"variant": "etmc", "annealing_epochs": ANNEALING,
                                                                       "annealing_start": 0}))
        ours = method.build_model(ModelSpec(data.meta.modalities, CLASSES,
                                            ModelConfig(hidden_dim=16, feature_dim=DIM, depth=1)))
        args = types.SimpleNamespace(n_classes=CLASSES, annealing_epoch=ANNEALING)
        theirs = etmc_cls.__new__(etmc_cls)
        nn.Module.__init__(theirs)
        theirs.args = args
        theirs.rgbenc, theirs.depthenc = (copy.deepcopy(ours.encoders[m]) for m in ("rgb", "depth"))
        theirs.clf_rgb, theirs.clf_depth = (_linear_list(ours.fusion.heads[m]) for m in ("rgb", "depth"))
        theirs.clf = _linear_list(ours.fusion.pseudo)

        optim = OptimConfig(optimizer="adam", lr=3e-3, weight_decay=1e-5)
        trainer = Trainer(method, ours, optim, torch.device("cpu"))
        initial = {n: p.detach().clone() for n, p in ours.named_parameters()}
        their_opt = script.get_optimizer(theirs, types.SimpleNamespace(lr=optim.lr))  # Adam, weight decay 1e-5
        encoders = {"rgb": theirs.rgbenc, "depth": theirs.depthenc}
        our_norms = GradNorms(trainer.optimizer, {m: list(ours.encoders[m].parameters()) for m in encoders})
        their_norms = GradNorms(their_opt, {m: list(e.parameters()) for m, e in encoders.items()})

        diff = MaxDiff(TOL)
        their_opt.zero_grad()
        for step, batch in enumerate(batches):
            epoch = step // STEPS_PER_EPOCH
            trainer.state.epoch = epoch
            loss, out, logs = trainer.train_step(batch)
            theirs.train()
            official_batch = {"A": batch.inputs["rgb"], "B": batch.inputs["depth"], "label": batch.labels}
            their_loss, depth_alpha, rgb_alpha, combined, _ = script.model_forward(epoch, theirs, args, script.ce_loss,
                                                                                  official_batch)
            their_loss.backward()
            their_opt.step()
            their_opt.zero_grad()
            where = f"step {step} (epoch {epoch})"
            diff("loss", loss, their_loss, where)
            diff("alpha_m", torch.stack([out.extras["alpha_rgb"], out.extras["alpha_depth"]]),
                 torch.stack([rgb_alpha, depth_alpha]), where)
            diff("alpha_combined", out.extras["alpha"], combined, where)
            diff("grad_norm", [our_norms.steps[-1][m] for m in encoders], [their_norms.steps[-1][m] for m in encoders],
                 where)
        for m, enc in encoders.items():
            for (name, p), q in zip(ours.encoders[m].named_parameters(), enc.parameters()):
                diff("parameters", p, q, f"encoders.{m}.{name}")
        for ours_layer, their_layer in ((ours.fusion.heads["rgb"], theirs.clf_rgb[0]),
                                        (ours.fusion.heads["depth"], theirs.clf_depth[0]),
                                        (ours.fusion.pseudo, theirs.clf[0])):
            for name, p in ours_layer.named_parameters():
                diff("parameters", p, getattr(their_layer, name), name)
    assert len(batches) >= 20 and largest_change(ours, initial) > 1e-2
    print(diff.summary(f"ETMC, {len(batches)} steps, float64"))
