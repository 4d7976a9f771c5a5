"""MMPareto equals the official release (GeWu-Lab/MMPareto_ICML2024 ``code/MMPareto.py``,
``code/min_norm_solvers.py``) on identical tensors.

The release's ``train_epoch`` runs unchanged (DataParallel as its ``main`` wraps the model, per-loss
gradients, cosine test, ``MinNormSolver``, per-tensor norm restore, gamma 1.5); mmbench's MMPareto
runs through its Trainer. The release never steps its scheduler, so both sides keep a constant
learning rate. The audio head starts opposed to the fused head's audio half, so audio's gradients
conflict (the min-norm branch) where visual's mostly do not (the equal-weight branch).
Run with ``MMBENCH_REFERENCE_DIR=/path/to/checkouts``; see ``docs/methods/mmpareto.md``.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from mmbench.methods.mmpareto import MMPareto
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

REPO = "MMPareto_ICML2024"
EPOCHS, LR, STEPS_PER_EPOCH = 3, 0.05, 8  # 24 steps
TOL = 1e-9  # absolute, float64
KEYS = ["loss", "loss_fused", *(f"{k}_{m}" for k in ("loss", "cos", "k_mm", "grad") for m in MODALITIES)]


def official_module():
    stubs = ("dataset.av_dataset", "sklearn")
    return load_module(REPO, "MMPareto.py", stubs, root="code")


def test_mmpareto_equals_the_release_step_for_step(capsys):
    main = official_module()
    with float64():
        nets = backbones()
        fused = torch.nn.Linear(2 * WIDTH, CLASSES)
        unimodal = {m: torch.nn.Linear(WIDTH, CLASSES) for m in MODALITIES}
        with torch.no_grad():  # audio's head opposed to the fused head's audio half: conflicting gradients
            unimodal["audio"].weight.copy_(-fused.weight[:, :WIDTH])
        fusion = ConcatFusion(list(MODALITIES), WIDTH, CLASSES)
        fusion.fc.load_state_dict(fused.state_dict())
        model = MultimodalModel({m: Pooled(n) for m, n in copies(nets).items()}, fusion, copies(unimodal))
    ours = train_mmbench(MMPareto(), model, av_data(STEPS_PER_EPOCH * BATCH), EPOCHS, LR, schedule="none")

    with float64():
        net = main.AVClassifier(SimpleNamespace(dataset="CREMAD"))
        net.audio_net, net.visual_net = copies(nets).values()
        net.head, net.head_audio, net.head_video = fused, *copies(unimodal).values()
        dp = torch.nn.DataParallel(net)
        optimizer = torch.optim.SGD(dp.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)  # as main()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 30, 0.1)  # created by main(), never stepped

        def read(f):
            row = {"loss": f["loss"].item(), "loss_fused": f["loss_mm"].item(), "loss_audio": f["loss_a"].item(),
                   "loss_visual": f["loss_v"].item()}
            for m, k in (("audio", "audio"), ("visual", "visual")):
                row.update({f"cos_{m}": f[f"this_cos_{k}"].item(), f"k_mm_{m}": float(f[f"{k}_k"][0])})
            return row

        encoders = {"audio": net.audio_net, "visual": net.visual_net}
        heads = {"fused": net.head, "head_audio": net.head_audio, "head_visual": net.head_video}
        theirs = StepLog(optimizer, "train_epoch", read, encoders, {**encoders, **heads})
        for epoch, batches in enumerate(epochs_of(ours)):
            loader = [(b.inputs["audio"], b.inputs["visual"], b.labels) for b in batches]
            main.train_epoch(None, epoch, dp, "cpu", loader, optimizer, scheduler)

    diffs = max_differences(ours, theirs, KEYS)
    with capsys.disabled():
        print(f"\nMMPareto vs release, {len(ours.steps)} steps, float64, max abs diff:", diffs)
    # the check can fail: both branches (conflict: min-norm weights; no conflict: 0.5) were taken
    conflicts = {r["conflict_audio"] for r in ours.steps} | {r["conflict_visual"] for r in ours.steps}
    assert conflicts == {0.0, 1.0} and any(r["k_mm_audio"] not in (0.5, 0.001, 0.999) for r in ours.steps)
    assert all(d <= TOL for d in diffs.values()), diffs
