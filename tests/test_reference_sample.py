"""Sample's valuation and copies equal the official release's
(GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation ``code/sample_level.py`` ``execute_modulation``,
``code/models/models.py`` ``AVClassifier.exec_drop``, ``code/datasets/dataloader.py``
``AV_KS_Dataset_sample_level``) on identical features and head.

The release's valuation runs unchanged on a model whose "encoders" return fixed features and
whose head is the release's ``ConcatFusion``; its per-sample contributions are read from the file
it saves. Its re-sampled dataset is built from a file list written in a temporary folder. Run with
``MMBENCH_REFERENCE_DIR``; see ``docs/methods/sample.md``.
"""

from __future__ import annotations

import types
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmbench.data.types import MultimodalData
from mmbench.methods.base import TrainState
from mmbench.methods.sample import Sample, sample_copies
from mmbench.models.fusion import ConcatFusion
from mmbench.models.multimodal import MultimodalModel
from tests.reference import _Stub, load_module

REPO = "Valuate-and-Enhance-Multimodal-Cooperation"
N, D, C = 300, 6, 4


def _passthrough_tqdm():
    module = types.ModuleType("tqdm")
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    return module


class _Features(nn.Identity):
    out_dim = D


def test_valuation_and_copies_equal_the_release(tmp_path, monkeypatch):
    stubs = {name: _Stub(name) for name in ("torch.utils.tensorboard", "datasets.dataloader", "models.models")}
    stubs["tqdm"] = _passthrough_tqdm()
    official = load_module(REPO, "sample_level.py", stubs, root="code")
    models = load_module(REPO, "models/models.py", root="code")
    loader = load_module(REPO, "datasets/dataloader.py", ("h5py", "PIL", "torchvision"), root="code")

    gen = torch.Generator().manual_seed(0)
    audio, visual = torch.randn(N, D, generator=gen), torch.randn(N, D, generator=gen)
    labels = torch.randint(C, (N,), generator=gen)
    head = models.ConcatFusion(input_dim=2 * D, output_dim=C)

    class Release(nn.Module):  # the release's AVClassifier with the encoders' outputs given
        def __init__(self):
            super().__init__()
            self.fusion_module = head

        @property
        def module(self):  # the release calls exec_drop through DataParallel's .module
            return self

        def forward(self, spec, image):
            return spec, image, self.fusion_module(torch.cat((spec, image), 1))

        exec_drop = models.AVClassifier.exec_drop

    args = SimpleNamespace(n_classes=C, log_path=str(tmp_path), warmup=5)
    data = DataLoader(TensorDataset(visual, audio, labels, torch.arange(N)), batch_size=64)
    cona, conv, _ = official.execute_modulation(args, Release(), "cpu", data, "run", 0)
    saved = np.load(tmp_path / "run" / "contribution" / "0.npy", allow_pickle=True).item()
    contribution = torch.tensor([saved[i] for i in range(N)])

    # mmbench, same features and head
    fusion = ConcatFusion(["audio", "visual"], D, C)
    fusion.fc.load_state_dict(head.fc_out.state_dict())
    model = MultimodalModel({"audio": _Features(), "visual": _Features()}, fusion)
    method = Sample(Sample.Params(warmup=1))
    state = TrainState(epoch=0, model=model, batch_size=16,
                       train=MultimodalData({"audio": audio, "visual": visual}, labels, None))
    method.on_epoch_end(state)
    assert abs(state.epoch_logs["contribution_audio"] - cona) < 1e-6
    assert abs(state.epoch_logs["contribution_visual"] - conv) < 1e-6
    assert torch.equal(method.copies, sample_copies(contribution))
    assert len(set(contribution.flatten().tolist())) >= 4  # the features give varied contributions

    # the release's re-sampled dataset: copies with drop 2 (visual zeroed) train audio, drop 1 visual
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ks_audio" / "train").mkdir(parents=True)
    (tmp_path / "ks_audio" / "train_1fps_path.txt").write_text("".join(f"x/s{i} {int(labels[i])}\n" for i in range(N)))
    for i in range(N):
        (tmp_path / "ks_audio" / "train" / f"s{i}.npy").touch()
    dataset = loader.AV_KS_Dataset_sample_level(mode="train", contribution=saved)
    names, drops = dataset.data[N:], dataset.drop[N:]
    counts = torch.zeros(N, 2, dtype=torch.long)
    for name, drop in zip(names, drops):
        counts[int(name[1:]), 0 if drop == 2 else 1] += 1
    assert torch.equal(method.copies, counts)
    assert counts.sum() > 0
