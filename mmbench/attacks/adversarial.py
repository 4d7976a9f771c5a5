"""Gradient attacks on one modality: FGSM and PGD under an L-infinity budget, with the model's own gradients.

Both maximise the cross-entropy of the method's own prediction (``method.predict``, so a
test-time fusion such as QMF's is attacked as it is used), with the model in eval mode and the
other modalities as they are. ``level`` is the budget eps in the unit of ``unit`` (``std``:
eps = level x the modality's training std, the default; ``absolute``; ``pixel``: 0–255 scale).
For ``uint8`` inputs the gradient is taken on the float pixel values and eps is rounded down to
whole pixel steps, so ``|x' - x| <= eps`` holds after the cast back; the encoder must accept
float pixels on the same scale (checked, with a clear error otherwise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmbench.attacks.base import AttackContext, is_uint8, per_sample, register_attack, restore, sigma_for, uniform, work
from mmbench.data.types import ModalitySpec, MultimodalData
from mmbench.errors import MMBenchError


def _bounds(x: torch.Tensor, low: float | None, high: float | None) -> tuple[float | None, float | None]:
    if is_uint8(x):
        return (0.0 if low is None else low), (255.0 if high is None else high)
    return low, high


def _clamp(y: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
    return y.clamp(lo, hi) if lo is not None or hi is not None else y


def _batch(ctx: AttackContext, sl: slice, xb: torch.Tensor) -> MultimodalData:
    inputs = {m: (xb if m == ctx.modality else v[sl]) for m, v in ctx.inputs.items()}
    return MultimodalData(inputs, ctx.labels[sl], ctx.meta)


def losses_and_grads(ctx: AttackContext, xf: torch.Tensor, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample cross-entropy of the method's prediction at ``xf`` (the attacked modality), and its input gradient."""
    ctx.model.eval()
    losses, grads = [], []
    for start in range(0, xf.shape[0], ctx.batch_size):
        sl = slice(start, start + ctx.batch_size)
        xb = xf[sl].detach().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            out = ctx.method.predict(ctx.model, _batch(ctx, sl, xb))
            loss = F.cross_entropy(out.logits.float(), ctx.labels[sl], reduction="none")
            if grad:
                (g,) = torch.autograd.grad(loss.sum(), xb)
                grads.append(g)
        losses.append(loss.detach())
    return torch.cat(losses), (torch.cat(grads) if grad else None)


def _check_float_pixels(ctx: AttackContext, x: torch.Tensor) -> None:
    if x.is_floating_point() or x.shape[0] == 0:
        return
    sl = slice(0, min(8, x.shape[0]))
    with torch.no_grad():
        a = ctx.method.predict(ctx.model, _batch(ctx, sl, x[sl])).logits.float()
        b = ctx.method.predict(ctx.model, _batch(ctx, sl, x[sl].float())).logits.float()
    if not torch.allclose(a, b, rtol=1e-3, atol=1e-4):
        raise MMBenchError(f"gradient attacks on {x.dtype} modality {ctx.modality!r} feed float pixel values, "
                           "but this model's encoder treats float input differently; attack another modality")


def _budget(level: float, spec: ModalitySpec, x: torch.Tensor, unit: str, pixel_max: float) -> float:
    eps = sigma_for(level, spec, x, unit, pixel_max)
    if eps < 0:
        raise MMBenchError(f"the attack budget eps must be >= 0, got {eps:g}")
    return float(int(eps)) if not x.is_floating_point() else eps


def _need(ctx: AttackContext | None, name: str) -> AttackContext:
    if ctx is None:
        raise MMBenchError(f"attack {name!r} needs the model and labels (run it through mmbench attack)")
    return ctx


@register_attack("fgsm", kinds=("vector", "image", "sequence", "video"), needs_model=True, stochastic=False)
def fgsm(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
         ctx: AttackContext | None = None, unit: str = "std", pixel_max: float = 1.0,
         low: float | None = None, high: float | None = None) -> torch.Tensor:
    """FGSM (Goodfellow et al., ICLR 2015): x + eps sign(grad_x loss), L-inf budget eps on one modality.

    Deterministic. ``low`` / ``high`` clip the result (``uint8``: [0, 255] by default).
    """
    ctx = _need(ctx, "fgsm")
    eps = _budget(level, spec, x, unit, pixel_max)
    if eps == 0.0:
        return x
    _check_float_pixels(ctx, x)
    x0 = work(x).detach()
    _, g = losses_and_grads(ctx, x0)
    y = _clamp(x0 + eps * g.sign(), *_bounds(x, low, high))
    return restore(y, x)


@register_attack("pgd", kinds=("vector", "image", "sequence", "video"), needs_model=True)
def pgd(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
        ctx: AttackContext | None = None, unit: str = "std", pixel_max: float = 1.0, steps: int = 10,
        step_size: float | None = None, random_start: bool = True,
        low: float | None = None, high: float | None = None) -> torch.Tensor:
    """PGD (Madry et al., ICLR 2018): ``steps`` signed-gradient steps projected on the L-inf ball of radius eps.

    Step size ``step_size`` (same unit as ``level``; default 2.5 eps / steps, Madry's choice),
    uniform random start in the ball (from the attack generator), and per sample the iterate
    with the highest loss is kept.
    """
    ctx = _need(ctx, "pgd")
    eps = _budget(level, spec, x, unit, pixel_max)
    if eps == 0.0:
        return x
    if steps < 1:
        raise MMBenchError(f"pgd: steps must be >= 1, got {steps}")
    _check_float_pixels(ctx, x)
    alpha = 2.5 * eps / steps if step_size is None else sigma_for(step_size, spec, x, unit, pixel_max)
    lo, hi = _bounds(x, low, high)
    x0 = work(x).detach()
    y = x0
    if random_start:
        y = _clamp(x0 + (2 * uniform(tuple(x.shape), generator).to(x.device, x0.dtype) - 1) * eps, lo, hi)
    best, best_loss = y, None
    for i in range(steps + 1):
        loss, g = losses_and_grads(ctx, y, grad=i < steps)
        if best_loss is None:
            best, best_loss = y, loss
        else:
            better = loss > best_loss
            best = torch.where(per_sample(better, x), y, best)
            best_loss = torch.maximum(loss, best_loss)
        if i < steps:
            y = x0 + (y + alpha * g.sign() - x0).clamp(-eps, eps)
            y = _clamp(y, lo, hi)
    return restore(best, x)
