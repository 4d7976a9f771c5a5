"""MMCosine equals the official release (GeWu-Lab/MMCosine_ICASSP23 ``main_CD.py``) on identical tensors.

The release's ``train_epoch`` (with ``--mmcosine True``) and ``valid`` run unchanged on a DataParallel
classifier with the release's ``ConcatFusion``; the release slices ``fc_out`` at column 512, so both sides
use 512-wide linear stand-in encoders. mmbench's MMCosine runs through its Trainer.
Run with ``MMBENCH_REFERENCE_DIR=/path/to/checkouts``; see ``docs/methods/mmcosine.md``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmbench.evaluation import evaluate
from mmbench.methods.mmcosine import MMCosine
from mmbench.models.fusion import ConcatFusion
from mmbench.models.multimodal import MultimodalModel
from tests.reference import load_module
from tests.reference_av import (
    BATCH,
    CHANNELS,
    CLASSES,
    MODALITIES,
    StepLog,
    av_data,
    copies,
    epochs_of,
    float64,
    max_differences,
    official_batches,
    train_mmbench,
)

REPO = "MMCosine_ICASSP23"
EPOCHS, LR, SCALING, WIDTH = 3, 0.05, 10.0, 512  # 3 x 8 = 24 steps
TOL = 1e-9  # absolute, float64


class Flat(nn.Module):
    """A linear stand-in encoder ``[B, C, 6, 6] -> [B, 512]`` (``net`` is what the step log reads)."""

    def __init__(self, channels: int):
        super().__init__()
        self.net, self.out_dim = nn.Linear(channels * 36, WIDTH), WIDTH

    def forward(self, x):
        return self.net(x.double().flatten(1))


class Official(nn.Module):
    """The release's ``AVClassifier`` interface: ``forward(audio, visual, args) -> (a, v, out)``."""

    def __init__(self, nets, fusion):
        super().__init__()
        self.audio_net, self.visual_net, self.fusion_module = nets["audio"], nets["visual"], fusion

    def forward(self, audio, visual, args):
        return self.fusion_module(self.audio_net(audio), self.visual_net(visual))


def named(batches):
    """The release's CREMA-D loader also yields the clips' names."""
    return [(*b, [None] * len(b[2])) for b in batches]


def test_mmcosine_equals_the_release_step_for_step(capsys):
    main = load_module(REPO, "main_CD.py", ("torch.utils.tensorboard", "dataset.dataset", "models.basic_model",
                                            "utils.utils"))
    fusion_modules = load_module(REPO, "models/fusion_modules.py")
    with float64():
        torch.manual_seed(0)
        nets = {m: Flat(CHANNELS[m]) for m in MODALITIES}
        head = nn.Linear(2 * WIDTH, CLASSES)
        train = av_data(8 * BATCH)
        fusion = ConcatFusion(list(MODALITIES), WIDTH, CLASSES)
        fusion.fc.load_state_dict(head.state_dict())
        model = MultimodalModel(copies(nets), fusion)
    ours = train_mmbench(MMCosine(MMCosine.Params(scaling=SCALING)), model, train, EPOCHS, LR)

    with float64():
        release_head = fusion_modules.ConcatFusion(2 * WIDTH, CLASSES)
        release_head.fc_out.load_state_dict(head.state_dict())
        theirs_nets = copies(nets)
        net = Official(theirs_nets, release_head)
        dp = nn.DataParallel(net)
        optimizer = torch.optim.SGD(dp.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)
        args = SimpleNamespace(mmcosine=True, scaling=SCALING, lam=0.0, use_tensorboard=False, dataset="CREMAD")
        linears = {m: n.net for m, n in theirs_nets.items()}
        theirs = StepLog(optimizer, "train_epoch", lambda f: {"loss": f["loss"].item()}, linears,
                         {**linears, "fused": release_head.fc_out})
        for epoch, batches in enumerate(epochs_of(ours)):
            main.train_epoch(args, epoch, dp, "cpu", named(official_batches(batches)), optimizer)
            scheduler.step()

        # evaluation: the release's valid on the trained weights, and mmbench's on the same weights
        test = train
        acc, acc_a, acc_v = main.valid(args, dp, "cpu", named(official_batches(list(test.batches(16)))), 0)
        model.load_state_dict({f"encoders.{m}.{k}": v for m in MODALITIES
                               for k, v in theirs_nets[m].state_dict().items()}
                              | {f"fusion.fc.{k}": v for k, v in release_head.fc_out.state_dict().items()})
    ev = evaluate(model.eval(), MMCosine(MMCosine.Params(scaling=SCALING)), test)
    cos = evaluate(model, MMCosine(MMCosine.Params(scaling=SCALING, prediction="cosine")), test)

    diffs = max_differences(ours, theirs, ["loss", "grad_audio", "grad_visual"])
    with capsys.disabled():
        print(f"\nMMCosine vs release, {len(ours.steps)} steps, float64, max abs diff:", diffs,
              f"\nvalid: release acc {acc:.4f} a {acc_a:.4f} v {acc_v:.4f}; mmbench linear {ev['acc']:.4f} "
              f"a {ev['acc_audio']:.4f} v {ev['acc_visual']:.4f}; cosine {cos['acc']:.4f}")
    assert ours.steps[-1]["loss"] < ours.steps[0]["loss"] - 0.1 and acc > 0.5  # it trained
    assert all(d <= TOL for d in diffs.values()), diffs
    assert (ev["acc"], ev["acc_audio"], ev["acc_visual"]) == pytest.approx((acc, acc_a, acc_v), abs=1e-6)
