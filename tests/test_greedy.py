"""Greedy mechanism: the conditional learning speed d = log10(M_bypass_0 / M_main_0) - log10(M_bypass_1 / M_main_1)
accumulates |g|^2 / |w|^2 per parameter group; |d| > epsilon starts `window` re-balancing steps for the branch
that learns slower from its own input (the larger bypass-to-main ratio); in those steps that branch's MMTM scales
are its running means, so it receives nothing from the other modality and its excitation layers get no gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.errors import MMBenchError
from mmbench.methods.base import TrainState
from mmbench.run import train_run
from tests.conftest import tiny_method


def _setup(data_dir, **params):
    method, model, batch, _ = tiny_method("greedy", data_dir, n=32, **params)
    return method, model, batch


def _backward(method, model, batch, state):
    model.zero_grad(set_to_none=True)
    out = method.forward(model, batch, state)
    loss, logs = method.loss(model, batch, out, state)
    loss.backward()
    return out, logs


def _ratios_by_name(model, heads=True):
    """The test's own |g|^2 / |w|^2 per branch, grouping parameters by name as the release's callback does."""
    g = {k: [0.0, 0.0] for k in ("bypass", "main")}
    w = {k: [0.0, 0.0] for k in ("bypass", "main")}
    for name, p in model.named_parameters():
        gn = 0.0 if p.grad is None else p.grad.double().pow(2).sum().item()
        wn = p.double().pow(2).sum().item()
        if name.startswith("mmtms."):
            branches = [int(name.split(".")[3])] if ".excite." in name else [0, 1]
            kind = "bypass"
        else:
            branches = [i for i, m in enumerate(model.encoders) if name.startswith((f"encoders.{m}.",) + (
                (f"fusion.heads.{m}.",) if heads else ()))]
            kind = "main"
        for i in branches:
            g[kind][i] += gn
            w[kind][i] += wn
    return {k: [g[k][i] / w[k][i] for i in range(2)] for k in g}


@pytest.mark.parametrize("slow", [0, 1])
def test_rebalancing_targets_the_branch_that_learns_slower_from_its_own_input(data_dir, slow):
    method, model, batch = _setup(data_dir, starting_epoch=0)
    state = TrainState(epoch=0)
    out, _ = _backward(method, model, batch, state)
    for name, p in model.named_parameters():  # branch `slow` learns 100x slower from its own input
        if name.startswith((f"encoders.{model.modalities[slow]}.", f"fusion.heads.{model.modalities[slow]}.")):
            p.grad.mul_(0.01)
    r = _ratios_by_name(model)
    logs = method.after_backward(model, batch, out, state)
    expected = math.log10(r["bypass"][0] / r["main"][0]) - math.log10(r["bypass"][1] / r["main"][1])
    assert logs["d_speed"] == pytest.approx(expected, rel=1e-4)
    assert (expected > 0) == (slow == 0) and abs(expected) > 3  # 100x in |g|^2: 4 decades
    assert method.curation and method.caring == slow


def test_rebalancing_step_cuts_the_cross_modal_flow_into_the_caring_branch(data_dir):
    method, model, batch = _setup(data_dir)
    state = TrainState(epoch=0)
    other = dict(batch.inputs)
    other["vector"] = torch.randn_like(other["vector"])  # change only the other modality's input
    model.train()
    normal = [model(x).features["image"] for x in (batch.inputs, other)]
    assert not torch.allclose(normal[0], normal[1], atol=1e-4)  # MMTM carries vector information into image
    method.curation, method.caring = True, 1  # re-balancing for "image"
    for mmtm in model.mmtms:  # a long-run mean: this batch's own share in it (1 / (steps + 1)) is negligible
        mmtm.steps.fill_(10**9)
    with torch.no_grad():
        caring = [method.forward(model, x, state).features["image"] for x in (batch.inputs, other)]
    torch.testing.assert_close(caring[0], caring[1])  # image now sees only its own input
    model.train()
    _backward(method, model, batch, state)
    for mmtm in model.mmtms:
        assert all(p.grad is None or not p.grad.any() for p in mmtm.excite[1].parameters())
        assert all(p.grad is not None and p.grad.any() for p in mmtm.excite[0].parameters())
        assert mmtm.squeeze.weight.grad.any()  # the other branch still learns through the MMTM


def test_rebalancing_lasts_window_steps_and_the_speed_is_frozen_meanwhile(data_dir):
    method, model, batch = _setup(data_dir, starting_epoch=0, epsilon=0.0, window=3)
    state = TrainState(epoch=0)
    flags, sums = [], []
    for _ in range(9):
        out, logs = _backward(method, model, batch, state)
        flags.append(logs["curation"])
        method.after_backward(model, batch, out, state)
        sums.append(list(method.bypass))
    # epsilon 0: every speed update starts re-balancing; each lasts 3 steps
    assert flags == [0, 1, 1, 1, 0, 1, 1, 1, 0]
    assert sums[0] == sums[1] == sums[2] == sums[3] != sums[4] == sums[5]


def test_no_rebalancing_before_the_starting_epoch_but_the_speed_accumulates(data_dir):
    method, model, batch = _setup(data_dir, epsilon=0.0)  # starting_epoch 2 (the release's)
    for epoch in (0, 1):
        state = TrainState(epoch=epoch)
        out, logs = _backward(method, model, batch, state)
        method.after_backward(model, batch, out, state)
        assert logs["curation"] == 0.0 and not method.curation
    assert all(v > 0 for v in method.bypass + method.main)
    state = TrainState(epoch=2)
    out, _ = _backward(method, model, batch, state)
    method.after_backward(model, batch, out, state)
    assert method.curation


def test_loss_release_sums_branch_ces_and_balancemm_is_the_fused_ce(data_dir):
    method, model, batch = _setup(data_dir)
    out = method.forward(model, batch, TrainState())
    loss, _ = method.loss(model, batch, out, TrainState())
    uni = out.unimodal_logits
    torch.testing.assert_close(loss, sum(F.cross_entropy(z, batch.labels) for z in uni.values()))
    torch.testing.assert_close(out.logits, (uni["vector"] + uni["image"]) / 2)  # prediction = mean of the heads
    method, model, batch = _setup(data_dir, variant="balancemm")
    out = method.forward(model, batch, TrainState())
    torch.testing.assert_close(method.loss(model, batch, out, TrainState())[0], F.cross_entropy(out.logits, batch.labels))
    assert model.heads is None and not hasattr(model.fusion, "heads")  # the configured concat head


@pytest.mark.parametrize("setting,message", [
    ("method.variant=paper", "variant must be one of"), ("method.window=0", "window"),
    ("method.epsilon=-1", "epsilon"), ("method.mmtm_blocks=9", "fewer than method.mmtm_blocks=9"),
    ("method.running_mean=release", "running_mean=release needs equal branch widths"),
])
def test_bad_options_are_clear_errors(make_cfg, setting, message):
    with pytest.raises(MMBenchError, match=message):
        train_run(make_cfg("greedy", sets=[setting]))


def test_balancemm_variant_needs_a_decomposable_fusion(make_cfg):
    with pytest.raises(MMBenchError, match="needs a decomposable fusion"):
        train_run(make_cfg("greedy", sets=["method.variant=balancemm", "model.fusion=gated"]))


def test_training_logs_the_speed_and_the_rebalancing_share(make_cfg):
    folder, _ = train_run(make_cfg("greedy", epochs=2, sets=["method.starting_epoch=0", "output.probe=false"]))
    metrics = folder.read_metrics()
    assert {"d_speed", "curation", "caring_vector", "caring_image"} <= set(metrics.columns)
    assert (metrics["curation"] > 0).all()
    torch.testing.assert_close(torch.tensor(metrics["curation"].values),
                               torch.tensor((metrics["caring_vector"] + metrics["caring_image"]).values))
