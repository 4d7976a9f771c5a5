"""PDF against the official code (Yinan-Xia/PDF), step by step on identical tensors (docs/methods/pdf.md).

The official side runs the release's ``model_forward`` (``train_pdf.py``: L1 Mono-Confidence loss and
the classification losses), its optimiser (``get_optimizer``: weight decay 1 on the decayed ConfidNet
layers only, as the shells run it) and the forward of ``MultimodalLateFusionClf_pdf``
(``src/models/latefusion_pdf.py``, ``'pdf_train'``) over mmbench's small encoders, linear classifiers
and ConfidNets with the same initial weights (``text`` = mmbench's first modality). After training
both evaluate one batch with the relative calibration (``'pdf_test'``, as ``test_pdf.py --du true``).
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
from tests.reference import EncoderClf
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

REPO = "PDF"
TOL = 1e-9
STEPS, BATCH, CLASSES = 24, 16, 4
MODS = ("audio", "visual")  # text, image


def _official():
    stubs = {"pytorch_pretrained_bert": stub("pytorch_pretrained_bert", BertAdam=None),
             "src.data.helpers": stub("src.data.helpers", get_data_loaders=None),
             "src.utils.logger": stub("src.utils.logger", create_logger=None),
             "src.models": stub("src.models", get_model=None, __path__=[]),
             "src.models.bert": stub("src.models.bert", BertEncoder=None, BertClf=None),
             "src.models.image": stub("src.models.image", ImageEncoder=None, ImageClf=None)}
    script = import_module(REPO, "train_pdf", stubs=stubs)
    stubs["src.models"].__path__ = [str(script.__file__).rsplit("/", 1)[0] + "/src/models"]
    models = import_module(REPO, "src.models.latefusion_pdf", stubs=stubs)
    return script, models


def test_pdf_equals_the_official_training_steps_and_calibrated_test():
    script, models = _official()
    with default_dtype(torch.float64), cpu_for_cuda():
        torch.manual_seed(0)
        data, batches = two_modality_batches(STEPS, BATCH, (12, 10), CLASSES)
        method = build_method(MethodConfig("pdf", {}))  # defaults: the release's shells
        ours = method.build_model(ModelSpec(data.meta.modalities, CLASSES, ModelConfig(hidden_dim=16, feature_dim=8, depth=1)))
        cls = models.MultimodalLateFusionClf_pdf
        theirs = cls.__new__(cls)
        nn.Module.__init__(theirs)
        args = types.SimpleNamespace(df=True, model="latefusion_pdf", freeze_img=0, freeze_txt=0, n_classes=CLASSES,
                                     task_type="classification", lr=1e-3, weight_decay=1.0)
        theirs.args = args
        theirs.txtclf, theirs.imgclf = (
            EncoderClf(copy.deepcopy(ours.encoders[m]), copy.deepcopy(ours.fusion.heads[m]), features=True) for m in MODS)
        theirs.ConfidNet_txt, theirs.ConfidNet_img = (copy.deepcopy(ours.fusion.confidnets[m]) for m in MODS)

        optim = OptimConfig(optimizer="adam", lr=args.lr, weight_decay=0.0)
        trainer = Trainer(method, ours, optim, torch.device("cpu"))
        trainer.state.train = data
        initial = {n: p.detach().clone() for n, p in ours.named_parameters()}
        their_opt = script.get_optimizer(theirs, args)
        clfs = {"audio": theirs.txtclf, "visual": theirs.imgclf}
        nets = {"audio": theirs.ConfidNet_txt, "visual": theirs.ConfidNet_img}
        # encoders and classifiers (the ConfidNets' decay enters mmbench's gradient, the release's Adam step)
        our_norms = GradNorms(trainer.optimizer, {m: [*ours.encoders[m].parameters(), *ours.fusion.heads[m].parameters()]
                                                  for m in MODS})
        their_norms = GradNorms(their_opt, {m: list(clfs[m].parameters()) for m in MODS})

        diff = MaxDiff(TOL)
        for step, batch in enumerate(batches):
            loss, out, logs = trainer.train_step(batch)
            theirs.train()
            x = batch.inputs
            unused = torch.zeros(len(batch))  # segment and mask: BERT inputs, unused by these encoders
            official = (x["audio"], unused, unused, x["visual"], batch.labels, batch.ids)
            with returned_locals(cls.forward) as calls:
                their_loss, _, _ = script.model_forward(0, theirs, args, None, their_opt, official, mode="train")
            their_opt.zero_grad()
            their_loss.backward()
            their_opt.step()
            local, where = calls[0], f"step {step}"
            diff("loss", loss - logs["confidnet_decay"], their_loss, where)
            diff("tcp", torch.stack([out.extras["tcp_audio"], out.extras["tcp_visual"]]),
                 torch.stack([local["txt_tcp"].squeeze(1), local["img_tcp"].squeeze(1)]), where)
            diff("weights", torch.stack([out.extras["weight_audio"], out.extras["weight_visual"]]),
                 torch.stack([local["w_txt"].squeeze(1), local["w_img"].squeeze(1)]), where)
            diff("grad_norm", [our_norms.steps[-1][m] for m in MODS], [their_norms.steps[-1][m] for m in MODS], where)
        for m in MODS:
            ours_m = {"encoder": ours.encoders[m], "head": ours.fusion.heads[m], "confidnet": ours.fusion.confidnets[m]}
            theirs_m = {"encoder": clfs[m].encoder, "head": clfs[m].head, "confidnet": nets[m]}
            for part, module in ours_m.items():
                for (name, p), q in zip(module.named_parameters(), theirs_m[part].parameters()):
                    diff("parameters", p, q, f"{part}.{m}.{name}")

        test = batches[0]
        with torch.no_grad():
            ours.eval()
            theirs.eval()
            mine = ours(test)
            fused, *_, w_txt, w_img = theirs(test.inputs["audio"], None, None, test.inputs["visual"], "pdf_test")
        diff("calibrated", mine.logits, fused, "test")
        diff("calibrated weights", torch.stack([mine.extras["weight_audio"], mine.extras["weight_visual"]]),
             torch.stack([w_txt.squeeze(1), w_img.squeeze(1)]), "test")
        train_mode = theirs(test.inputs["audio"], None, None, test.inputs["visual"], "pdf_train")[0]
    assert (mine.logits - train_mode).abs().max() > 1e-4  # the calibration changed the compared fusion
    assert largest_change(ours, initial) > 1e-2
    print(diff.summary(f"PDF, {len(batches)} steps, float64"))
