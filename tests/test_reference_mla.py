"""MLA equals the official release on identical tensors, and its projector equals BalanceMM's.

The release (Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation ``main.py``
``train_epoch`` with ``gs_flag``, ``utils/utils.py`` ``GSPlugin``) runs unchanged on a DataParallel
model of two small float64 encoders (linear, batch norm, ReLU, linear) and the shared head; mmbench's
MLA runs through its Trainer from the same weights on the same batches. Compared at every optimizer
step: the loss and each encoder's gradient norm; after the last step: every parameter and buffer.
``projection="none"`` is compared with the release as it runs (its name check skips the projector);
``projection="release"`` with the release whose head is named so that the check matches. Run with
``MMBENCH_REFERENCE_DIR=/path/to/checkouts``; see ``docs/methods/mla.md``.
"""

from __future__ import annotations

import ast
import copy
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmbench.config import OptimConfig
from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
from mmbench.methods.mla import MLA, SharedHead, update_projector
from mmbench.models.multimodal import HeadFusionModel
from mmbench.training import Trainer
from tests.reference import load_module, reference_dir

REPO, BALANCEMM = "Multimodal-Learning-with-Alternating-Unimodal-Adaptation", "BalanceBenchmark"
N, BATCH, DIM, CLASSES, EPOCHS, LR = 32, 8, 6, 4, 3, 0.05  # 4 batches x 2 modalities x 3 epochs = 24 steps
TOL = 1e-10  # absolute, float64


def release_main():
    """The release's ``main.py`` (its dataset, model and TensorBoard imports stubbed)."""
    main = load_module(REPO, "main.py", ("torch.utils.tensorboard", "dataset.dataset", "models.basic_model"))
    leaked = sys.modules.get("utils")  # its ``utils`` folder is a namespace package, which the loader cannot
    if leaked is not None and getattr(leaked, "__file__", None) is None:  # tell by file: drop it here
        del sys.modules["utils"]
    return main


def encoder(inputs: int) -> nn.Module:
    net = nn.Sequential(nn.Linear(inputs, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, DIM)).double()
    net.out_dim = DIM
    return net


def data() -> MultimodalData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % CLASSES
    inputs = {m: s * torch.randn(CLASSES, w, generator=g, dtype=torch.float64)[labels]
              + torch.randn(N, w, generator=g, dtype=torch.float64) for m, s, w in (("audio", 1.0, 5), ("visual", 0.3, 7))}
    specs = {m: ModalitySpec(m, "vector", (x.shape[1],)) for m, x in inputs.items()}
    return MultimodalData(inputs, labels, DatasetMeta("av", "test", tuple("abcd"), specs, {"train": N}))


class Log:
    """Per optimizer step: the loss read from the training function's frame and each encoder's gradient norm;
    ``final``: ``state()`` after the last step (mmbench's fit then reloads the best epoch's weights)."""

    def __init__(self, optimizer, function, loss, encoders, state):
        self.rows, self.function, self.loss, self.encoders, self.state = [], function, loss, encoders, state
        self.batches = []  # the frame's ``batch`` at each step (mmbench's Trainer)
        self.final = {}
        optimizer.register_step_pre_hook(self._pre)
        optimizer.register_step_post_hook(lambda *_: setattr(self, "final", self.state()))

    def _pre(self, optimizer, args, kwargs):
        frame = sys._getframe(1)
        while frame.f_code.co_name != self.function:
            frame = frame.f_back
        row = {"loss": self.loss(frame.f_locals, len(self.rows))}
        self.batches.append(frame.f_locals.get("batch"))
        for m, enc in self.encoders.items():
            grads = [p.grad.flatten() for p in enc.parameters() if p.grad is not None]
            row[f"grad_{m}"] = torch.cat(grads).norm().item() if grads else 0.0
        self.rows.append(row)


class NamedHead(nn.Module):
    """The head as a module whose weight is called ``module.weight``: the name the release's check expects."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.module = linear

    def forward(self, x):
        return self.module(x)


class ReleaseNet(nn.Module):
    def __init__(self, audio, visual, head):
        super().__init__()
        self.audio, self.visual = audio, visual
        self.fusion_module = nn.Module()
        self.fusion_module.fc_out = head

    def forward(self, spec, image):
        return self.audio(spec), self.visual(image)


@pytest.mark.parametrize("projection", ["none", "release"])
def test_mla_equals_the_release_step_for_step(projection, capsys):
    main = release_main()
    torch.manual_seed(0)
    encoders = {"audio": encoder(5), "visual": encoder(7)}
    head = SharedHead(DIM, CLASSES, "dynamic").double()
    start = copy.deepcopy(head.linear.weight.detach())
    train = data()
    optim = OptimConfig(optimizer="sgd", lr=LR, momentum=0.9, weight_decay=1e-4, schedule="step", step_size=1,
                        gamma=0.5, epochs=EPOCHS, batch_size=BATCH)

    # the release: same initial weights, its own epoch function
    net = ReleaseNet(copy.deepcopy(encoders["audio"]), copy.deepcopy(encoders["visual"]), copy.deepcopy(head.linear))
    if projection == "release":
        net.fusion_module.fc_out = NamedHead(net.fusion_module.fc_out)
    dp = nn.DataParallel(net)
    optimizer = torch.optim.SGD(dp.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)
    plugin = main.GSPlugin.__new__(main.GSPlugin)  # its __init__ allocates a 512 x 512 CUDA identity
    plugin.Pl, plugin.exp_count = torch.eye(DIM, dtype=torch.float64), 0
    theirs = Log(optimizer, "train_epoch", lambda f, k: f[("loss_a", "loss_v")[k % 2]].item(),
                 {"audio": net.audio, "visual": net.visual}, lambda: {
                     **{f"encoders.audio.{k}": v.clone() for k, v in net.audio.state_dict().items()},
                     **{f"encoders.visual.{k}": v.clone() for k, v in net.visual.state_dict().items()},
                     **{f"head.{k.removeprefix('module.')}": v.clone()
                        for k, v in net.fusion_module.fc_out.state_dict().items()}})

    # mmbench
    model = HeadFusionModel(encoders, head)
    trainer = Trainer(MLA(MLA.Params(projection=projection)), model, optim, torch.device("cpu"), seed=0)
    ours = Log(trainer.optimizer, "train_step", lambda f, k: f["value"], dict(model.encoders), lambda: {
        **{f"encoders.{k}": v.clone() for k, v in model.encoders.state_dict().items()},
        **{f"head.{k}": v.clone() for k, v in head.linear.state_dict().items()}})
    trainer.fit(train, train.index(slice(0, 2 * BATCH)))
    batches = ours.batches

    args = SimpleNamespace(lorb="base", clip=True, modal3=False)
    per_epoch = len(batches) // EPOCHS
    for epoch in range(EPOCHS):
        seen = batches[epoch * per_epoch:(epoch + 1) * per_epoch:2]  # each batch takes 2 steps
        loader = [(b.inputs["audio"], b.inputs["visual"], b.labels, None) for b in seen]
        main.train_epoch(args, epoch, dp, "cpu", loader, optimizer, scheduler, gs_plugin=plugin, gs_flag=True)

    assert len(ours.rows) == len(theirs.rows) == EPOCHS * 2 * N // BATCH
    diffs = {k: max(abs(a[k] - b[k]) for a, b in zip(ours.rows, theirs.rows)) for k in ours.rows[0]}
    mine, release = ours.final, theirs.final
    assert mine.keys() == release.keys()
    diffs["params"] = max((mine[k].double() - release[k].double()).abs().max().item() for k in mine)
    with capsys.disabled():
        print(f"\nMLA projection={projection} vs release, {len(ours.rows)} steps, float64, max abs diff:", diffs)
    assert all(d <= TOL for d in diffs.values()), diffs
    assert (mine["head.weight"] - start).abs().max() > 1e-3  # it trained
    assert plugin.exp_count == len(theirs.rows)
    if projection == "release":  # the projector ran on the release's side too: it moved from the identity
        assert not torch.allclose(plugin.Pl, torch.eye(DIM, dtype=torch.float64) / DIM ** 0.5)


def _balancemm_plugin():
    """BalanceMM's ``GSPlugin`` class, executed alone from ``balancemm/trainer/MLA_trainer.py`` (the module
    imports Lightning)."""
    path = reference_dir(BALANCEMM) / "balancemm" / "trainer" / "MLA_trainer.py"
    source = path.read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "GSPlugin")
    namespace = {"torch": torch}
    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)  # noqa: S102 - the official class
    return namespace["GSPlugin"]


@pytest.mark.parametrize("source", ["release", "balancemm"])
def test_projector_equals_the_official_function_on_fixed_inputs(source):
    """Six updates of the official ``before_update`` and of mmbench's rule on the same features and gradients."""
    if source == "release":
        main = release_main()
        plugin = main.GSPlugin.__new__(main.GSPlugin)
    else:
        plugin = _balancemm_plugin().__new__(_balancemm_plugin())
    plugin.Pl, plugin.exp_count = torch.eye(DIM, dtype=torch.float64), 0
    g = torch.Generator().manual_seed(3)
    linear = nn.Linear(DIM, CLASSES).double()
    target = NamedHead(linear) if source == "release" else linear
    p = torch.eye(DIM, dtype=torch.float64)
    for step in range(6):
        features = torch.randn(BATCH, DIM, generator=g, dtype=torch.float64) + 1.0
        grad = torch.randn(CLASSES, DIM, generator=g, dtype=torch.float64)
        linear.weight.grad = grad.clone()
        plugin.before_update(target, features, step % 4, 4, step + 1)
        p = update_projector(p, features.mean(0, keepdim=True), 0.1 ** (1 + (step % 4) / 4))
        ours = grad @ p.T if source == "release" else grad + grad @ p.T
        torch.testing.assert_close(plugin.Pl, p, rtol=0, atol=1e-12)
        torch.testing.assert_close(linear.weight.grad, ours, rtol=0, atol=1e-12)
    assert not torch.allclose(p, p.T)  # the elementwise division: a scalar one would keep P symmetric
