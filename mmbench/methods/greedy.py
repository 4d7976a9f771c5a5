"""Greedy: balanced multi-modal learning against the greedy nature of multi-modal networks.

Wu, Jastrzebski, Cho, Geras. *Characterizing and overcoming the greedy nature of learning in multi-modal
deep neural networks*. ICML 2022, arXiv 2202.05306. Official code: https://github.com/nyukat/greedy_multimodal_learning
(commit a190e03: ``src/balanced_mmtm.py`` ``MMTM_mitigate``, ``src/model.py`` ``MMTM_MVCNN``,
``src/callbacks.py`` ``Bias_Mitigation_Strong``, ``train.py``, ``configs/training_guided.gin``).
BalanceBenchmark's version (GeWu-Lab/BalanceBenchmark @ 4c1482f, ``balancemm/trainer/Greedy_trainer.py``,
``balancemm/models/avclassify_model.py`` ``BaseClassifierGreedyModel``, ``MMTM``) is ``variant="balancemm"``.

From the official code:
- two branches joined by MMTM modules (multi-modal transfer module) after the last ``mmtm_blocks`` (3:
  ResNet-18's layers 2-4) blocks: squeeze = per-channel means of both branches, concatenated;
  ``h = relu(W_s squeeze)`` (width ``2 (C_0 + C_1) / ratio``, ratio 4); branch ``m`` is multiplied per channel
  by ``sigmoid(W_m h)``; each MMTM keeps a running mean of each branch's batch-mean scale;
- each branch has its own linear head; loss = sum of the heads' cross-entropies, prediction = their mean;
- conditional learning speed: after every backward pass (outside re-balancing), per branch ``m``
  ``M_bypass_m += |g|^2 / |w|^2`` over the MMTM parameters feeding ``m`` (its excitation layers and the
  shared squeeze layers) and ``M_main_m += |g|^2 / |w|^2`` over the branch (encoder and head);
  ``d = log10(M_bypass_0 / M_main_0) - log10(M_bypass_1 / M_main_1)``;
- from epoch ``starting_epoch`` (2): when ``|d| > epsilon`` (0.01) the next ``window`` (5) steps are
  re-balancing steps for the branch ``c = 0 if d > 0 else 1`` (the modality learning more slowly from its
  own input): branch ``c``'s MMTM scales are replaced by their running means, so during those steps ``c``
  receives no information from the other modality and must learn from its own input; ``d`` is not
  updated during re-balancing.

``variant="balancemm"``: BalanceBenchmark's model and loss: the configured fusion (concat) over the two
branches, cross-entropy of the fused prediction, main speed over the encoders only; its configuration
also has MMTMs after all four ResNet layers (``mmtm_blocks=4``), ``alpha`` 0.001 (``epsilon``) and no
warm-up (``starting_epoch=0``), settable separately.

mmbench choices (``docs/methods/greedy.md``): MMTMs sit after the encoders' depth blocks (ResNet-18: after a
stage; its last block ends with the pooling, equivalent when the feature width is 512); every branch's running
mean is of its own scales (the release averages branch 0's scales for branch 1 too, a typo BalanceMM
fixed: ``running_mean="release"`` reproduces it); a masked modality's squeeze is replaced by its running mean (the release's ``turnoff_cross_modal_flow``
with averaged squeeze maps); a zero speed sum gives ``d = 0``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE
from mmbench.data.types import MultimodalData
from mmbench.errors import MMBenchError
from mmbench.methods.base import Method, check_choices
from mmbench.models.blocks import depth_blocks, pooled
from mmbench.models.multimodal import FramePool, ModelOutput, ModelSpec, MultimodalModel, Standardize, build_model
from mmbench.registry import FUSIONS, METHODS

VARIANTS = ("release", "balancemm")


class MMTM(nn.Module):
    """Squeeze two branches' channel means, excite a per-channel sigmoid scale for each; running means kept
    (``release_mean``: branch 1's running mean is of branch 0's scales, as the release's typo has it)."""

    def __init__(self, dims: tuple[int, int], ratio: int, release_mean: bool = False):
        super().__init__()
        self.release_mean = release_mean
        hidden = int(2 * sum(dims) / ratio)
        self.squeeze = nn.Linear(sum(dims), hidden)
        self.excite = nn.ModuleList(nn.Linear(hidden, d) for d in dims)
        for i, d in enumerate(dims):
            self.register_buffer(f"avg_scale{i}", torch.zeros(d))
            self.register_buffer(f"avg_squeeze{i}", torch.zeros(d))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, squeezed: list[torch.Tensor | None], caring: int | None = None) -> list[torch.Tensor | None]:
        """Per-sample scales ``[B, C_i]`` (None for an absent branch); branch ``caring`` gets its running mean."""
        if any(s is None for s in squeezed):  # one branch absent: its squeeze is its running mean
            scales = []
            for i, s in enumerate(squeezed):
                if s is None:
                    scales.append(None)
                    continue
                parts = [s if j == i else self.get_buffer(f"avg_squeeze{j}").expand(len(s), -1) for j in range(2)]
                scales.append(torch.sigmoid(self.excite[i](F.relu(self.squeeze(torch.cat(parts, 1))))))
            return scales
        h = F.relu(self.squeeze(torch.cat(squeezed, 1)))
        scales = [torch.sigmoid(e(h)) for e in self.excite]
        n = self.steps  # a tensor: no device sync
        with torch.no_grad():
            for i, (s, q) in enumerate(zip(scales, squeezed)):
                s = scales[0] if self.release_mean else s
                for name, value in ((f"avg_scale{i}", s), (f"avg_squeeze{i}", q)):
                    buf = self.get_buffer(name)
                    buf.copy_((value.detach().mean(0) + buf * n) / (n + 1))
            self.steps += 1
        if caring is not None:
            scales[caring] = self.get_buffer(f"avg_scale{caring}").expand_as(scales[caring])
        return scales


def _frames(encoder: nn.Module) -> bool:
    inner = encoder.encoder if isinstance(encoder, Standardize) else encoder
    return isinstance(inner, FramePool)


class GreedyModel(MultimodalModel):
    """Two encoders run block by block, joined by MMTMs after their last ``len(mmtms)`` blocks."""

    def __init__(self, model: MultimodalModel, mmtm_blocks: int, ratio: int, shapes: dict[str, tuple[int, ...]],
                 release_mean: bool = False):
        super().__init__(dict(model.encoders), model.fusion, dict(model.heads) if model.heads is not None else None)
        try:
            blocks = {m: depth_blocks(e) for m, e in self.encoders.items()}
        except MMBenchError:
            raise MMBenchError("method 'greedy' needs encoders made of depth blocks (mlp, cnn, conv1d, resnet18); "
                               "set model.encoders") from None
        short = [m for m, b in blocks.items() if len(b) < mmtm_blocks]
        if short:
            raise MMBenchError(f"method 'greedy': encoder of {short[0]!r} has {len(blocks[short[0]])} blocks, fewer "
                               f"than method.mmtm_blocks={mmtm_blocks}; lower it or deepen the encoder")
        self.blocks = blocks  # plain attribute: views of the encoders' own modules
        self.joins = {m: len(b) - mmtm_blocks for m, b in blocks.items()}  # index of the block before MMTM 0
        widths = self._widths(shapes, mmtm_blocks)
        if release_mean and widths[0] != widths[1]:
            raise MMBenchError(f"method 'greedy': running_mean=release needs equal branch widths at every MMTM, got "
                               f"{widths[0]} and {widths[1]}; use running_mean=own")
        self.mmtms = nn.ModuleList(MMTM((widths[0][j], widths[1][j]), ratio, release_mean) for j in range(mmtm_blocks))

    @torch.no_grad()
    def _widths(self, shapes, k: int) -> list[list[int]]:
        """Channels after each of the last ``k`` blocks of each branch (a dry run on zeros in eval mode)."""
        widths, training = [], self.training
        self.eval()
        for m, blocks in self.blocks.items():
            x = torch.zeros(2, *shapes[m])
            if _frames(self.encoders[m]):
                x = x.flatten(0, 1)
            sizes = []
            for block in blocks:
                x = block(x)
                sizes.append(x.shape[1])
            widths.append(sizes[-k:])
        self.train(training)
        return widths

    def forward(self, batch, mask=(), feature_hook=None, caring: int | None = None) -> ModelOutput:
        inputs = batch.inputs if isinstance(batch, MultimodalData) else batch
        names, mask = list(self.encoders), set(mask)
        present = [m for m in names if m not in mask]
        xs, frames = {}, {}
        for m in present:
            x = inputs[m]
            if _frames(self.encoders[m]):
                frames[m] = x.shape[1]
                x = x.flatten(0, 1)
            for block in self.blocks[m][:self.joins[m]]:
                x = block(x)
            xs[m] = x
        for j, mmtm in enumerate(self.mmtms):
            for m in present:
                xs[m] = self.blocks[m][self.joins[m] + j](xs[m])
            squeezed = [self._per_sample(pooled(xs[m]), frames.get(m)) if m in xs else None for m in names]
            scales = mmtm(squeezed, caring)
            for m, s in zip(names, scales):
                if s is not None:
                    s = s.repeat_interleave(frames[m], 0) if m in frames else s
                    xs[m] = xs[m] * s.reshape(*s.shape, *[1] * (xs[m].dim() - 2))
        features = {m: self._per_sample(x, frames.get(m)) for m, x in xs.items()}
        if feature_hook is not None:
            features = {m: feature_hook(m, f) for m, f in features.items()}
        ref = inputs[next(iter(inputs))]
        logits, unimodal, extras = self._fuse(features, ref.shape[0], ref.device)
        return ModelOutput(logits, features, unimodal, extras)

    @staticmethod
    def _per_sample(x: torch.Tensor, frames: int | None) -> torch.Tensor:
        return x.unflatten(0, (-1, frames)).mean(1) if frames else x

    def branch_groups(self, heads: bool) -> dict[str, list[list[nn.Parameter]]]:
        """Parameters per branch: ``main`` (encoder, plus its head when ``heads``) and ``bypass`` (the MMTM layers
        feeding it: its excitations and the shared squeezes)."""
        shared = [p for t in self.mmtms for p in t.squeeze.parameters()]
        groups = {"main": [], "bypass": []}
        for i, m in enumerate(self.encoders):
            main = list(self.encoders[m].parameters())
            if heads:
                main += list(self.fusion.heads[m].parameters())
            groups["main"].append(main)
            groups["bypass"].append(shared + [p for t in self.mmtms for p in t.excite[i].parameters()])
        return groups


def speed_terms(groups: dict[str, list[list[nn.Parameter]]]) -> dict[str, list[float]]:
    """``|g|^2 / |w|^2`` of every group (a parameter without a gradient counts as a zero gradient)."""
    ratios = [sum(p.grad.pow(2).sum() for p in params if p.grad is not None) / sum(p.detach().pow(2).sum()
                                                                                   for p in params)
              for branches in groups.values() for params in branches]
    values = torch.stack(ratios).tolist()  # one device sync
    return {kind: values[2 * k:2 * k + 2] for k, kind in enumerate(groups)}


def speed_difference(bypass: list[float], main: list[float]) -> float:
    """``d = log10(M_bypass_0 / M_main_0) - log10(M_bypass_1 / M_main_1)``; 0 when a sum is not positive."""
    if min(*bypass, *main) <= 0:
        return 0.0
    return math.log10(bypass[0] / main[0]) - math.log10(bypass[1] / main[1])


@METHODS.register("greedy")
class Greedy(Method):
    """Greedy (ICML 2022): MMTM-joined branches; re-balancing steps for the branch that learns slower from itself."""

    max_modalities = 2
    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        epsilon: Annotated[float, NON_NEGATIVE] = 0.01
        window: Annotated[int, AT_LEAST_ONE] = 5
        starting_epoch: Annotated[int, NON_NEGATIVE] = 2
        mmtm_blocks: Annotated[int, AT_LEAST_ONE] = 3
        ratio: Annotated[int, AT_LEAST_ONE] = 4
        variant: str = "release"  # release | balancemm
        running_mean: str = "own"  # own | release (branch 1 uses branch 0's mean, the release's typo)

        def __post_init__(self):
            check_choices(self, variant=VARIANTS, running_mean=("own", "release"))

    def __init__(self, params=None):
        super().__init__(params)
        self.bypass = [0.0, 0.0]  # M_bypass per branch
        self.main = [0.0, 0.0]  # M_main per branch
        self.d = 0.0
        self.curation = False
        self.caring = 0
        self.curation_step = 0

    def check_spec(self, spec):
        super().check_spec(spec)
        if len(spec.modalities) != 2:
            raise MMBenchError(f"method 'greedy' joins exactly two modalities, the data has {len(spec.modalities)}; "
                               "choose two with --modalities")
        if self.params.variant == "balancemm" and not FUSIONS.get(spec.config.fusion).decomposable:
            raise MMBenchError("method 'greedy' with variant=balancemm needs a decomposable fusion (concat, sum, "
                               f"late), got model.fusion={spec.config.fusion!r}")

    def build_model(self, spec):
        if self.params.variant == "release":  # one head per branch, prediction = their mean
            spec = ModelSpec(spec.modalities, spec.num_classes, dataclasses.replace(spec.config, fusion="late"))
        shapes = {m: s.shape for m, s in spec.modalities.items()}
        return GreedyModel(build_model(spec), self.params.mmtm_blocks, self.params.ratio, shapes,
                           self.params.running_mean == "release")

    def forward(self, model, batch, state):
        return model(batch, caring=self.caring if self.curation else None)

    def loss(self, model, batch, out, state):
        if self.params.variant == "release":
            loss = sum(F.cross_entropy(z, batch.labels) for z in out.unimodal_logits.values())
        else:
            loss = F.cross_entropy(out.logits, batch.labels)
        names = list(out.features)
        logs = {"curation": float(self.curation), **{f"caring_{m}": float(self.curation and self.caring == i)
                                                     for i, m in enumerate(names)}}
        return loss, logs

    def after_backward(self, model, batch, out, state):
        p = self.params
        if self.curation:
            self.curation_step += 1
            if self.curation_step == p.window:
                self.curation = False
            return {"d_speed": self.d}
        terms = speed_terms(model.branch_groups(heads=p.variant == "release"))
        self.bypass = [a + b for a, b in zip(self.bypass, terms["bypass"])]
        self.main = [a + b for a, b in zip(self.main, terms["main"])]
        self.d = speed_difference(self.bypass, self.main)
        if state.epoch >= p.starting_epoch and abs(self.d) > p.epsilon:
            self.curation, self.caring, self.curation_step = True, 0 if self.d > 0 else 1, 0
        else:
            self.curation, self.caring = False, 0
        return {"d_speed": self.d}

