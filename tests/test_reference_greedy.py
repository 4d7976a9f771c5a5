"""Greedy against the official release (nyukat/greedy_multimodal_learning): the MMTM module equals
``MMTM_mitigate`` (``src/balanced_mmtm.py``) on identical weights and inputs, and the conditional learning
speed, re-balancing flags and caring branch equal ``Bias_Mitigation_Strong`` (``src/callbacks.py``) over
24 training steps reading the same parameters, float64 (branch 1's running mean as the release computes it
with ``running_mean=release``).

The release's files import gin and its own utilities, and ``MMTM_mitigate`` puts its running means on a CUDA
device; the tests execute the source of the two classes with the device replaced by the CPU and
``Callback`` by ``object``. Run with ``MMBENCH_REFERENCE_DIR``; see ``docs/methods/greedy.md``.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch
from torch import nn

from mmbench.methods.base import TrainState
from mmbench.methods.greedy import MMTM
from mmbench.models.blocks import pooled
from tests.conftest import tiny_method
from tests.reference import reference_dir

REPO = "greedy_multimodal_learning"


def _source(path: str, start: str, end: str | None, **replace: str) -> dict:
    text = (reference_dir(REPO) / path).read_text()
    source = text[text.index(start):text.index(end) if end else None]
    for old, new in replace.items():
        source = source.replace(old, new)
    namespace = {"torch": torch, "nn": nn, "np": np, "Callback": object}
    exec(compile(source, path, "exec"), namespace)
    return namespace


def official_mmtm():
    return _source("src/balanced_mmtm.py", "class MMTM_mitigate", "def get_mmtm_outputs",
                   **{'"cuda:{}".format(device)': '"cpu"'})["MMTM_mitigate"]


def official_callback():
    return _source("src/callbacks.py", "class Bias_Mitigation_Strong", "@gin.configurable\nclass Bias_Mitigation_Random",
                   )["Bias_Mitigation_Strong"]


def _copy(ours: MMTM, theirs) -> None:
    with torch.no_grad():
        for mine, other in ((ours.squeeze, theirs.fc_squeeze), (ours.excite[0], theirs.fc_visual),
                            (ours.excite[1], theirs.fc_skeleton)):
            other.weight.copy_(mine.weight)
            other.bias.copy_(mine.bias)


def _ours(mmtm: MMTM, x, caring=None):
    scales = mmtm([pooled(v) if v is not None else None for v in x], caring)
    return [None if s is None else v * s[:, :, None, None] for v, s in zip(x, scales)]


def test_mmtm_equals_mmtm_mitigate():
    torch.manual_seed(0)
    ours = MMTM((16, 16), 4).double()
    theirs = official_mmtm()(16, 16, 4).double()
    _copy(ours, theirs)
    for step in range(6):
        x = [torch.randn(8, 16, 3, 3, dtype=torch.float64) for _ in range(2)]
        caring = 0 if step >= 4 else None  # four regular steps, then re-balancing for branch 0
        expected = theirs(*x, curation_mode=caring is not None, caring_modality=caring)[:2]
        got = _ours(ours, x, caring)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.avg_scale0, theirs.running_avg_weight_visual, rtol=0, atol=1e-12)
    # branch 1's running mean: the release averages branch 0's scales (a typo), mmbench branch 1's own
    assert not torch.allclose(ours.avg_scale1, theirs.running_avg_weight_skeleton)


def test_running_mean_release_equals_mmtm_mitigate_when_rebalancing_branch_1():
    torch.manual_seed(2)
    ours = MMTM((16, 16), 4, release_mean=True).double()
    theirs = official_mmtm()(16, 16, 4).double()
    _copy(ours, theirs)
    for step in range(6):
        x = [torch.randn(8, 16, 3, 3, dtype=torch.float64) for _ in range(2)]
        caring = 1 if step >= 3 else None
        expected = theirs(*x, curation_mode=caring is not None, caring_modality=caring)[:2]
        for e, g in zip(expected, _ours(ours, x, caring)):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


def test_a_masked_branch_reads_its_mean_squeeze_as_turnoff_cross_modal_flow():
    torch.manual_seed(1)
    ours = MMTM((16, 16), 4).double()
    theirs = official_mmtm()(16, 16, 4).double()
    _copy(ours, theirs)
    ours.avg_squeeze1.copy_(torch.randn(16, dtype=torch.float64))
    visual = torch.randn(8, 16, 3, 3, dtype=torch.float64)
    average = [torch.zeros(16, dtype=torch.float64), ours.avg_squeeze1.clone()]
    expected = theirs(visual, torch.randn(8, 16, 3, 3, dtype=torch.float64), turnoff_cross_modal_flow=True,
                      average_squeezemaps=average)[0]
    torch.testing.assert_close(_ours(ours, [visual, None])[0], expected, rtol=0, atol=1e-12)


def test_speed_and_rebalancing_equal_bias_mitigation_strong_over_24_steps(data_dir):
    method, model, batch, _ = tiny_method("greedy", data_dir, n=32)
    model.double()
    batch = dataclasses.replace(batch, inputs={m: x.double() for m, x in batch.inputs.items()})
    # the release's names: branches net_view_0 / net_view_1 (encoder and head), mmtm{2,3,4} with
    # fc_squeeze (shared), fc_visual (branch 0) and fc_skeleton (branch 1): the same parameter objects
    named = nn.Module()
    for i, m in enumerate(model.modalities):
        named.add_module(f"net_view_{i}", nn.ModuleDict({"encoder": model.encoders[m], "fc": model.fusion.heads[m]}))
    for j, mmtm in enumerate(model.mmtms):
        named.add_module(f"mmtm{j + 2}", nn.ModuleDict({"fc_squeeze": mmtm.squeeze, "fc_visual": mmtm.excite[0],
                                                        "fc_skeleton": mmtm.excite[1]}))
    assert {id(p) for p in named.parameters()} == {id(p) for p in model.parameters()}
    callback = official_callback()(epsilon=0.01, curation_windowsize=5, branchnames=["net_view_0", "net_view_1"],
                                   starting_epoch=2, MMTMnames=["visual", "skeleton"])
    callback.model, callback.model_pytoune = named, types.SimpleNamespace()
    callback.on_train_begin({})
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rebalanced = set()
    for step in range(24):
        state = TrainState(epoch=step // 6)
        if step % 6 == 0:
            callback.on_epoch_begin(state.epoch, {})
        opt.zero_grad(set_to_none=True)
        out = method.forward(model, batch, state)
        loss, _ = method.loss(model, batch, out, state)
        loss.backward()
        computed = not method.curation
        logs = method.after_backward(model, batch, out, state)
        callback.on_backward_end(step)
        assert method.curation == callback.model_pytoune.curation_mode, step
        if method.curation:
            assert method.caring == callback.model_pytoune.caring_modality, step
            rebalanced.add(method.caring)
        if computed:
            assert logs["d_speed"] == pytest.approx(callback.d_BDR, rel=1e-9, abs=1e-12), step
        opt.step()
    assert rebalanced  # the comparison covered re-balancing steps
