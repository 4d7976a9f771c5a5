"""Shared mechanics of gradient-modulation methods (OGM-GE, AGM, ARL, CAL, AIM, MMPareto).

- :func:`encoder_parameters`: the parameters of one modality's encoder that get modulated;
- :func:`scale_gradients`: ``g <- k * g`` plus optional Gaussian gradient noise, on parameters;
- :func:`scale_grad`: identity forward, gradient times a factor backward, on a tensor
  (e.g. encoder features, through ``MultimodalModel.forward(feature_hook=...)``);
- :func:`subset_logits`: fused logits with only some modalities present, the others zeroed, in eval
  mode with gradients (AGM's padded passes).

What they measure (scores, ratios, coalition values) is in :mod:`mmbench.measures`.
"""

from __future__ import annotations

import torch
from torch import nn

from mmbench.evaluation import eval_mode

PARAM_SCOPES = ("conv", "weights", "all")


def encoder_parameters(model: nn.Module, modality: str, scope: str = "weights") -> list[nn.Parameter]:
    """Parameters of ``model.encoders[modality]`` selected by ``scope``.

    ``conv``: 4-D (convolution) weights only, the literal rule of the OGM-GE release;
    ``weights``: every weight matrix or kernel (``ndim >= 2``: linear and conv, no norms, no biases),
    which is the release's rule carried over to non-convolutional encoders;
    ``all``: every parameter of the encoder.
    """
    if scope not in PARAM_SCOPES:
        raise ValueError(f"scope must be one of {PARAM_SCOPES}, got {scope!r}")
    params = [p for p in model.encoders[modality].parameters() if p.requires_grad]
    if scope == "conv":
        return [p for p in params if p.ndim == 4]
    if scope == "weights":
        return [p for p in params if p.ndim >= 2]
    return params


@torch.no_grad()
def scale_gradients(params: list[nn.Parameter], coeff: float, noise: bool = False,
                    generator: torch.Generator | None = None) -> None:
    """``g <- coeff * g``; with ``noise``, add ``N(0, (std(g) + 1e-8)^2)`` using the unscaled ``g``'s std,
    drawn in the gradient's dtype."""
    for p in params:
        if p.grad is None:
            continue
        std = p.grad.std().item() + 1e-8 if noise and p.grad.numel() > 1 else 1e-8
        p.grad.mul_(coeff)
        if noise:
            eps = torch.randn(p.grad.shape, generator=generator, dtype=p.grad.dtype,  # as the release: the grad's dtype
                              device=generator.device if generator else "cpu")
            p.grad.add_(eps.to(p.grad.device), alpha=std)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(factor)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (factor,) = ctx.saved_tensors
        return grad * factor, None


def scale_grad(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass; multiplies the incoming gradient by ``factor`` in the backward pass."""
    factor = torch.as_tensor(factor, dtype=x.dtype, device=x.device).detach()
    return _ScaleGrad.apply(x, factor)


MUTE_MODES = ("input", "features")


def _zero_input(x: torch.Tensor, spec) -> torch.Tensor:
    """The input the network reads as zero: the training mean for uint8 pixels (see ``Standardize``), else 0."""
    if spec is not None and spec.dtype == "uint8":
        return torch.full(x.shape, spec.mean, dtype=torch.float32, device=x.device)
    return torch.zeros_like(x)


def subset_logits(model: nn.Module, batch, subsets: list[frozenset[str]],
                  mute: str = "input") -> dict[frozenset[str], torch.Tensor]:
    """Fused logits with only each subset's modalities present, **with gradients** but in eval mode
    (norm layers' running statistics, no dropout); the model's mode is restored afterwards.

    ``mute="input"``: the other modalities' inputs are zeroed as the network sees them (uint8 pixels,
    standardised inside the model, get the training mean) and their encoders run on them;
    ``mute="features"``: the model's masking (their features are zero, their encoders do not run).
    """
    if mute not in MUTE_MODES:
        raise ValueError(f"mute must be one of {MUTE_MODES}, got {mute!r}")
    logits = {}
    with eval_mode(model):
        for subset in subsets:
            if mute == "input":
                inputs = {m: x if m in subset else _zero_input(x, batch.meta.modalities.get(m))
                          for m, x in batch.inputs.items()}
                logits[subset] = model(batch.with_inputs(inputs)).logits
            else:
                logits[subset] = model(batch, mask=[m for m in model.modalities if m not in subset]).logits
    return logits


