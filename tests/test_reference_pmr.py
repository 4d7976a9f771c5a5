"""PMR equals the official release (fanyunfeng-bit/Modal-Imbalance-PMR ``main_Prototype_grad.py``) on identical tensors.

The release's ``calculate_prototype`` and ``train_epoch`` run unchanged, called as its ``main`` calls
them (prototypes before epoch 0 and after every epoch, from the first tenth of the shuffled training
batches); they get the batches mmbench trained on and the samples mmbench drew its prototypes from.
mmbench's PMR runs through its Trainer. Compared per step: the loss, the prototypes in use, the
prototype ratio, the prototype-loss weights and losses, the encoders' gradient norms.
Run with ``MMBENCH_REFERENCE_DIR=/path/to/checkouts``; see ``docs/methods/pmr.md``.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

import mmbench.methods.pmr as pmr
from mmbench.models.fusion import ConcatFusion
from mmbench.models.multimodal import MultimodalModel
from tests.reference import load_module
from tests.reference_av import (
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
    official_batches,
    train_mmbench,
)

REPO = "Modal-Imbalance-PMR"
EPOCHS, LR, ALPHA, MOMENTUM, WINDOW = 3, 0.05, 1.0, 0.2, (0, 1)
BATCH, STEPS_PER_EPOCH = 16, 20  # 60 steps; prototypes from 2 batches (32 samples, every class)
TOL = 1e-9  # absolute, float64
KEYS = ["loss", "ratio_audio", "proto_weight_audio", "proto_weight_visual", "loss_proto_audio",
        "loss_proto_visual", "proto_audio", "proto_visual", "grad_audio", "grad_visual"]


class _Loader(list):
    """The prototype batches, reporting the length of the whole training loader (the release uses
    ``len(loader) // 10`` of them)."""

    def __len__(self) -> int:
        return STEPS_PER_EPOCH


def official_module():
    stubs = ("torch.utils.tensorboard", "dataset.CGMNIST", "dataset.CramedDataset", "dataset.AVEDataset",
             "dataset.dataset", "dataset.VGGSoundDataset")
    return load_module(REPO, "main_Prototype_grad.py", stubs), load_module(REPO, "models/fusion_modules.py")


def test_pmr_equals_the_release_step_for_step(monkeypatch, capsys):
    main, fusion_modules = official_module()
    drawn = []  # the samples of every prototype computation, in order

    def record(*args):
        drawn.append(indices(*args))
        return drawn[-1]

    indices = pmr.prototype_indices
    monkeypatch.setattr(pmr, "prototype_indices", record)
    with float64():
        nets = backbones()
        head = torch.nn.Linear(2 * WIDTH, CLASSES)
        fusion = ConcatFusion(list(MODALITIES), WIDTH, CLASSES)
        fusion.fc.load_state_dict(head.state_dict())
        model = MultimodalModel({m: Pooled(n) for m, n in copies(nets).items()}, fusion)
    method = pmr.PMR(pmr.PMR.Params(alpha=ALPHA, momentum_coef=MOMENTUM, modulation_starts=WINDOW[0],
                                    modulation_ends=WINDOW[1]))
    train = av_data(STEPS_PER_EPOCH * BATCH)

    def read_ours(f):
        return {**f["logs"], **{f"proto_{m}": f["method"].prototypes[m].clone() for m in MODALITIES}}

    ours = train_mmbench(method, model, train, EPOCHS, LR, read_ours, batch_size=BATCH)
    assert len(drawn) == EPOCHS + 1 and all(len(idx) == 2 * BATCH for idx in drawn)  # every class in 2 batches

    args = SimpleNamespace(dataset="CREMAD", modulation="Proto", fusion_method="concat", alpha=ALPHA,
                           modulation_starts=WINDOW[0], modulation_ends=WINDOW[1], momentum_coef=MOMENTUM,
                           embed_dim=WIDTH, optimizer="SGD")
    with float64():
        net = main.AVClassifier(args)
        net.audio_net, net.visual_net = copies(nets).values()
        net.fusion_module = fusion_modules.ConcatFusion(2 * WIDTH, CLASSES)
        net.fusion_module.fc_out.load_state_dict(head.state_dict())
        optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)  # as main()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)

        def read(f):
            weights = (f["beta"], f["lam"]) if WINDOW[0] <= f["epoch"] <= WINDOW[1] else (0.0, 0.0)
            return {"loss": f["loss"].item(), "ratio_audio": f["ratio_a_p"].item(),
                    "proto_weight_audio": weights[0], "proto_weight_visual": weights[1],
                    "loss_proto_audio": f["loss_proto_a"].item(), "loss_proto_visual": f["loss_proto_v"].item(),
                    "proto_audio": f["audio_proto"].clone(), "proto_visual": f["visual_proto"].clone()}

        encoders = {"audio": net.audio_net, "visual": net.visual_net}
        theirs = StepLog(optimizer, "train_epoch", read, encoders, {**encoders, "fused": net.fusion_module.fc_out})

        def prototypes(i, epoch, *previous):
            loader = _Loader(official_batches([train.index(chunk) for chunk in drawn[i].split(BATCH)]))
            return main.calculate_prototype(args, net, loader, "cpu", epoch, *previous)

        protos = prototypes(0, 0)  # as main(): before training, with epoch = 0
        for epoch, batches in enumerate(epochs_of(ours)):
            main.train_epoch(args, epoch, net, "cpu", official_batches(batches), optimizer, scheduler, *protos)
            protos = prototypes(epoch + 1, epoch, *protos)

    diffs = max_differences(ours, theirs, KEYS)
    with capsys.disabled():
        print(f"\nPMR vs release, {len(ours.steps)} steps, float64, max abs diff:", diffs)
    # the check can fail: both weighting branches were taken and the prototypes moved between epochs
    assert {(r["proto_weight_audio"], r["proto_weight_visual"]) for r in ours.steps} >= {(ALPHA, 0.0), (0.0, ALPHA)}
    assert (ours.steps[0]["proto_audio"] - ours.steps[-1]["proto_audio"]).abs().max() > 1e-3
    assert all(d <= TOL for d in diffs.values()), diffs
