"""QMF against the official text-image code (QingyangZhang/QMF ``text-image-classification``), step by step
on identical tensors (docs/methods/qmf.md).

The official side runs the release's ``model_forward`` and ``rank_loss`` (``train_qmf.py``), its
``History`` (``src/utils/utils.py``) and the forward of ``MultimodalLateFusionClf``
(``src/models/late_fusion.py``: energy confidences, detached weights) over mmbench's small encoders
and linear classifiers with the same initial weights (``text`` = mmbench's first modality), with the
loop's call sequence (backward, Adam step; no gradient accumulation, which mmbench does not have).
The RGB-D options are checked against ``RGBD-scene-recognition/train_QMF_nyud2.py`` the same way.
"""

from __future__ import annotations

import copy
import types

import numpy as np
import torch
from torch import nn

from mmbench.config import MethodConfig, ModelConfig, OptimConfig
from mmbench.methods.base import build_method
from mmbench.models.multimodal import ModelSpec
from mmbench.training import Trainer
from tests.reference import EncoderClf, reference_dir
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

REPO = "QMF"
ROOT = "text-image-classification"
# the release rounds the ranking margin to float32 (``History.get_target_margin``: ``.float()``)
TOL = 1e-6
STEPS, BATCH, N_DATA, CLASSES = 24, 16, 64, 4  # 4 batches per pass over the 64 samples: histories accumulate
MODS = ("audio", "visual")  # text, image
SHARPEN = 20.0


def _official():
    models_dir = str(reference_dir(REPO) / ROOT / "src" / "models")
    stubs = {"pytorch_pretrained_bert": stub("pytorch_pretrained_bert", BertAdam=None),
             "src.data.helpers": stub("src.data.helpers", get_data_loaders=None),
             "src.utils.logger": stub("src.utils.logger", create_logger=None),
             # the package without its __init__ (which imports BERT and torchvision models)
             "src.models": stub("src.models", get_model=None, __path__=[models_dir]),
             "src.models.bert": stub("src.models.bert", BertEncoder=None, BertClf=None),
             "src.models.image": stub("src.models.image", ImageEncoder=None, ImageClf=None)}
    script = import_module(REPO, "train_qmf", root=ROOT, stubs=stubs)
    late_fusion = import_module(REPO, "src.models.late_fusion", root=ROOT, stubs=stubs)
    return script, late_fusion


def test_qmf_equals_the_official_training_steps():
    script, late_fusion = _official()
    with default_dtype(torch.float64), cpu_for_cuda():
        torch.manual_seed(0)
        data, _ = two_modality_batches(N_DATA // BATCH, BATCH, (12, 10), CLASSES)
        g = torch.Generator().manual_seed(1)
        batches = [b for _ in range(STEPS * BATCH // N_DATA) for b in data.batches(BATCH, shuffle=True, generator=g)]
        method = build_method(MethodConfig("qmf", {}))  # defaults: the text-image release
        ours = method.build_model(ModelSpec(data.meta.modalities, CLASSES, ModelConfig(hidden_dim=16, feature_dim=8, depth=1)))
        with torch.no_grad():  # confident heads from the start, so the ranking hinge is active on most steps
            for m in MODS:
                ours.fusion.heads[m].weight.mul_(SHARPEN)
        args = types.SimpleNamespace(model="latefusion", df=True, freeze_img=0, freeze_txt=0, task_type="classification")
        theirs = late_fusion.MultimodalLateFusionClf.__new__(late_fusion.MultimodalLateFusionClf)
        nn.Module.__init__(theirs)
        theirs.args = args
        theirs.txtclf, theirs.imgclf = (EncoderClf(copy.deepcopy(ours.encoders[m]), copy.deepcopy(ours.fusion.heads[m]))
                                        for m in MODS)
        histories = [script.History(N_DATA), script.History(N_DATA)]

        optim = OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0)
        trainer = Trainer(method, ours, optim, torch.device("cpu"))
        trainer.state.train = data
        initial = {n: p.detach().clone() for n, p in ours.named_parameters()}
        their_opt = torch.optim.Adam(theirs.parameters(), lr=optim.lr)  # get_optimizer for latefusion
        clfs = {"audio": theirs.txtclf, "visual": theirs.imgclf}
        our_norms = GradNorms(trainer.optimizer, {m: list(ours.encoders[m].parameters()) for m in MODS})
        their_norms = GradNorms(their_opt, {m: list(clfs[m].encoder.parameters()) for m in MODS})

        diff = MaxDiff(TOL)
        ranks = []
        their_opt.zero_grad()
        for step, batch in enumerate(batches):
            epoch = step * BATCH // N_DATA
            trainer.state.epoch = epoch
            loss, out, logs = trainer.train_step(batch)
            theirs.train()
            x = batch.inputs
            unused = torch.zeros(len(batch))  # segment and mask: BERT inputs, unused by these encoders
            official_batch = (x["audio"], unused, unused, x["visual"], batch.labels, batch.ids)
            with returned_locals(script.model_forward) as calls:
                their_loss, _, _ = script.model_forward(epoch, theirs, args, nn.CrossEntropyLoss(), official_batch,
                                                        *histories, mode="train")
            their_loss.backward()
            their_opt.step()
            their_opt.zero_grad()
            local = calls[0]
            where = f"step {step}"
            diff("loss", loss, their_loss, where)
            diff("energy_weight", out.extras["conf_audio"], local["text_conf"].squeeze(1), where)
            diff("energy_weight", out.extras["conf_visual"], local["image_conf"].squeeze(1), where)
            diff("rank_loss", [logs["rank_loss_audio"], logs["rank_loss_visual"]],
                 [local["text_rank_loss"].item(), local["image_rank_loss"].item()], where)
            ranks.append(logs["rank_loss_audio"] + logs["rank_loss_visual"])
            diff("history", method.history.T, np.stack([h.correctness for h in histories]), where)
            diff("grad_norm", [our_norms.steps[-1][m] for m in MODS], [their_norms.steps[-1][m] for m in MODS], where)
        for m in MODS:
            for (name, p), q in zip(ours.encoders[m].named_parameters(), clfs[m].encoder.parameters()):
                diff("parameters", p, q, f"encoders.{m}.{name}")
            for name, p in ours.fusion.heads[m].named_parameters():
                diff("parameters", p, getattr(clfs[m].head, name), f"heads.{m}.{name}")
    assert len(batches) >= 20 and largest_change(ours, initial) > 1e-2
    assert sum(r > 0 for r in ranks) >= len(ranks) // 2  # the ranking term is active, not a compared zero
    print(diff.summary(f"QMF, {len(batches)} steps, float64"))


def _rgbd_official():
    stubs = {"models.image": stub("models.image", ImageEncoder=None),
             "torchvision": stub("torchvision"), "torchvision.transforms": stub("torchvision.transforms"),
             "data.aligned_conc_dataset": stub("data.aligned_conc_dataset", AlignedConcDataset=None),
             "utils.logger": stub("utils.logger", create_logger=None)}
    return import_module(REPO, "train_QMF_nyud2", root="RGBD-scene-recognition", stubs=stubs)


def test_rgbd_options_equal_the_official_training_steps():
    """The RGB-D release: confidences not detached, history updated after the ranking loss, lambda 0.1."""
    script = _rgbd_official()
    with default_dtype(torch.float64), cpu_for_cuda():
        torch.manual_seed(0)
        data, _ = two_modality_batches(N_DATA // BATCH, BATCH, (12, 10), CLASSES, names=("rgb", "depth"))
        g = torch.Generator().manual_seed(1)
        batches = [b for _ in range(STEPS * BATCH // N_DATA) for b in data.batches(BATCH, shuffle=True, generator=g)]
        method = build_method(MethodConfig("qmf", {"detach_confidence": False, "history_update": "after",
                                                   "rank_weight": 0.1}))
        ours = method.build_model(ModelSpec(data.meta.modalities, CLASSES, ModelConfig(hidden_dim=16, feature_dim=8, depth=1)))
        with torch.no_grad():
            for m in ("rgb", "depth"):
                ours.fusion.heads[m].weight.mul_(SHARPEN)
        theirs = script.QMF.__new__(script.QMF)
        nn.Module.__init__(theirs)
        theirs.rgbenc, theirs.depthenc = (copy.deepcopy(ours.encoders[m]) for m in ("rgb", "depth"))
        theirs.clf_rgb, theirs.clf_depth = (nn.ModuleList([copy.deepcopy(ours.fusion.heads[m])]) for m in ("rgb", "depth"))
        args = types.SimpleNamespace(lamb=0.1)
        histories = {m: script.History(N_DATA) for m in ("rgb", "depth")}

        optim = OptimConfig(optimizer="adam", lr=3e-3, weight_decay=0.0)
        trainer = Trainer(method, ours, optim, torch.device("cpu"))
        trainer.state.train = data
        initial = {n: p.detach().clone() for n, p in ours.named_parameters()}
        their_opt = torch.optim.Adam(theirs.parameters(), lr=optim.lr)
        encoders = {"rgb": theirs.rgbenc, "depth": theirs.depthenc}
        our_norms = GradNorms(trainer.optimizer, {m: list(ours.encoders[m].parameters()) for m in encoders})
        their_norms = GradNorms(their_opt, {m: list(e.parameters()) for m, e in encoders.items()})

        diff = MaxDiff(TOL)
        ranks = []
        their_opt.zero_grad()
        for step, batch in enumerate(batches):
            loss, out, logs = trainer.train_step(batch)
            theirs.train()
            official_batch = {"A": batch.inputs["rgb"], "B": batch.inputs["depth"], "label": batch.labels, "idx": batch.ids}
            with returned_locals(script.model_forward_train) as calls:
                their_loss = script.model_forward_train(0, theirs, args, official_batch, histories["depth"],
                                                        histories["rgb"])[0]
            their_loss.backward()
            their_opt.step()
            their_opt.zero_grad()
            local = calls[0]
            where = f"step {step}"
            if step == 0:  # the release normalises an all-zero history: 0/0, a NaN loss with zero ranking gradient
                assert torch.isnan(their_loss) and logs["rank_loss_rgb"] == 0.0
            else:
                diff("loss", loss, their_loss, where)
                diff("rank_loss", [logs["rank_loss_rgb"], logs["rank_loss_depth"]],
                     [local["rgb_rank_loss"].item(), local["depth_rank_loss"].item()], where)
                ranks.append(logs["rank_loss_rgb"] + logs["rank_loss_depth"])
            diff("energy_weight", torch.stack([out.extras["conf_rgb"], out.extras["conf_depth"]]),
                 torch.stack([local["rgb_conf"].squeeze(1), local["depth_conf"].squeeze(1)]), where)
            diff("history", method.history.T, np.stack([histories[m].correctness for m in ("rgb", "depth")]), where)
            diff("grad_norm", [our_norms.steps[-1][m] for m in encoders], [their_norms.steps[-1][m] for m in encoders],
                 where)
        for m, enc in encoders.items():
            for (name, p), q in zip(ours.encoders[m].named_parameters(), enc.parameters()):
                diff("parameters", p, q, f"encoders.{m}.{name}")
        for m, clf in (("rgb", theirs.clf_rgb), ("depth", theirs.clf_depth)):
            for name, p in ours.fusion.heads[m].named_parameters():
                diff("parameters", p, getattr(clf[0], name), f"heads.{m}.{name}")
    assert len(batches) >= 20 and largest_change(ours, initial) > 1e-2
    assert sum(r > 0 for r in ranks) >= len(ranks) // 2
    print(diff.summary(f"QMF RGB-D options, {len(batches)} steps, float64"))
