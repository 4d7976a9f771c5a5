"""OPM: On-the-fly Prediction Modulation (feature drop of the dominant modality).

Wei, Hu, Peng, Hu. *On-the-fly Modulation for Balanced Multimodal Learning*. IEEE TPAMI 2024,
arXiv 2410.11582. Official code: https://github.com/GeWu-Lab/BML_TPAMI2024 (``code/main.py``,
``code/models/Classifier.py``, commit 4b3aa4f). The same paper's gradient twin, OGM, is
mmbench's ``ogm_ge`` (the release's OGM is the CVPR 2022 rule; its script runs it with alpha 0.8
and modulation from epoch 6, after the warm-up, to 60: ``docs/methods/opm.md``).

From the official code:
- scores ``s_m = sum_batch softmax(out_m)[y]`` of the split-head unimodal logits (as OGM-GE);
- ``r_m = tanh(relu(s_m / s_other - 1))``; drop probability ``q_m = q_base (1 + lam r_m)`` when
  ``r_m > 0``, else 0, clipped to [0, 1] (only the dominant modality is ever dropped);
- with probability ``p_exe`` per batch: each sample's features of modality ``m`` are zeroed with
  probability ``q_m`` (one Bernoulli draw per sample and modality), all features are divided by
  ``1 - theta`` with ``theta = sum_m d_m q_m / sum_m d_m`` (``d_m``: feature dimension), samples
  left with no modality are removed; the fused head re-reads the cleaned features;
- loss: cross-entropy of the fused output only; no drop during the first 6 epochs (the
  release's warm-up, ``epoch <= 5``) and never at evaluation.

mmbench choices, documented:
- *More than two modalities*: ``s_other`` is the mean score of the other modalities (OGM-GE's
  rule here); BalanceMM divides by their sum (``ratio="sum"``, its ``OPM_trainer.py``).
- *A batch where every sample lost every modality* (possible only with more than two
  modalities) contributes a zero loss; the release skips the batch.
- randomness from the run's generator (the release: numpy's and torch's global streams).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE, UNIT
from mmbench.measures import unimodal_scores
from mmbench.methods.base import Method, TrainState, check_choices
from mmbench.models.multimodal import ModelOutput
from mmbench.registry import METHODS

RATIOS = ("mean", "sum")


def drop_probabilities(scores: dict[str, torch.Tensor], q_base: float, lam: float, ratio: str = "mean"
                       ) -> dict[str, float]:
    """``q_m = clip(q_base (1 + lam tanh(relu(s_m / s_others - 1))), 0, 1)`` if that tanh is positive, else 0."""
    names = list(scores)
    q = {}
    for m in names:
        others = torch.stack([scores[j] for j in names if j != m])
        other = others.mean() if ratio == "mean" else others.sum()
        r = torch.tanh(torch.relu(scores[m] / other.clamp_min(1e-12) - 1)).item()
        q[m] = min(max(q_base * (1 + lam * r), 0.0), 1.0) if r > 0 else 0.0
    return q


def draw_keep(q: dict[str, float], batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``[B, M]`` bool: sample ``i`` keeps modality ``m`` with probability ``1 - q_m`` (one draw each)."""
    probs = torch.tensor(list(q.values()), device=generator.device)
    return torch.rand(batch_size, len(q), generator=generator, device=generator.device) >= probs


def drop_features(features: dict[str, torch.Tensor], q: dict[str, float], keep: torch.Tensor
                  ) -> dict[str, torch.Tensor]:
    """Features zeroed where ``keep`` is False and divided by ``1 - theta``, ``theta = sum_m d_m q_m / sum_m d_m``."""
    dims = {m: f.shape[1] for m, f in features.items()}
    theta = sum(dims[m] * q[m] for m in features) / sum(dims.values())
    keep = keep.to(next(iter(features.values())).device)
    return {m: f * keep[:, j, None].to(f.dtype) / (1 - theta) for j, (m, f) in enumerate(features.items())}


@METHODS.register("opm")
class OPM(Method):
    """OPM (TPAMI 2024): drop the dominant modality's features per sample with a score-driven probability."""

    @dataclass(frozen=True)
    class Params:
        q_base: Annotated[float, UNIT] = 0.5
        lam: Annotated[float, NON_NEGATIVE] = 0.5
        p_exe: Annotated[float, UNIT] = 0.7
        modulation_starts: Annotated[int, NON_NEGATIVE] = 6
        ratio: str = "mean"  # mean | sum (BalanceMM, > 2 modalities)

        def __post_init__(self):
            check_choices(self, ratio=RATIOS)

    def forward(self, model, batch, state: TrainState) -> ModelOutput:
        out = model(batch)
        p = self.params
        if state.epoch < p.modulation_starts:
            return out
        q = drop_probabilities(unimodal_scores(out.unimodal_logits, batch.labels), p.q_base, p.lam, p.ratio)
        execute = torch.rand((), generator=state.generator, device=state.generator.device).item() < p.p_exe
        extras = {**out.extras, **{f"q_{m}": torch.tensor(v) for m, v in q.items()}, "dropped": torch.tensor(float(execute))}
        if not execute:
            return ModelOutput(out.logits, out.features, out.unimodal_logits, extras)
        keep = draw_keep(q, len(batch), state.generator)
        logits, _ = model.fuse(drop_features(out.features, q, keep))
        return ModelOutput(logits, out.features, out.unimodal_logits, {**extras, "kept": keep.any(1).to(logits.device)})

    def loss(self, model, batch, out, state):
        kept = out.extras.get("kept")
        logs = {k: float(v) for k, v in out.extras.items() if k.startswith("q_") or k == "dropped"}
        if kept is None:
            return F.cross_entropy(out.logits, batch.labels), logs
        if not kept.any():
            return out.logits.sum() * 0.0, logs
        return F.cross_entropy(out.logits[kept], batch.labels[kept]), logs
