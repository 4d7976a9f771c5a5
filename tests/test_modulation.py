"""Shared gradient-modulation mechanics."""

import pytest
import torch

from mmbench.measures import unimodal_scores
from mmbench.methods.modulation import scale_grad


def test_scale_grad_is_identity_forward_and_scales_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = scale_grad(x, 2.5)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, 2.5 * torch.arange(3.0).expand(4, 3))


def test_unimodal_scores_are_batch_sums_of_true_class_probabilities():
    logits = {"a": torch.tensor([[0.0, 0.0], [2.0, 0.0]])}
    labels = torch.tensor([0, 1])
    p = 1 / (1 + torch.exp(torch.tensor(2.0)))  # softmax of the smaller logit
    assert unimodal_scores(logits, labels)["a"].item() == pytest.approx(0.5 + p.item())


def test_feature_hook_reaches_the_encoder(data_dir):
    from mmbench.config import ModelConfig
    from mmbench.data.store import load_split
    from mmbench.models.multimodal import ModelSpec, build_model

    batch = load_split("tiny", "train", data_dir).index(slice(0, 8))
    model = build_model(ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=8, feature_dim=4)))
    grads = []
    for factor in (1.0, 3.0):
        model.zero_grad()
        out = model(batch, feature_hook=lambda m, f, k=factor: scale_grad(f, k) if m == "vector" else f)
        out.logits.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for name, g in grads[0].items():
        expected = 3.0 * g if name.startswith("encoders.vector") else g
        torch.testing.assert_close(grads[1][name], expected)
