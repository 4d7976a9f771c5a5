"""AGM: Adaptive Gradient Modulation.

Li, Li, Hu, Lei, Li, Zhou. *Boosting Multi-modal Model Performance with Adaptive Gradient
Modulation*. ICCV 2023, arXiv 2308.07686.
Official code: https://github.com/lihong2303/AGM (commit 5a65542; ``model/CREMAD_net.py``,
``run/CREMAD_main.py``, ``utils/config.py``, ``tasks/CREMAD_task.py``).

From the official code (equal step for step on identical tensors: ``docs/methods/agm.md``):
- Shapley-like modality outputs from the full pass and passes with modalities muted; the muted
  passes run in **eval mode with gradients** (``CREMAD_net.py`` l.57-72):
  ``m_a = 1/2 (f(a,v) - f(0,v) + f(a,0))``, ``m_v = 1/2 (f(a,v) - f(a,0) + f(0,v))`` (l.7-17), so
  ``m_a + m_v = f(a,v)``; the loss is ``CE(m_a + m_v)`` and each ``m_m``'s gradient is scaled by
  its coefficient (backward hooks, l.42-55);
- ``score_m = mean_batch(-log softmax(m_m)[y])``, probabilities floored at 1e-8;
  ``ratio_a = exp(score_v - score_a)``; the "optimal" ratio uses ``train_score_m``, the cumulative
  mean of every step's score since the start of training, taken **before** adding this step's;
  ``coeff_m = exp(alpha * min(optimal_ratio_m - ratio_m, 10))``, set before this step's backward
  (``CREMAD_main.py`` l.130-166);
- modulation while ``modulation_starts <= epoch <= modulation_ends``, inclusive; scores and
  running means are updated at every step, inside the window or not;
- a modality is muted by **zeroing its input** (``pad_audio``/``pad_visual``; lihongcs/AGM#9);
- conditional clip (``CREMAD_main.py`` l.233-238): if any entry of the fusion head's weight gradient lies outside
  [-1, 1], ``clip_grad_norm_(model.parameters(), 1.0)``; kept (``conditional_clip=True``).

mmbench choices, documented:
- *More than two modalities.* ``m_m = phi_m + f(empty)/M`` where ``phi`` is the exact Shapley value
  of the logits over modality subsets; for two modalities this is the release's ``m_a``, ``m_v``.
  ``f(empty)``'s net weight is zero (the release computes it and uses it nowhere), so it is not
  run; ``2^M - 2`` muted passes per step. ``ratio_m = exp(mean_{j != m} score_j - score_m)``.
- *Window.* The release counts epochs from 1 (default window 0-20: epochs 1-20); here epochs count
  from 0, so the same window is 0-19.
- *After the window* the release keeps applying the last coefficient until training ends (its
  hooks are never reset). mmbench's default ``scale_after_window="reset"`` stops modulating, as the
  paper describes; ``"keep_last"`` reproduces the release.
- *Muting.* The release zeroes the normalised input tensor; mmbench zeroes the input as the network
  sees it (uint8 frames, standardised inside the model, get their training mean). ``mute="features"``
  offers the model's masking instead (zero features, encoder not run).
- *Which clip.* "Fusion head" = every weight matrix of the fusion module (``fc`` for concat).
- Per-modality accuracies (``acc_<m>``) are those of ``m_m``, as the release reports them.
- *Model selection* is on the validation split (the release keeps the best-on-test epoch).

Defaults = the release's argument defaults (``utils/config.py`` l.66-78): alpha 1.0, window
epochs 1-20 (0-19 here). Optimiser settings (argument defaults lr 1e-5, batch 16, 10 epochs; the
README's command lr 1e-4, batch 64, 100 epochs; SGD momentum 0.9, weight decay 1e-4, StepLR(70, 0.1))
are recipe settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE
from mmbench.measures import shapley_values, true_class_prob
from mmbench.methods.base import Method, check_choices
from mmbench.methods.modulation import MUTE_MODES, scale_grad, subset_logits
from mmbench.models.multimodal import ModelOutput
from mmbench.registry import METHODS

AFTER_WINDOW = ("reset", "keep_last")


def agm_outputs(model, batch, full_logits: torch.Tensor, mute: str = "input") -> dict[str, torch.Tensor]:
    """Shapley-like outputs ``m_m = phi_m + f(empty) / M`` (with gradients); they sum to ``full_logits``."""
    mods = model.modalities
    partial = [frozenset(c) for k in range(1, len(mods)) for c in combinations(mods, k)]
    value = subset_logits(model, batch, partial, mute)
    value[frozenset(mods)] = full_logits
    value[frozenset()] = torch.zeros_like(full_logits)  # net weight zero in m_m: f(empty) cancels
    return shapley_values(value, mods)


def agm_scores(outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    """``score_m = mean_batch(-log p_m[y])`` with ``p`` floored at 1e-8, as the release does."""
    return {m: -true_class_prob(z.detach(), labels).clamp_min(1e-8).log().mean().item()
            for m, z in outputs.items()}


def agm_coefficients(scores: dict[str, float], running: dict[str, float], alpha: float
                     ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """``ratio_m``, ``optimal_ratio_m`` (from the running means) and ``coeff_m``."""

    def ratio(s: dict[str, float], m: str) -> float:
        others = [v for j, v in s.items() if j != m]
        return math.exp(sum(others) / len(others) - s[m])

    ratios = {m: ratio(scores, m) for m in scores}
    optimal = {m: ratio(running, m) for m in scores}
    coeffs = {m: math.exp(alpha * min(optimal[m] - ratios[m], 10.0)) for m in scores}
    return ratios, optimal, coeffs


@METHODS.register("agm")
class AGM(Method):
    """AGM (ICCV 2023): scale each modality's Shapley-like output gradient by its adaptive coefficient."""

    @dataclass(frozen=True)
    class Params:
        alpha: Annotated[float, NON_NEGATIVE] = 1.0
        modulation_starts: Annotated[int, NON_NEGATIVE] = 0
        modulation_ends: Annotated[int, NON_NEGATIVE] = 19
        scale_after_window: str = "reset"  # reset | keep_last (the release)
        conditional_clip: bool = True
        mute: str = "input"  # input (the release) | features

        def __post_init__(self):
            check_choices(self, scale_after_window=AFTER_WINDOW, mute=MUTE_MODES)

    def __init__(self, params=None):
        super().__init__(params)
        self.train_score: dict[str, float] = {}
        self.last_scale: dict[str, float] = {}

    def forward(self, model, batch, state):
        p = self.params
        full = model(batch)
        outputs = agm_outputs(model, batch, full.logits, p.mute)
        scores = agm_scores(outputs, batch.labels)
        if state.step == 0:  # a new training run
            self.train_score, self.last_scale = {m: 0.0 for m in scores}, {}
        ratios, optimal, coeffs = agm_coefficients(scores, self.train_score, p.alpha)
        t = state.step + 1
        self.train_score = {m: self.train_score[m] * (t - 1) / t + scores[m] / t for m in scores}
        if p.modulation_starts <= state.epoch <= p.modulation_ends:
            scale = self.last_scale = coeffs
        elif state.epoch > p.modulation_ends and p.scale_after_window == "keep_last" and self.last_scale:
            scale = self.last_scale
        else:
            scale = {m: 1.0 for m in scores}
        logits = sum(scale_grad(z, scale[m]) for m, z in outputs.items())
        logs = {}
        for m in scores:
            logs.update({f"score_{m}": scores[m], f"ratio_{m}": ratios[m], f"optimal_ratio_{m}": optimal[m],
                         f"coeff_{m}": coeffs[m], f"scale_{m}": scale[m]})
        extras = {k: torch.tensor(v, dtype=torch.float64) for k, v in logs.items()}  # logged at full precision
        return ModelOutput(logits, full.features, outputs, extras)

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {k: v.item() for k, v in out.extras.items()}

    def after_backward(self, model, batch, out, state):
        if not self.params.conditional_clip:
            return {}
        grads = [p.grad for p in model.fusion.parameters() if p.grad is not None and p.ndim >= 2]
        clipped = any(g.abs().max().item() > 1.0 for g in grads)
        if clipped:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        return {"clipped": float(clipped)}

    def predict(self, model, batch):
        full = model(batch)
        return ModelOutput(full.logits, full.features, agm_outputs(model, batch, full.logits, self.params.mute))
