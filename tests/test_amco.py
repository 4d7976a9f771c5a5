"""AMCo mechanism: the dependent (dominant) modality's class logits are masked at the rate
int(sin(pi/2 min(eps, l_t) / eps) C) / C, with l_t growing by 0.1 * epoch per batch; a modality is
dependent when it held most of the joint softmax mass the step before; the loss is the fused CE plus
the masked unimodal CEs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.errors import MMBenchError
from mmbench.methods.amco import class_mask, dependent_modalities, mask_level
from mmbench.methods.base import TrainState
from mmbench.run import train_run
from mmbench.testing import assert_same_run
from tests.conftest import tiny_method
from tests.test_resume import FAST, Stop, stop_after


def test_mask_level_is_a_sine_ramp_reaching_one_at_eps():
    assert mask_level(0.0, 0.3) == 0.0
    assert mask_level(0.1, 0.3) == pytest.approx(math.sin(math.pi / 6))  # = 0.5
    assert mask_level(0.3, 0.3) == pytest.approx(1.0) and mask_level(5.0, 0.3) == pytest.approx(1.0)


def test_class_mask_zeroes_int_p_c_random_positions():
    gen = torch.Generator().manual_seed(0)
    masks = torch.stack([class_mask(0.55, 10, gen) for _ in range(400)])
    assert ((masks == 0).sum(1) == 5).all() and set(masks.unique().tolist()) == {0.0, 1.0}
    assert (masks == 0).float().mean(0).min() > 0.35  # every position is masked about half the time


def test_dependent_modality_holds_more_than_sigma_of_the_joint_softmax():
    strong = torch.tensor([[6.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    weak = torch.zeros(2, 3)
    assert dependent_modalities({"a": strong, "b": weak}, 0.5) == {"a": True, "b": False}
    assert dependent_modalities({"a": weak, "b": weak}, 0.5) == {"a": False, "b": False}
    assert dependent_modalities({"a": strong, "b": weak}, 0.99) == {"a": False, "b": False}


def _dominated(data_dir):
    method, model, batch, _ = tiny_method("amco", data_dir, n=64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):  # make "vector" dominant
        opt.zero_grad()
        F.cross_entropy(model(batch).unimodal_logits["vector"], batch.labels).backward()
        opt.step()
    return method, model, batch


def _measured_rates(method, model, batch, epoch, steps):
    """Per step: the share of the class positions zeroed in each modality's unimodal logits, the logs,
    and whether each modality held more than half of the joint softmax mass (the test's own count)."""
    state = TrainState(epoch=epoch, generator=torch.Generator().manual_seed(0))
    method.on_epoch_start(state)
    plain = model(batch).unimodal_logits
    rows = []
    for _ in range(steps):
        out = method.forward(model, batch, state)
        _, logs = method.loss(model, batch, out, state)
        zeroed = {m: ((z == 0).all(0) & (plain[m] != 0).any(0)).float().mean().item()
                  for m, z in out.unimodal_logits.items()}
        probs = F.softmax(torch.cat([out.unimodal_logits["vector"], out.unimodal_logits["image"]], 1), 1)
        vector_mass = probs[:, :plain["vector"].shape[1]].sum(1).mean().item()
        rows.append((zeroed, logs, {"vector": vector_mass > 0.5, "image": 1 - vector_mass > 0.5}))
    return rows


def test_dominant_modality_is_masked_on_the_schedule(data_dir):
    method, model, batch = _dominated(data_dir)
    c = model.star.in_features
    for epoch in (0, 1, 2):
        rows = _measured_rates(method, model, batch, epoch, steps=6)
        # l_t = 0.1 * epoch * k before batch k of an epoch
        expected = [int(math.sin(math.pi / 2 * min(0.3, 0.1 * epoch * k) / 0.3) * c) / c for k in range(6)]
        assert [logs["mask_rate"] for _, logs, _ in rows] == pytest.approx(expected)
        # a modality is masked at that rate exactly when it held most of the softmax mass the step before
        # (none at an epoch's first step)
        for m in ("vector", "image"):
            masked = [False] + [dominant[m] for _, _, dominant in rows[:-1]]
            assert [logs[f"masked_{m}"] for _, logs, _ in rows] == masked
            assert [z[m] for z, _, _ in rows] == pytest.approx([e * k for e, k in zip(expected, masked)])
        if epoch == 0:  # nothing masked yet: the dominant modality is the dependent one throughout
            assert all(d == {"vector": True, "image": False} for _, _, d in rows)
        else:  # later in the epoch whole rows of logits go: a fully masked step
            assert max(z["vector"] for z, _, _ in rows) == 1.0


def test_loss_is_fused_ce_plus_masked_unimodal_ces_and_the_fused_logits_see_the_mask(data_dir):
    method, model, batch = _dominated(data_dir)
    state = TrainState(epoch=3, generator=torch.Generator().manual_seed(0))
    method.on_epoch_start(state)
    for _ in range(4):
        out = method.forward(model, batch, state)
        loss, _ = method.loss(model, batch, out, state)
    assert (out.unimodal_logits["vector"] == 0).all()  # fully masked by now
    expected = model.star(out.unimodal_logits["image"])
    torch.testing.assert_close(out.logits, expected)
    ces = [F.cross_entropy(z, batch.labels) for z in (expected, out.unimodal_logits["vector"],
                                                      out.unimodal_logits["image"])]
    torch.testing.assert_close(loss, sum(ces))
    # outside the modulation window: plain fused CE, no mask
    late = TrainState(epoch=81, generator=torch.Generator().manual_seed(0))
    out = method.forward(model, batch, late)
    torch.testing.assert_close(method.loss(model, batch, out, late)[0], F.cross_entropy(model(batch).logits,
                                                                                        batch.labels))
    torch.testing.assert_close(method.predict(model, batch).logits, model(batch).logits)


@pytest.mark.parametrize("setting,message", [("method.sigma=1.5", "sigma"), ("method.eps=0", "eps"),
                                             ("method.ramp=-1", "ramp"),
                                             ("model.fusion=gated", "needs a decomposable fusion")])
def test_bad_options_are_clear_errors(make_cfg, setting, message):
    with pytest.raises(MMBenchError, match=message):
        train_run(make_cfg("amco", sets=[setting]))


def test_training_with_masks_resumes_identically(make_cfg, tmp_path):
    full, _ = train_run(make_cfg("amco", epochs=3, sets=FAST))
    assert full.read_metrics()["mask_rate"].iloc[-1] > 0.5
    cfg = make_cfg("amco", epochs=3, sets=FAST)
    cfg.output.results_dir = str(tmp_path / "resumed")
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(1))
    resumed, _ = train_run(cfg, resume=True)
    assert_same_run(full, resumed)
