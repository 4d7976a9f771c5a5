"""Shared mechanics of gradient-modulation methods (OGM-GE, and the later AGM, ARL, CAL).

- :func:`unimodal_scores`: each modality's batch confidence on the true class;
- :func:`encoder_parameters`: the parameters of one modality's encoder that get modulated;
- :func:`scale_gradients`: ``g <- k * g`` plus optional Gaussian gradient noise, on parameters;
- :func:`scale_grad`: identity forward, gradient times a factor backward, on a tensor
  (e.g. encoder features, through ``MultimodalModel.forward(feature_hook=...)``).
"""

from __future__ import annotations

import torch
from torch import nn

PARAM_SCOPES = ("conv", "weights", "all")


def unimodal_scores(unimodal_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s_m = sum_batch softmax(logits_m)[y]`` (OGM-GE Eq. 8, a batch sum), detached."""
    return {m: torch.softmax(z.detach(), dim=1).gather(1, labels[:, None]).sum() for m, z in unimodal_logits.items()}


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
    """``g <- coeff * g``; with ``noise``, add ``N(0, (std(g) + 1e-8)^2)`` using the unscaled ``g``'s std."""
    for p in params:
        if p.grad is None:
            continue
        std = p.grad.std().item() + 1e-8 if noise and p.grad.numel() > 1 else 1e-8
        p.grad.mul_(coeff)
        if noise:
            eps = torch.randn(p.grad.shape, generator=generator, device=generator.device if generator else "cpu")
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
