"""CML mechanism: confidence may not rise when a modality is removed; the removal is a masked forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.methods.base import TrainState
from mmbench.methods.cml import confidence_penalty
from mmbench.run import train_run
from tests.conftest import tiny_method


def _setup(data_dir, dataset="tiny", **params):
    method, model, batch, _ = tiny_method("cml", data_dir, dataset, **params)
    return batch, method, model


def test_penalty_follows_the_release_cases():
    labels = torch.tensor([0, 0, 0, 0])
    # confidences of version k (full) and k+1 (partial) and whether each predicts class 0
    full = torch.log(torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.3, 0.7], [0.8, 0.2]]))
    part = torch.log(torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.7, 0.3]]))
    # sample 0: full right, partial more confident: 0.9 - 0.6; sample 1: both wrong, 0.9 - 0.7;
    # sample 2: full wrong, partial right: nothing; sample 3: partial less confident: nothing
    assert confidence_penalty(full, part, labels, 0.0, "release").item() == pytest.approx(0.3 + 0.2)
    assert confidence_penalty(full, part, labels, 0.05, "release").item() == pytest.approx(0.25 + 0.15)
    # BalanceBenchmark: hinge on the batch sum of differences, 0.3 + 0.2 - 0.1 - 0.1
    assert confidence_penalty(full, part, labels, 0.0, "balancemm").item() == pytest.approx(0.3)


def test_both_wrong_term_reaches_only_the_partial_prediction():
    labels = torch.tensor([0])
    full = torch.tensor([[0.0, 1.0]], requires_grad=True)
    part = torch.tensor([[0.0, 2.0]], requires_grad=True)
    confidence_penalty(full, part, labels, 0.0, "release").backward()
    assert full.grad.abs().max() == 0 and part.grad.abs().max() > 0


@pytest.mark.parametrize("dataset", ["tiny", "tiny3"])
def test_loss_is_mean_ce_over_nested_masked_versions_plus_penalty(data_dir, dataset):
    batch, method, model = _setup(data_dir, dataset, variant="balancemm", lam=0.5)
    mods = batch.modalities
    method.order = list(reversed(range(len(mods))))  # remove the last modality first, then the next
    out = model(batch)
    loss, logs = method.loss(model, batch, out, TrainState())
    versions = [model(batch, mask=[mods[j] for j in method.order[:k]]).logits for k in range(len(mods))]
    ce = sum(F.cross_entropy(z, batch.labels) for z in versions) / len(mods)
    pen = sum(F.relu((F.softmax(b, 1).max(1)[0] - F.softmax(a, 1).max(1)[0]).sum())
              for a, b in zip(versions, versions[1:]))
    assert logs["confidence_penalty"] == pytest.approx(pen.item(), rel=1e-5)
    assert loss.item() == pytest.approx((ce + 0.5 * pen).item(), rel=1e-5)


def test_release_removes_modalities_in_a_random_order_per_sample(data_dir):
    batch, method, model = _setup(data_dir, lam=0.0)
    out = model(batch)
    loss, _ = method.loss(model, batch, out, TrainState(generator=torch.Generator().manual_seed(3)))
    removed = torch.rand(len(batch), 2, generator=torch.Generator().manual_seed(3)).argmin(1)  # first in each order
    assert 0 < removed.sum() < len(batch)  # both modalities are removed, for different samples
    z = torch.stack([F.cross_entropy(model(batch, mask=[m]).logits, batch.labels, reduction="none")
                     for m in batch.modalities], 1)
    expected = (F.cross_entropy(out.logits, batch.labels) + z.gather(1, removed[:, None]).mean()) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_training_runs_and_logs_the_penalty(make_cfg):
    folder, _ = train_run(make_cfg("cml", epochs=2))
    metrics = folder.read_metrics()
    assert "confidence_penalty" in metrics.columns and (metrics["confidence_penalty"] >= 0).all()


def test_balancemm_variant_equals_balancebenchmarks_conf_loss():
    """BalanceBenchmark's ``conf_loss`` (``balancemm/trainer/CML_trainer.py``), executed from the checkout."""
    import ast

    from tests.reference import reference_dir

    source = (reference_dir("BalanceBenchmark") / "balancemm/trainer/CML_trainer.py").read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "conf_loss")
    scope = {"torch": torch}
    exec(compile(ast.Module([node], []), "CML_trainer.py", "exec"), scope)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        full, part = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randn(16, 6, generator=g, dtype=torch.float64)
        labels = torch.randint(6, (16,), generator=g)
        (c, p), (cx, px) = (F.softmax(z, 1).max(1) for z in (full, part))
        theirs, _ = scope["conf_loss"](c, p, cx, px, labels)
        ours = confidence_penalty(full, part, labels, 0.0, "balancemm")
        assert float(ours) == pytest.approx(float(theirs), abs=1e-12)
