"""MMCosine mechanism: logits are scaled cosines of L2-normalised features and per-modality weight blocks."""

from __future__ import annotations

import pytest
import torch

from mmbench.config import MethodConfig
from mmbench.errors import MMBenchError
from mmbench.methods.base import TrainState, build_method
from mmbench.run import train_run
from tests.conftest import tiny_method


def _setup(data_dir, dataset="tiny", **params):
    method, model, batch, _ = tiny_method("mmcosine", data_dir, dataset, **params)
    return batch, method, model


@pytest.mark.parametrize("dataset", ["tiny", "tiny3"])
def test_logits_are_scaled_cosines_summed_over_modalities(data_dir, dataset):
    batch, method, model = _setup(data_dir, dataset, scaling=7.0)
    out = method.forward(model, batch, TrainState())
    weight, d = model.fusion.fc.weight, 8
    for i, m in enumerate(batch.modalities):  # computed here, entry by entry, from the definition of a cosine
        f, w = out.features[m], weight[:, i * d:(i + 1) * d]
        expected = 7.0 * (f @ w.T) / (f.norm(dim=1, keepdim=True) * w.norm(dim=1))
        torch.testing.assert_close(out.unimodal_logits[m], expected)
        assert out.unimodal_logits[m].abs().max() <= 7.0 + 1e-5
    torch.testing.assert_close(out.logits, sum(out.unimodal_logits.values()))


def test_loss_ignores_feature_and_weight_norms_and_leaves_the_bias_untrained(data_dir):
    batch, method, model = _setup(data_dir)
    out = method.forward(model, batch, TrainState())
    loss, _ = method.loss(model, batch, out, TrainState())
    loss.backward()
    assert model.fusion.fc.bias.grad is None or model.fusion.fc.bias.grad.abs().max() == 0
    assert model.fusion.fc.weight.grad.abs().max() > 0
    # rescaling one modality's weight block changes the plain linear head, not the cosine loss
    with torch.no_grad():
        model.fusion.fc.weight[:, :8] *= 5.0
    again, _ = method.loss(model, batch, method.forward(model, batch, TrainState()), TrainState())
    assert again.item() == pytest.approx(loss.item(), rel=1e-5)


def test_prediction_linear_is_the_heads_output_cosine_the_training_logits(data_dir):
    batch, linear, model = _setup(data_dir)
    cosine = build_method(MethodConfig("mmcosine", {"prediction": "cosine"}))
    model.eval()
    plain, lin, cos = model(batch), linear.predict(model, batch), cosine.predict(model, batch)
    torch.testing.assert_close(lin.logits, plain.logits)
    torch.testing.assert_close(cos.logits, linear.forward(model, batch, TrainState()).logits)
    assert (lin.logits - cos.logits).abs().max() > 1e-3
    for m in batch.modalities:  # per-modality predictions are the cosines in both
        torch.testing.assert_close(lin.unimodal_logits[m], cos.unimodal_logits[m])
        assert not torch.allclose(lin.unimodal_logits[m], plain.unimodal_logits[m])


def test_training_moves_towards_the_labels(make_cfg):
    folder, _ = train_run(make_cfg("mmcosine", epochs=3))
    metrics = folder.read_metrics()
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]


@pytest.mark.parametrize("fusion", ["sum", "gated"])
def test_other_fusions_are_a_clear_error(make_cfg, fusion):
    with pytest.raises(MMBenchError, match="needs model.fusion=concat"):
        train_run(make_cfg("mmcosine", sets=[f"model.fusion={fusion}"]))
