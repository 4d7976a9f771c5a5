"""Sample-level modality valuation and re-sampling ("Sample", BalanceMM's name).

Wei, Feng, Wang, Hu. *Enhancing Multimodal Cooperation via Sample-level Modality Valuation*.
CVPR 2024, arXiv 2309.06255. Official code:
https://github.com/GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation (``code/sample_level.py``,
``code/modality_level.py``, ``code/datasets/dataloader.py``, ``code/models/models.py``, commit 7ed12b0).

From the official code:
- after each epoch from ``warmup - 1`` on, every training sample is valued in eval mode: the fused
  head reads the features with the other modalities zeroed; ``v(S) = |S|`` if the prediction from
  the modalities in ``S`` is right, else 0 (so 2 for both, 1 for one; ``v(empty) = 0``), and a
  modality's contribution is its Shapley value, ``phi_a = (v(a) + v(av) - v(v)) / 2``;
- ``level="sample"``: the next epoch trains on every sample plus 1, 2 or 3 extra copies per
  modality when its ``phi`` is in (0.4, 1), (-0.1, 0.4) or below -0.1; a copy for modality ``m``
  has the other modalities' features zeroed, so it trains ``m`` alone through the fused head;
- ``level="modality"``: the contributions are averaged over a random ``part_ratio`` share of the
  samples (drawn with replacement), ``gap_m = 1 - mean phi_m``, and ``int(alpha |gap_a - gap_v| 2/3 N)``
  random samples (with replacement) get a copy for the modality with the larger gap;
- loss: cross-entropy of the fused output; the first ``warmup`` epochs are plain joint training.

mmbench choice, documented (``docs/methods/sample.md``), the mark ‡: the release appends the copies
to the dataset, so an epoch has more steps and a copy lands in any batch. mmbench keeps the epoch's
batches and adds each sample's copies to its own batch: the loss is the mean cross-entropy over the
batch's originals and copies (``(sum_i CE_i + sum_{i,m} c_im CE_i^m) / (B + sum c)``, the copies'
predictions re-fused from the same features, zeros in place of the dropped modalities). The
gradient of an epoch counts every copy once, as the release's; the number of steps and the batch
mixing differ.

Options: ``value="shapley"`` is BalanceMM's valuation (``v(S)`` 1 if right, else 0, any number of
modalities). More than two modalities with ``level="modality"``: the copies go to the modality
with the largest gap, ``difference = alpha (max gap - min gap) 2/3`` (mmbench's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE, UNIT
from mmbench.evaluation import eval_mode
from mmbench.methods.base import Method, TrainState, check_choices
from mmbench.registry import METHODS

LEVELS = ("sample", "modality")
VALUES = ("release", "shapley")


def shapley_contributions(correct: dict[frozenset, torch.Tensor], modalities: list[str], value: str = "release"
                          ) -> torch.Tensor:
    """``[N, M]`` Shapley value of each modality per sample from ``correct[S]`` (``[N]`` bool, every
    non-empty coalition ``S``); ``v(S) = |S|`` (release) or 1 (shapley) when right, ``v(empty) = 0``."""
    n, ref = len(modalities), next(iter(correct.values()))

    def v(s: frozenset) -> torch.Tensor:
        if not s:
            return torch.zeros((), device=ref.device)
        return correct[s].float() * (len(s) if value == "release" else 1.0)

    out = []
    for m in modalities:
        others = [j for j in modalities if j != m]
        phi = 0.0
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in combinations(others, size):
                s = frozenset(s)
                phi = phi + w * (v(s | {m}) - v(s))
        out.append(phi)
    return torch.stack(out, 1)


def sample_copies(contributions: torch.Tensor) -> torch.Tensor:
    """Extra copies per sample and modality: 1 for ``0.4 < phi < 1``, 2 for ``-0.1 < phi < 0.4``,
    3 for ``phi < -0.1``, else 0 (the release's bounds, all open)."""
    c = contributions
    return torch.where((0.4 < c) & (c < 1), 1, torch.where((-0.1 < c) & (c < 0.4), 2, torch.where(c < -0.1, 3, 0)))


def modality_copies(contributions: torch.Tensor, part_ratio: float, alpha: float, generator: torch.Generator
                    ) -> tuple[torch.Tensor, float]:
    """Copies for the modality of the largest gap ``1 - mean phi`` (mean over a random share ``part_ratio``),
    on ``int(difference N)`` samples drawn with replacement; also ``difference``."""
    n, device = len(contributions), contributions.device
    part = torch.randint(n, (int(n * part_ratio),), generator=generator, device=generator.device).to(device)
    gap = 1.0 - contributions[part].mean(0) if len(part) else torch.zeros(contributions.shape[1], device=device)
    difference = float(gap.max() - gap.min()) * 2 / 3 * alpha
    chosen = torch.randint(n, (int(difference * n),), generator=generator, device=generator.device).to(device)
    copies = torch.zeros_like(contributions, dtype=torch.long)
    copies[:, int(gap.argmax())] = torch.bincount(chosen, minlength=n)
    return copies, difference


@METHODS.register("sample")
class Sample(Method):
    """Sample-level modality valuation (CVPR 2024): Shapley contributions per sample, copies of the weak modality."""

    reconstructed: ClassVar[tuple[str, ...]] = ("copies join their original's batch, not a longer epoch",)

    @dataclass(frozen=True)
    class Params:
        level: str = "sample"  # sample | modality
        warmup: Annotated[int, NON_NEGATIVE] = 5
        part_ratio: Annotated[float, UNIT] = 0.2  # modality level: share of samples estimating the gaps
        alpha: Annotated[float, NON_NEGATIVE] = 1.0  # modality level: scale of the re-sampled share
        value: str = "release"  # release (v(S) = |S|) | shapley (BalanceMM: v(S) = 1)

        def __post_init__(self):
            check_choices(self, level=LEVELS, value=VALUES)

    def __init__(self, params=None):
        super().__init__(params)
        self.copies: torch.Tensor | None = None  # [N_train, M] extra copies of each sample per modality

    def loss(self, model, batch, out, state: TrainState):
        ce = F.cross_entropy(out.logits, batch.labels, reduction="sum")
        if self.copies is None or state.epoch < self.params.warmup:
            return ce / len(batch), {}
        copies = self.copies[batch.ids]  # [B, M]
        total, count = ce, len(batch) + copies.sum()
        for j, m in enumerate(model.modalities):
            if copies[:, j].any():
                alone, _ = model.fuse({m: out.features[m]})
                per = F.cross_entropy(alone, batch.labels, reduction="none")
                total = total + (copies[:, j] * per).sum()
        return total / count, {"copies": float(copies.sum()) / len(batch)}

    @torch.no_grad()
    def on_epoch_end(self, state: TrainState) -> None:
        p = self.params
        if state.epoch < p.warmup - 1:
            return
        model, modalities = state.model, list(state.model.modalities)
        parts = []
        with eval_mode(model):
            for batch in state.train.batches(state.batch_size * 4):
                coalitions = model.fuse_coalitions(model(batch).features)
                correct = {s: z.argmax(1) == batch.labels for s, z in coalitions.items() if s}
                parts.append(shapley_contributions(correct, modalities, p.value))
        contributions = torch.cat(parts)
        if p.level == "sample":
            self.copies = sample_copies(contributions)
        else:
            self.copies, difference = modality_copies(contributions, p.part_ratio, p.alpha, state.generator)
            state.epoch_logs["difference"] = difference
        for j, m in enumerate(modalities):
            state.epoch_logs[f"contribution_{m}"] = contributions[:, j].mean().item()
            state.epoch_logs[f"copies_{m}"] = float(self.copies[:, j].sum())
