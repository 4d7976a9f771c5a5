"""MMPareto: multimodal loss plus unimodal losses, with conflict-free encoder gradients.

Wei, Hu. *MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance*.
ICML 2024, arXiv 2405.17730.
Official code: https://github.com/GeWu-Lab/MMPareto_ICML2024 (``code/MMPareto.py`` l.110-207 and
``code/min_norm_solvers.py``, reference commit a339db3).

From the official code (equal step for step on identical tensors: ``docs/methods/mmpareto.md``):
- model: fused head plus a **separate** linear head per modality; loss ``L_mm + sum_m L_m``
  (cross-entropy each);
- per encoder ``m``, the gradients of ``L_mm`` and of ``L_m`` on that encoder's parameters;
  conflict test on the cosine of the two **encoder-wide flattened** gradients;
- weights ``k = (0.5, 0.5)`` if ``cos > 0``, else the two-vector MGDA min-norm solution
  ``c = (g_u.g_u - g_mm.g_u) / |g_mm - g_u|^2`` for ``g_mm`` (``0.999`` / ``0.001`` at the
  solver's two boundary cases), ``1 - c`` for ``g_u``;
- **per parameter tensor**: ``new = 2 k_0 g_mm + 2 k_1 g_u``, rescaled *up* (never down) to the
  norm of that tensor's summed gradient ``grad(L_mm + sum_m L_m)``, then times ``gamma = 1.5``
  (hard-coded in the release). With ``cos > 0`` this is exactly ``1.5 x`` the summed gradient;
  the per-tensor norm restore does not keep the combined direction across tensors (reproduced:
  it is the rule);
- every other parameter (fused head, unimodal heads) keeps the plain summed gradient.

mmbench choices, documented:
- *Which parameters.* The release finds encoders and heads by name tokens (``audio``,
  ``visual``, ``head``); mmbench takes every trainable parameter of ``model.encoders[m]``.
- *More than two modalities.* Each encoder only receives ``L_mm`` and its own ``L_m``, so the
  release's per-encoder rule applies unchanged to any number of modalities.
- *Heads.* The unimodal heads are :func:`~mmbench.models.multimodal.with_unimodal_heads`
  (``Linear(feature_dim, classes)``); the fused head is the configured fusion.
- *Zero norm.* Where ``new`` is exactly zero the release divides by zero (NaN gradient); mmbench
  keeps the zero tensor.
- *Model selection* is on the validation split (the release selects on the test loader).
- The solver's receiving the per-tensor and concatenated gradients together doubles every inner
  product and leaves the weights unchanged, so mmbench uses the concatenation only.

Defaults: ``gamma`` 1.5 (release; BalanceMM's ``alpha`` 1.5). Release optimiser: SGD lr 2e-3,
momentum 0.9, weight decay 1e-4, batch 64, 50 epochs, constant learning rate (its ``StepLR(30, 0.1)`` is
never stepped); in the recipes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import POSITIVE
from mmbench.methods.base import Method
from mmbench.methods.modulation import encoder_parameters
from mmbench.models.multimodal import with_unimodal_heads
from mmbench.registry import METHODS


def min_norm_weights(g1: torch.Tensor, g2: torch.Tensor) -> tuple[float, float]:
    """MGDA for two vectors: ``c`` minimising ``|c g1 + (1 - c) g2|`` over ``[0, 1]``, as the release's
    solver (``0.999`` when ``g1.g2 >= g1.g1``, ``0.001`` when ``g1.g2 >= g2.g2``); returns ``(c, 1 - c)``."""
    v11, v12, v22 = (g1 @ g1).item(), (g1 @ g2).item(), (g2 @ g2).item()
    if v12 >= v11:
        c = 0.999
    elif v12 >= v22:
        c = 0.001
    else:
        c = (v22 - v12) / (v11 + v22 - 2 * v12)
    return c, 1.0 - c


def _flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


@METHODS.register("mmpareto")
class MMPareto(Method):
    """MMPareto (ICML 2024): fused + unimodal losses, MGDA weights on conflicting encoder gradients."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        gamma: Annotated[float, POSITIVE] = 1.5  # magnitude enhancement of the encoders' combined gradient

    def build_model(self, spec):
        return with_unimodal_heads(spec)

    def loss(self, model, batch, out, state):
        fused = F.cross_entropy(out.logits, batch.labels)
        unimodal = {m: F.cross_entropy(z, batch.labels) for m, z in out.unimodal_logits.items()}
        # per-loss encoder gradients, kept for after_backward (the trainer back-propagates the sum);
        # the fused loss's for every encoder in one backward pass
        params = {m: ps for m in unimodal if (ps := encoder_parameters(model, m, "all"))}  # frozen encoders: none
        if params:
            g_fused = _flat_grad(fused, [p for ps in params.values() for p in ps])
            for m, g_mm in zip(params, g_fused.split([sum(p.numel() for p in ps) for ps in params.values()])):
                out.extras[f"grad_mm:{m}"] = g_mm
                out.extras[f"grad_uni:{m}"] = _flat_grad(unimodal[m], params[m])
        total = fused + sum(unimodal.values())
        return total, {"loss_fused": fused.item(), **{f"loss_{m}": v.item() for m, v in unimodal.items()}}

    @torch.no_grad()
    def after_backward(self, model, batch, out, state):
        logs = {}
        for m in [m for m in out.unimodal_logits if f"grad_mm:{m}" in out.extras]:
            g_mm, g_uni = out.extras.pop(f"grad_mm:{m}"), out.extras.pop(f"grad_uni:{m}")
            cos = F.cosine_similarity(g_mm, g_uni, dim=0).item()
            k_mm, k_uni = (0.5, 0.5) if cos > 0 else min_norm_weights(g_mm, g_uni)
            offset = 0
            for p in encoder_parameters(model, m, "all"):
                n = p.numel()
                new = (2 * k_mm * g_mm[offset:offset + n] + 2 * k_uni * g_uni[offset:offset + n]).view_as(p)
                offset += n
                if p.grad is None:
                    continue
                summed, new_norm = p.grad.norm(), new.norm()  # scaled up to the summed gradient's norm, never down
                new = new * torch.where((new_norm > 0) & (summed > new_norm), summed / new_norm, 1.0)
                p.grad = self.params.gamma * new
            logs.update({f"cos_{m}": cos, f"k_mm_{m}": k_mm, f"conflict_{m}": float(cos <= 0)})
        return logs
