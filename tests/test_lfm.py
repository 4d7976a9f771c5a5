"""LFM: CE and modality-gap alignment mixed by a fitted or a hypergradient-learnt weight."""

from __future__ import annotations

import ast

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmbench.errors import MMBenchError
from mmbench.methods.base import TrainState
from mmbench.methods.lfm import alignment, fitted_weight
from mmbench.run import train_run
from mmbench.testing import assert_same_run
from tests.conftest import tiny_method
from tests.test_resume import FAST, Stop, stop_after


def _official(repo: str, relpath: str, *names: str) -> dict:
    from tests.reference import reference_dir

    path = reference_dir(repo) / relpath
    nodes = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name in names]
    scope = {"torch": torch, "nn": nn, "F": F, "print": lambda *a, **k: None}
    exec(compile(ast.Module(nodes, []), str(path), "exec"), scope)
    return scope


def test_fitted_schedule_shifts_weight_from_alignment_to_classification():
    a = [fitted_weight(e) for e in range(0, 151, 10)]
    assert a[0] == pytest.approx(0.2046, abs=1e-4) and all(x < y for x, y in zip(a, a[1:]))


def test_alignment_pulls_the_unimodal_predictions_together(data_dir):
    """Training steps on LFM's loss shrink the divergence between the modalities' predictions far more than
    the same steps on the fused cross-entropy alone."""
    results = {}
    for name in ("lfm", "joint"):
        method, model, batch, _ = tiny_method(name, data_dir, n=64)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(30):
            out = model(batch)
            loss, _ = method.loss(model, batch, out, TrainState(epoch=0))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            results[name] = alignment(list(model(batch).unimodal_logits.values())).item()
    print(f"alignment after 30 steps: lfm {results['lfm']:.4f}, joint {results['joint']:.4f}")
    assert results["lfm"] < 0.5 * results["joint"]


@pytest.mark.parametrize("dataset", ["tiny", "tiny3"])
def test_loss_mixes_ce_and_alignment_with_the_epochs_weights(data_dir, dataset):
    method, model, batch, _ = tiny_method("lfm", data_dir, dataset)
    out = model(batch)
    ce, align = F.cross_entropy(out.logits, batch.labels), alignment(list(out.unimodal_logits.values()))
    for epoch in (0, 50):
        a = fitted_weight(epoch)
        loss, logs = method.loss(model, batch, out, TrainState(epoch=epoch))
        assert loss.item() == pytest.approx((2 * (a * ce + (1 - a) * align)).item(), rel=1e-6)
        assert logs["weight_align"] == pytest.approx(1 - a)


def test_learnable_weight_trains_logs_and_resumes_identically(make_cfg, tmp_path):
    sets = [*FAST, "method.weighting=learnable", "method.holdout=0.1", "method.lr_alpha=10"]
    full, _ = train_run(make_cfg("lfm", epochs=3, sets=sets))
    metrics = full.read_metrics()
    assert metrics["alpha_grad"].notna().all() and metrics["weight_align"].between(0.05, 0.95).all()
    assert metrics["weight_align"].nunique() > 1  # the weight moves
    cfg = make_cfg("lfm", epochs=3, sets=sets)
    cfg.output.results_dir = str(tmp_path / "resumed")
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(0))
    resumed, _ = train_run(cfg, resume=True)
    assert_same_run(full, resumed)


@pytest.mark.parametrize("bad", ["method.weighting=paper", "method.align_init=2", "method.holdout=1",
                                 "method.alpha_samples=0"])
def test_bad_options_are_user_errors(make_cfg, bad):
    with pytest.raises(MMBenchError):
        train_run(make_cfg("lfm", sets=[bad]))


def test_fitted_weights_and_alignment_equal_the_release():
    """``getAlpha_Learnable_Fitted`` and ``Alignment`` of NeurIPS24-LFM ``Crema_epoch.py``, executed from the checkout."""
    ns = _official("NeurIPS24-LFM", "Crema_epoch.py", "getAlpha_Learnable_Fitted", "Alignment")
    for epoch in range(200):
        a_cls, a_align = ns["getAlpha_Learnable_Fitted"](epoch)
        assert [fitted_weight(epoch), 1 - fitted_weight(epoch)] == pytest.approx([a_cls, a_align], abs=1e-12)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        p, q = (torch.randn(16, 6, generator=g, dtype=torch.float64) * 3 for _ in range(2))
        assert alignment([p, q]).item() == pytest.approx(ns["Alignment"](p, q).item(), abs=1e-14)


class _BalanceMMModel:
    """What BalanceBenchmark's ``getAlpha_Learnable`` reads from its model, around an mmbench model."""

    def __init__(self, model):
        self.model, self.modalitys = model, list(model.encoders)

    def __call__(self, batch):
        out = self.model({m: batch[m] for m in self.modalitys})
        self.unimodal_result = {**out.unimodal_logits, "output": out.logits}

    def parameters(self):
        return self.model.parameters()


@pytest.mark.parametrize("dataset", ["tiny", "tiny3"])
def test_learnable_update_equals_balancebenchmarks_get_alpha(data_dir, dataset):
    """``getAlpha_Learnable`` (``balancemm/trainer/LFM_trainer.py`` @ 4c1482f), executed from the checkout on the
    same model and batch, float64, at epochs around the learning rate's halvings (20, 40)."""
    ns = _official("BalanceBenchmark", "balancemm/trainer/LFM_trainer.py", "getAlpha_Learnable", "Alignment",
                   "manual_combinations")
    method, model, _, train = tiny_method("lfm", data_dir, dataset, weighting="learnable", align_init=0.05,
                                          lr_alpha=10.0)
    model.double()
    data = train.index(slice(0, 32))
    data = data.with_inputs({m: x.double() for m, x in data.inputs.items()})
    state = TrainState(model=model, holdout=data)
    theirs, lr = {1: 0.05, 0: 0.95}, 10.0
    worst = 0.0
    for epoch in (0, 1, 2, 19, 20, 21, 39, 40, 41, 44):  # the release halves its rate at each call at 20, 40
        torch.manual_seed(epoch)  # the same dropout draws on both sides
        theirs, lr = ns["getAlpha_Learnable"](epoch, {"label": data.labels, **data.inputs}, _BalanceMMModel(model),
                                              theirs, lr)
        torch.manual_seed(epoch)
        state.epoch = epoch
        method.on_epoch_start(state)
        worst = max(worst, abs(method.a_align - theirs[1]))
        assert method.a_align == pytest.approx(theirs[1], abs=1e-12)
    print(f"alignment weight after 10 updates {method.a_align:.6f}, largest difference {worst:.1e}")
    assert method.a_align > 0.051  # the weight moved
