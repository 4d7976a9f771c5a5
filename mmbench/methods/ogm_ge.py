"""OGM-GE: On-the-fly Gradient Modulation with Generalisation Enhancement.

Peng, Wei, Deng, Wang, Hu. *Balanced Multimodal Learning via On-the-fly Gradient
Modulation*. CVPR 2022 (oral), arXiv 2203.15332.
Official code: https://github.com/GeWu-Lab/OGM-GE_CVPR2022 (``main.py``, commit 343dc1d).

From the official code (equal step for step on identical tensors, noise included: ``docs/methods/ogm_ge.md``):
- unimodal logits by splitting the concat head, ``out_m = f_m W_m^T + b/2``
  (:class:`~mmbench.models.fusion.ConcatFusion`);
- scores ``s_m = sum_batch softmax(out_m)[y]``; ratio ``rho_v = s_v / s_a``;
- coefficient of the dominant modality ``k = 1 - tanh(alpha * relu(rho))`` when ``rho > 1``
  (no ``-1``: k jumps from 1 to ``1 - tanh(alpha)`` at ``rho = 1``), the other keeps ``k = 1``;
- OGM: ``g <- k g``; OGM-GE: ``g <- k g + N(0, (std(g) + 1e-8)^2)`` on the encoders of **both**
  modalities, the std taken from the unscaled gradient;
- modulation while ``modulation_starts <= epoch <= modulation_ends`` (inclusive, epochs from 0);
- loss: cross-entropy on the fused output only.

mmbench choices, documented:
- *Which parameters.* The release modulates 4-D gradients (the ResNet encoders' conv
  weights), selected through a DataParallel name prefix. mmbench selects on the encoder
  module; ``scope="weights"`` (default) takes every weight matrix/kernel of the encoder, the
  same rule for MLP encoders; ``scope="conv"`` is the release's literal rule.
- *Exact tie* (``rho = 1``): the release slows the audio encoder (its ``else`` branch), mmbench neither.
- *More than two modalities.* ``rho_m = s_m / mean_{j != m} s_j``, identical to the paper for
  two modalities; every modality with ``rho_m > 1`` is slowed.
- *Model selection* is on the validation split (the release selects on the test loader).
- *Where the ratio's scores come from with gated or FiLM fusion.* These fusions do not split into
  per-modality terms. The release computes ``out_a``/``out_v`` for every fusion except ``sum`` by
  halving ``fc_out``'s input columns (``main.py`` l.88-93), which for gated/FiLM (``fc_out`` reads
  one fused 512-d vector, not a concatenation) multiplies each modality's features by half of a
  layer that never saw them: not a defined unimodal prediction. mmbench takes the scores from the
  model's separate per-modality linear heads, trained by the trainer on *detached* features (they
  do not change what the encoders learn) (``docs/methods/ogm_ge.md``).

Defaults: alpha 0.8 (the paper's CREMA-D value), OGM_GE, window 0-50 (the release's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE
from mmbench.measures import score_ratios, unimodal_scores
from mmbench.methods.base import Method, check_choices
from mmbench.methods.modulation import PARAM_SCOPES, encoder_parameters, scale_gradients
from mmbench.registry import METHODS

MODES = ("OGM_GE", "OGM")


def ogm_coefficients(scores: dict[str, torch.Tensor], alpha: float) -> tuple[dict[str, float], dict[str, float]]:
    """Ratios ``rho_m`` and coefficients ``k_m`` from the modalities' scores."""
    ratios = score_ratios(scores)
    return ratios, {m: 1.0 - math.tanh(alpha * max(rho, 0.0)) if rho > 1 else 1.0 for m, rho in ratios.items()}


@METHODS.register("ogm_ge")
class OGMGE(Method):
    """OGM-GE (CVPR 2022): shrink the dominant encoder's gradients, plus gradient noise."""

    @dataclass(frozen=True)
    class Params:
        alpha: Annotated[float, NON_NEGATIVE] = 0.8
        mode: str = "OGM_GE"  # OGM_GE | OGM
        modulation_starts: Annotated[int, NON_NEGATIVE] = 0
        modulation_ends: Annotated[int, NON_NEGATIVE] = 50
        scope: str = "weights"  # weights | conv | all

        def __post_init__(self):
            check_choices(self, mode=MODES, scope=PARAM_SCOPES)

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {}

    def after_backward(self, model, batch, out, state):
        p = self.params
        ratios, coeffs = ogm_coefficients(unimodal_scores(out.unimodal_logits, batch.labels), p.alpha)
        if not p.modulation_starts <= state.epoch <= p.modulation_ends:
            coeffs = {m: 1.0 for m in coeffs}
        else:
            for m, k in coeffs.items():
                scale_gradients(encoder_parameters(model, m, p.scope), k, noise=p.mode == "OGM_GE",
                                generator=state.generator)
        return {**{f"ratio_{m}": r for m, r in ratios.items()}, **{f"coeff_{m}": k for m, k in coeffs.items()}}
