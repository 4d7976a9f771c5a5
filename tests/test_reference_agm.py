"""AGM equals the official release (lihong2303/AGM ``run/CREMAD_main.py``, ``model/CREMAD_net.py``) on identical tensors.

The release's ``train`` function runs unchanged with its ``GradMod`` model (muted passes in eval mode,
backward hooks scaling the Shapley-like outputs, conditional clip); mmbench's AGM runs through its
Trainer. The release counts epochs from 1: its window 0-2 is mmbench's 0-1. After the window the
release keeps the last coefficients (``scale_after_window="keep_last"``, proven equal here); mmbench's
default stops modulating, which changes the steps after the window only.
Run with ``MMBENCH_REFERENCE_DIR=/path/to/checkouts``; see ``docs/methods/agm.md``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from mmbench.methods.agm import AGM
from mmbench.models.fusion import ConcatFusion
from mmbench.models.multimodal import MultimodalModel
from tests.reference import load_module
from tests.reference_av import (
    BATCH,
    CLASSES,
    MODALITIES,
    WIDTH,
    Pooled,
    StepLog,
    av_data,
    backbones,
    copies,
    epochs_of,
    float64,
    max_differences,
    train_mmbench,
)

REPO = "AGM"
EPOCHS, LR, ALPHA, STEPS_PER_EPOCH = 3, 0.05, 1.0, 8  # 24 steps; the third epoch is after the window
TOL = 1e-9  # absolute, float64
KEYS = [f"{k}_{m}" for k in ("score", "ratio", "optimal_ratio", "coeff", "scale", "grad") for m in MODALITIES]


def official_modules():
    stubs = ("tasks.CREMAD_task", "torch.utils.tensorboard", "sklearn")
    return load_module(REPO, "run/CREMAD_main.py", stubs), load_module(REPO, "model/CREMAD_net.py")


def run_release(main, net_module, nets, head, epochs, cfgs) -> StepLog:
    model = net_module.GradMod(cfgs)
    model.net.audio_net, model.net.visual_net = copies(nets).values()
    model.net.fusion_module = net_module.ConcatFusion(2 * WIDTH, CLASSES)
    model.net.fusion_module.fc_out.load_state_dict(head.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)  # tasks/CREMAD_task.py
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)

    def read(f):
        a, v = f["score_audio"].item(), f["score_visual"].item()
        return {"loss": f["loss"].item(), "score_audio": a, "score_visual": v,
                "ratio_audio": f["ratio_a"], "ratio_visual": f["ratio_v"],
                "optimal_ratio_audio": f["optimal_ratio_a"], "optimal_ratio_visual": f["optimal_ratio_v"],
                "coeff_audio": f["coeff_a"], "coeff_visual": f["coeff_v"],
                "scale_audio": model.scale_a, "scale_visual": model.scale_v,
                "clipped": float(bool(f["grad_max"] > 1 or f["grad_min"] < -1))}

    encoders = {"audio": model.net.audio_net, "visual": model.net.visual_net}
    log = StepLog(optimizer, "train", read, encoders, {**encoders, "fused": model.net.fusion_module.fc_out})
    writer, logger = SimpleNamespace(add_scalar=lambda *a: None, add_scalars=lambda *a: None), logging.getLogger("agm")
    score_a = score_v = 0.0
    for epoch, batches in enumerate(epochs, start=1):
        loader = [(None, b.inputs["audio"][:, 0], b.inputs["visual"], b.labels) for b in batches]
        score_a, score_v = main.train(model, loader, optimizer, scheduler, logger, cfgs, epoch, "cpu", writer,
                                      score_a, score_v, 1.0, 1.0)
    return log


@pytest.mark.parametrize("after_window", ["keep_last", "reset"])
def test_agm_equals_the_release_step_for_step(after_window, capsys):
    main, net_module = official_modules()
    with float64():
        nets = backbones()
        for net in nets.values():  # larger features: the fusion head's gradient sometimes leaves [-1, 1] (clip)
            net.conv2.weight.data.mul_(8)
        head = torch.nn.Linear(2 * WIDTH, CLASSES)
        fusion = ConcatFusion(list(MODALITIES), WIDTH, CLASSES)
        fusion.fc.load_state_dict(head.state_dict())
        model = MultimodalModel({m: Pooled(n) for m, n in copies(nets).items()}, fusion)
    method = AGM(AGM.Params(alpha=ALPHA, modulation_starts=0, modulation_ends=1, scale_after_window=after_window))
    ours = train_mmbench(method, model, av_data(STEPS_PER_EPOCH * BATCH), EPOCHS, LR)

    cfgs = SimpleNamespace(mode="train", fusion_type="late_fusion", fusion="concat", dataset="CREMAD",
                           modality="Multimodal", methods="AGM", alpha=ALPHA, modulation_starts=0,
                           modulation_ends=2, use_mgpu=False, EPOCHS=EPOCHS)
    with float64():
        theirs = run_release(main, net_module, nets, head, epochs_of(ours), cfgs)

    window = STEPS_PER_EPOCH * 2
    if after_window == "reset":  # equal inside the window; afterwards the release keeps its last scale
        assert all(r["scale_audio"] == 1.0 for r in ours.steps[window:])
        assert any(abs(r["scale_audio"] - 1.0) > 1e-3 for r in theirs.steps[window:])
        assert max((ours.final[k] - theirs.final[k]).abs().max() for k in ours.final) > 1e-6
        ours.steps, theirs.steps = ours.steps[:window], theirs.steps[:window]
    diffs = max_differences(ours, theirs, ["loss", "clipped", *KEYS], params=after_window == "keep_last")
    with capsys.disabled():
        print(f"\nAGM {after_window} vs release, {len(ours.steps)} steps, float64, max abs diff:", diffs)
    # the check can fail: the coefficients moved away from 1 and both branches of the clip were taken
    assert max(abs(r["coeff_audio"] - 1.0) for r in ours.steps) > 1e-2
    assert {r["clipped"] for r in theirs.steps} == {0.0, 1.0}
    assert all(d <= TOL for d in diffs.values()), diffs
