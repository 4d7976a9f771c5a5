"""The audio-visual setting of the differential tests of OGM-GE, AGM, PMR and MMPareto.

Both sides start from the same tiny convolutional encoders (conv, batch norm, conv on 6x6 maps,
standing in for the releases' ResNet-18 backbones) and the same head weights, see the same batches
in the same order, and compute in float64. mmbench trains through its real :class:`Trainer`; the
official side runs the release's own epoch function. At every ``optimizer.step()`` each side
records what the method computed (read from the training function's local variables at that
moment), the gradient norm of each encoder, and afterwards the parameters and buffers.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import OptimConfig
from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
from mmbench.training import Trainer

CLASSES, BATCH, WIDTH = 6, 8, 8  # CREMA-D's 6 classes (the releases hard-code the count per dataset)
MODALITIES = ("audio", "visual")
CHANNELS = {"audio": 1, "visual": 3}


class TinyConv(nn.Module):
    """A backbone ``[B, C, 6, 6] -> [B, WIDTH, 6, 6]`` in float64 (the releases cast inputs with ``.float()``)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, WIDTH, 3, padding=1)
        self.bn = nn.BatchNorm2d(WIDTH)
        self.conv2 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.bn(self.conv1(x.double()))))


class Pooled(nn.Module):
    """The mmbench encoder: a backbone and global average pooling, as the releases' ``AVClassifier`` pools."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.out_dim = net, WIDTH

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.net(x), 1).flatten(1)


@contextlib.contextmanager
def float64():
    """Default dtype float64 inside the block: for building the models, and for the releases, which allocate
    some tensors in the default dtype (mmbench trains outside it: its parameters set the dtype)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def av_data(n: int, seed: int = 0) -> MultimodalData:
    """``n`` samples of 6 classes, audio ``[1, 6, 6]`` and visual ``[3, 6, 6]`` float32 maps whose mean
    depends on the class, audio more than visual (so the modalities are imbalanced)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    labels = labels[torch.randperm(n, generator=g)]
    inputs = {}
    for m, signal in (("audio", 1.0), ("visual", 0.4)):
        shape = (n, CHANNELS[m], 6, 6)
        centers = torch.randn((CLASSES, *shape[1:]), generator=g, dtype=torch.float32)
        inputs[m] = signal * centers[labels] + torch.randn(shape, generator=g, dtype=torch.float32)
    specs = {m: ModalitySpec(m, "image", tuple(x.shape[1:])) for m, x in inputs.items()}
    meta = DatasetMeta("av", "test", tuple(f"c{i}" for i in range(CLASSES)), specs, {"train": n})
    return MultimodalData(inputs, labels, meta)


def backbones(seed: int = 0) -> dict[str, TinyConv]:
    torch.manual_seed(seed)
    return {m: TinyConv(CHANNELS[m]) for m in MODALITIES}


def official_batches(batches: list[MultimodalData]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(spec [B, 6, 6], image [B, 3, 6, 6], label)`` as the releases' CREMA-D loaders yield them."""
    return [(b.inputs["audio"][:, 0], b.inputs["visual"], b.labels) for b in batches]


def state(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``modules`` under common names (``<key>.<name in the module>``)."""
    return {f"{k}.{n}": t.detach().clone() for k, mod in modules.items() for n, t in mod.state_dict().items()}


class StepLog:
    """Per ``optimizer.step()``: ``read(locals of the frame running function)``, each encoder's gradient norm
    (``grad_<m>``), and the parameters after the step (``final`` after the last one)."""

    def __init__(self, optimizer: torch.optim.Optimizer, function: str, read: Callable[[dict], dict[str, Any]],
                 encoders: dict[str, nn.Module], modules: dict[str, nn.Module]):
        self.function, self.read, self.encoders, self.modules = function, read, encoders, modules
        self.steps: list[dict[str, Any]] = []
        self.final: dict[str, torch.Tensor] = {}
        optimizer.register_step_pre_hook(self._pre)
        optimizer.register_step_post_hook(self._post)

    def _pre(self, optimizer, args, kwargs):
        frame = sys._getframe(1)
        while frame.f_code.co_name != self.function:
            frame = frame.f_back
        row = dict(self.read(frame.f_locals))
        for m, enc in self.encoders.items():
            grads = [p.grad.flatten() for p in enc.parameters() if p.grad is not None]
            row[f"grad_{m}"] = torch.cat(grads).norm().item()
        self.steps.append(row)

    def _post(self, optimizer, args, kwargs):
        self.final = state(self.modules)


def train_mmbench(method, model, train: MultimodalData, epochs: int, lr: float,
                  read: Callable[[dict], dict] = lambda f: f["logs"], schedule: str = "step",
                  generator_seed: int = 1, batch_size: int = BATCH) -> StepLog:
    """Train with mmbench's Trainer (SGD momentum 0.9, weight decay 1e-4 as the releases; StepLR(1, 0.5)
    with ``schedule="step"``); ``read`` gets the locals of ``Trainer.train_step`` (default: the step's
    logs), and the log's rows also hold the step's ``loss``, ``batch`` and ``epoch``."""
    optim = OptimConfig(optimizer="sgd", lr=lr, momentum=0.9, weight_decay=1e-4, schedule=schedule, step_size=1,
                        gamma=0.5, epochs=epochs, batch_size=batch_size)
    trainer = Trainer(method, model, optim, torch.device("cpu"), seed=0)
    trainer.state.generator.manual_seed(generator_seed)

    def read_step(f):
        return {"loss": f["value"], "batch": f["batch"], "epoch": f["state"].epoch, **read(f)}

    encoders = {m: model.encoders[m].net for m in MODALITIES}
    log = StepLog(trainer.optimizer, "train_step", read_step, encoders, {**encoders, **heads_of(model)})
    trainer.fit(train, train.index(slice(0, 2 * batch_size)))
    return log


def heads_of(model) -> dict[str, nn.Module]:
    """mmbench's heads under the common names: ``fused`` (the concat head), ``head_<m>`` (unimodal heads)."""
    heads = {"fused": model.fusion.fc}
    if model.heads is not None:
        heads.update({f"head_{m}": h for m, h in model.heads.items()})
    return heads


def epochs_of(log: StepLog) -> list[list[MultimodalData]]:
    """The batches mmbench trained on, per epoch, in order."""
    out: list[list[MultimodalData]] = []
    for row in log.steps:
        if row["epoch"] == len(out):
            out.append([])
        out[-1].append(row["batch"])
    return out


def copies(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    return {m: copy.deepcopy(n) for m, n in nets.items()}


def max_differences(ours: StepLog, theirs: StepLog, keys: list[str], params: bool = True) -> dict[str, float]:
    """Largest absolute difference over the steps for each key and, with ``params``, over all parameters
    and buffers after the last step (``params``)."""
    assert len(ours.steps) == len(theirs.steps)
    diffs = {k: max(_diff(a[k], b[k]) for a, b in zip(ours.steps, theirs.steps)) for k in keys}
    if not params:
        return diffs
    assert ours.final.keys() == theirs.final.keys()
    diffs["params"] = max(_diff(ours.final[k], theirs.final[k]) for k in ours.final)
    return diffs


def _diff(a, b) -> float:
    a, b = (torch.as_tensor(x, dtype=torch.float64) if not torch.is_tensor(x) else x.detach().double() for x in (a, b))
    return (a - b).abs().max().item()
