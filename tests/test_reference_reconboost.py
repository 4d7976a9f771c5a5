"""ReconBoost equals the official release on identical tensors.

The release's ``main`` (huacong/ReconBoost ``train.py``, with ``models/dynamic_net.py`` and
``schedule.py``) runs unchanged for three stages (audio, visual, audio; one epoch per phase) on two
small float64 encoders, the shared head and the same batches as mmbench's Trainer. What cannot run
on a CPU test machine is replaced around it, never inside it: the datasets, the backbones (our
encoders instead of ResNet-18), TensorBoard, the per-stage test pass, ``.cuda()`` (identity) and
the CUDA device of ``boost_rate``. Compared at every optimizer step: the loss, each encoder's and
the head's gradient norm; after the last step: every parameter. Run with
``MMBENCH_REFERENCE_DIR=/path/to/checkouts``; see ``docs/methods/reconboost.md``.
"""

from __future__ import annotations

import copy
import os
import sys
from types import SimpleNamespace

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from mmbench.config import OptimConfig
from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
from mmbench.methods.reconboost import BoostedEnsemble, ReconBoost
from mmbench.models.multimodal import HeadFusionModel
from mmbench.training import Trainer
from tests.reference import load_module

REPO = "ReconBoost"
N, BATCH, CLASSES, FEATURES, HIDDEN, STAGES, LR = 32, 8, 6, 512, 256, 3, 0.05  # the release's head is 512-256-K
WIDTHS = {"audio": 5, "visual": 7}
TOL = 1e-7  # absolute: the release casts the ensemble's logits to float32 before the softmax of q
STUBS = ("torchvision", "torchvision.models", "torch.utils.tensorboard", "models.CREMA.basic_model",
         "models.MView40.image", "loaders.CramedDataset", "loaders.AVEDataset", "loaders.MView40.train_dataset",
         "loaders.MView40.test_dataset")


class Encoder(nn.Module):
    """Flattens ``[B, ...]`` (the release adds a channel axis to the audio) to float64, then an MLP."""

    def __init__(self, inputs: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(inputs, 16), nn.ReLU(), nn.Linear(16, FEATURES)).double()
        self.out_dim = FEATURES

    def forward(self, x):
        return self.net(x.reshape(len(x), -1).double())


class Learner(nn.Module):
    """The release's learner: a backbone whose ``fc`` is set to the ensemble's shared head."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.enc = encoder

    def forward(self, x):
        return self.fc(self.enc(x))


def data() -> MultimodalData:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % CLASSES
    # float32 values: the release casts its inputs with .float()
    inputs = {m: (s * torch.randn(CLASSES, w, generator=g)[labels] + torch.randn(N, w, generator=g))
              for (m, w), s in zip(WIDTHS.items(), (1.0, 0.3))}
    specs = {m: ModalitySpec(m, "vector", (x.shape[1],)) for m, x in inputs.items()}
    return MultimodalData(inputs, labels, DatasetMeta("av", "test", tuple("abcdef"), specs, {"train": N}))


class Recorder:
    """A global optimizer pre-step hook: the loss (from the training function's frame) and the gradient norms
    of the parameters this step updates."""

    def __init__(self, function, loss, modules):
        self.function, self.loss, self.modules, self.rows, self.batches = function, loss, modules, [], []
        self.handles = [register_optimizer_step_pre_hook(self._pre), register_optimizer_step_post_hook(self._post)]
        self.final: dict[str, torch.Tensor] = {}  # every parameter after the last step

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def _post(self, optimizer, args, kwargs):
        self.final = {id(p): p.detach().clone() for group in optimizer.param_groups for p in group["params"]}

    def _pre(self, optimizer, args, kwargs):
        frame = sys._getframe(1)
        while frame.f_code.co_name != self.function:
            frame = frame.f_back
        self.batches.append(frame.f_locals.get("batch"))
        row = {"loss": self.loss(frame.f_locals)}
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}  # (the release's
        for name, module in self.modules.items():  # learners keep stale gradients outside their phases)
            grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None and id(p) in stepped]
            row[f"grad_{name}"] = torch.cat(grads).norm().item() if grads else 0.0
        self.rows.append(row)


class Torch:
    """``torch`` for ``dynamic_net.py`` on a CPU: ``torch.tensor(..., device="cuda")`` lands on the CPU."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def tensor(*args, device=None, **kwargs):
        return torch.tensor(*args, **kwargs)


def test_reconboost_equals_the_release_step_for_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))  # train.py sets it
    if getattr(sys.modules.get("utils"), "__file__", "") is None:  # another checkout's namespace package
        monkeypatch.delitem(sys.modules, "utils")
    release = load_module(REPO, "train.py", STUBS)
    torch.manual_seed(0)
    encoders = {m: Encoder(w) for m, w in WIDTHS.items()}
    ensemble = BoostedEnsemble(list(WIDTHS), FEATURES, HIDDEN, CLASSES, boost_rate=1.0)
    ensemble.head.double()  # boost_rate stays float32, as the release's torch.tensor(1.0)
    head_state = {k.replace("0.", "fc1.").replace("2.", "fc2."): v.clone() for k, v in ensemble.head.state_dict().items()}
    learners = {m: Learner(copy.deepcopy(e)) for m, e in encoders.items()}
    train = data()

    # mmbench: defaults (consolidation as the release), one epoch per phase
    method = ReconBoost(ReconBoost.Params(epochs_per_stage=1, correct_epoch=1, weight1=5.0, weight2=1.0, alpha=0.5))
    model = HeadFusionModel(encoders, ensemble)
    optim = OptimConfig(optimizer="sgd", lr=LR, momentum=0.9, weight_decay=5e-4, epochs=2 * STAGES, batch_size=BATCH)
    trainer = Trainer(method, model, optim, torch.device("cpu"), seed=0)
    ours = Recorder("train_step", lambda f: f["value"], {**encoders, "head": ensemble.head})
    try:
        trainer.fit(train, train.index(slice(0, 2 * BATCH)))
    finally:
        ours.remove()
    per_epoch = N // BATCH
    epochs = [ours.batches[i:i + per_epoch] for i in range(0, len(ours.batches), per_epoch)]

    # the release: its main() with the same learners, head weights and batches
    made, official_net = [], release.DynamicNet

    def dynamic_net(*args, **kwargs):
        net = official_net(*args, **kwargs)
        net.head.double().load_state_dict(head_state)  # float64, as ours
        made.append(net)
        return net

    class Loader:  # each pass over it is the next epoch mmbench trained on
        def __init__(self, **_):
            self.epoch = 0

        def __iter__(self):
            batches = epochs[self.epoch]
            self.epoch += 1
            return iter([(b.inputs["audio"], b.inputs["visual"], b.labels) for b in batches])

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setitem(official_net.__init__.__globals__, "torch", Torch())
    monkeypatch.setattr(release, "DynamicNet", dynamic_net)
    monkeypatch.setattr(release, "AudioNet", lambda dataset: learners["audio"])
    monkeypatch.setattr(release, "VisualNet", lambda dataset: learners["visual"])
    monkeypatch.setattr(release, "CramedDataset", lambda **_: None)
    monkeypatch.setattr(release, "DataLoader", lambda dataset, **kw: Loader())
    monkeypatch.setattr(release, "check_status", lambda stage: stage < STAGES)
    monkeypatch.setattr(release, "test", lambda *a, **k: 0.0)
    args = SimpleNamespace(dataset="CREMAD", dataset_path="", n_class=CLASSES, batch_size=BATCH, boost_rate=1.0,
                           n_worker=0, epochs_per_stage=1, correct_epoch=1, common_space=True, use_lr=True,
                           m_lr=LR, e_lr=LR, use_br=True, use_pretrain=False, use_ga=True, weight1=5.0,
                           weight2=1.0, alpha=0.5, ckpt_dir=str(tmp_path), use_tensorboard=True, m1ckpt="", m2ckpt="",
                           tensorboard_dir=str(tmp_path))
    theirs = Recorder("main", lambda f: f["loss"].mean().item(), {m: learners[m].enc for m in WIDTHS} |
                      {"head": None})
    theirs.modules["head"] = _LateHead(made)
    try:
        release.main(args, "t")
    finally:
        theirs.remove()

    assert len(ours.rows) == len(theirs.rows) == 2 * STAGES * per_epoch
    diffs = {k: max(abs(a[k] - b[k]) for a, b in zip(ours.rows, theirs.rows)) for k in ours.rows[0]}
    net = made[0]
    # mmbench's fit ends on the best epoch's weights: compare the values after its last step
    mine = {**{f"{m}.{k}": ours.final[id(v)] for m, e in encoders.items() for k, v in e.named_parameters()},
            **{f"head.{k}": ours.final[id(v)] for k, v in ensemble.head.named_parameters()},
            "boost_rate": ours.final[id(ensemble.boost_rate)]}
    official = {**{f"{m}.{k}": v for m, lr in learners.items() for k, v in lr.enc.named_parameters()},
                **{f"head.{k.replace('fc1.', '0.').replace('fc2.', '2.')}": v for k, v in net.head.named_parameters()},
                "boost_rate": net.boost_rate}
    assert mine.keys() == official.keys()
    diffs["params"] = max((mine[k].double() - official[k].detach().double()).abs().max().item() for k in mine)
    with capsys.disabled():
        print(f"\nReconBoost vs release, {len(ours.rows)} steps ({STAGES} stages), float64, max abs diff:", diffs)
    assert all(d <= TOL for d in diffs.values()), diffs
    assert abs(mine["boost_rate"].item() - 1.0) > 1e-4  # rectification trained it


class _LateHead(nn.Module):
    """The release's head, which exists only once ``main`` has built its DynamicNet."""

    def __init__(self, made):
        super().__init__()
        self.made = made

    def parameters(self, recurse=True):
        return self.made[0].head.parameters() if self.made else iter(())
