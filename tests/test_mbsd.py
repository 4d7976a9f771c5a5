"""MBSD: unimodal CEs plus distillation terms weighted by the modalities' true-class confidence gap."""

from __future__ import annotations

import ast
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmbench.errors import MMBenchError
from mmbench.methods.base import TrainState
from mmbench.methods.mbsd import MBSD, distillation_terms
from mmbench.models.multimodal import ModelOutput
from mmbench.run import train_run
from tests.conftest import tiny_method


def _logits(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def test_terms_weight_each_sample_by_the_confidence_gap_where_a_modality_is_right():
    labels = torch.tensor([0, 0, 0])
    a = _logits([[0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])  # right, wrong, wrong
    b = _logits([[0.4, 0.6], [0.6, 0.4], [0.3, 0.7]])  # wrong, right, wrong: sample 2 has no right modality
    kl, rs = distillation_terms([a, b], labels)
    w = torch.tensor([0.3, 0.4, 0.0], dtype=torch.float64)  # |p_a[y] - p_b[y]|, 0 where both are wrong
    ps, pw = torch.tensor([0.7, 0.6, 0.4], dtype=torch.float64), torch.tensor([0.4, 0.2, 0.3], dtype=torch.float64)
    assert kl.item() == pytest.approx((w * pw * (pw.log() - ps)).mean().item(), rel=1e-12)
    assert rs.item() == pytest.approx((w * (a - b).pow(2).mean(1)).mean().item(), rel=1e-12)


def test_response_term_pulls_the_modalities_predictions_together():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (64,), generator=g)
    a = (torch.randn(64, 3, generator=g, dtype=torch.float64) * 2).requires_grad_()
    b = (torch.randn(64, 3, generator=g, dtype=torch.float64) * 2).requires_grad_()
    gap = (a - b).pow(2).sum().item()
    opt = torch.optim.SGD([a, b], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        distillation_terms([a, b], labels)[1].backward()
        opt.step()
    print(f"sum of squared logit differences {gap:.1f} -> {(a - b).pow(2).sum().item():.1f}")
    assert (a - b).pow(2).sum().item() < 0.9 * gap


@pytest.mark.parametrize("dataset", ["tiny", "tiny3"])
def test_loss_adds_unimodal_ces_and_terms_inside_the_window_only(data_dir, dataset):
    method, model, batch, _ = tiny_method("mbsd", data_dir, dataset, modulation_starts=1, modulation_ends=2)
    out = model(batch)
    fused = F.cross_entropy(out.logits, batch.labels)
    uni = list(out.unimodal_logits.values())
    kl, rs = distillation_terms(uni, batch.labels)
    expected = fused + sum(F.cross_entropy(z, batch.labels) for z in uni) + kl + rs
    for epoch, value in [(0, fused), (1, expected), (2, expected), (3, fused)]:
        loss, _ = method.loss(model, batch, out, TrainState(epoch=epoch))
        assert loss.item() == pytest.approx(value.item(), rel=1e-6)
    assert kl.item() != 0 and rs.item() > 0


def test_training_logs_both_terms(make_cfg):
    folder, _ = train_run(make_cfg("mbsd", epochs=2))
    metrics = folder.read_metrics()
    assert (metrics["loss_rs"] > 0).all() and metrics["loss_kl"].notna().all()


@pytest.mark.parametrize("bad", ["method.modulation_starts=-1", "method.alpha=1"])
def test_bad_options_are_user_errors(make_cfg, bad):
    with pytest.raises(MMBenchError):
        train_run(make_cfg("mbsd", sets=[bad]))


class _FakeModel:
    """What BalanceBenchmark's ``training_step`` reads from its model, holding given logits."""

    def __init__(self, fused, unimodal):
        self.modalitys = list(unimodal)
        self.encoder_result = {**{m: None for m in unimodal}, "output": fused}
        self.unimodal_result = dict(unimodal)
        self.device = "cpu"

    def __call__(self, batch):
        pass

    def Unimodality_Calculate(self):  # noqa: N802 - BalanceBenchmark's name
        pass


@pytest.mark.parametrize("modalities", [2, 3])
def test_loss_and_gradients_equal_balancebenchmarks_training_step(modalities):
    """``MBSDTrainer.training_step`` (``balancemm/trainer/MBSD_trainer.py`` @ 4c1482f), executed from the checkout
    on identical logits, in float32: the release builds its weights in float32 and cannot run in float64."""
    from tests.reference import reference_dir

    path = reference_dir("BalanceBenchmark") / "balancemm/trainer/MBSD_trainer.py"
    cls = next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef) and n.name == "MBSDTrainer")
    node = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "training_step")
    scope = {"torch": torch, "nn": nn, "F": F}
    exec(compile(ast.Module([node], []), str(path), "exec"), scope)
    trainer = types.SimpleNamespace(modulation_starts=0, modulation_ends=80, current_epoch=0)
    method = MBSD()
    g = torch.Generator().manual_seed(1)
    names = ["audio", "visual", "text"][:modalities]
    worst = 0.0
    for _ in range(10):
        labels = torch.randint(5, (32,), generator=g)
        fused = torch.randn(32, 5, generator=g) * 2
        uni = {m: torch.randn(32, 5, generator=g) * 2 for m in names}
        theirs = {k: v.clone().requires_grad_() for k, v in {"output": fused, **uni}.items()}
        ours = {k: v.clone().requires_grad_() for k, v in {"output": fused, **uni}.items()}
        their_loss = scope["training_step"](trainer, _FakeModel(theirs["output"], {m: theirs[m] for m in names}),
                                            {"label": labels}, 0)
        out = ModelOutput(ours["output"], {}, {m: ours[m] for m in names})
        loss, _ = method.loss(None, types.SimpleNamespace(labels=labels), out, TrainState())
        loss.backward()
        assert loss.item() == pytest.approx(their_loss.item(), rel=1e-5)
        for k in ours:
            torch.testing.assert_close(ours[k].grad, theirs[k].grad, rtol=1e-5, atol=1e-7)
            worst = max(worst, (ours[k].grad - theirs[k].grad).abs().max().item(), abs(loss.item() - their_loss.item()))
    print(f"{modalities} modalities: largest difference {worst:.1e}")
