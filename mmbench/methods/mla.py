"""MLA: Multimodal Learning with Alternating Unimodal Adaptation.

Zhang, Yoon, Bansal, Yao. *Multimodal Representation Learning by Alternating Unimodal
Adaptation*. CVPR 2024, arXiv 2311.10707.
Official code: https://github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation
(``main.py`` ``train_epoch`` / ``valid`` with ``--gs_flag --dynamic``, ``utils/utils.py``
``GSPlugin``; commit ab6c184). Sources, deviations and the differential check: ``docs/methods/mla.md``.

From the official code:
- one encoder per modality and **one head shared by all** (``fusion_module.fc_out``); for every
  batch, the encoders run once, then one optimiser step per modality in turn, each on
  ``CE(head(f_m), y)`` through the head as the previous step left it (``M`` steps per batch:
  :meth:`MLA.steps_per_batch`);
- gradient modification of the shared head's weight by a projector ``P`` (``D x D``, from the
  identity, shared by the modalities): with ``r`` the batch mean of the current modality's
  features (``1 x D``) and ``a = 0.1 ** (1 + batch_index / batches_per_epoch)``,
  ``k = P r^T``, ``P <- P - (k k^T) / (a + k r)`` where ``k r`` is the ``D x D`` outer product
  and the division is elementwise, ``P <- P / ||P||_F``; skipped on the very first update of
  the run; the bias is not projected. ``projection="release"`` (default) then sets
  ``grad W <- grad W P^T`` (``GSPlugin.before_update``); ``"balancemm"`` adds it,
  ``grad W <- grad W + grad W P^T`` (BalanceMM ``MLA_trainer.py``, commit 4c1482f);
- test-time fusion ``sum_m lambda_m z_m`` of the head's logits with
  ``lambda_m = exp(max_j e_j - e_m) / sum_i exp(max_j e_j - e_i)`` (= softmax over modalities of
  ``-e_m``), ``e_m`` the entropy of ``softmax(z_m)``, so the more certain modality weighs more;
  it is the model's own fusion (:class:`SharedHead`), so masked and corrupted evaluations use it
  too. ``fusion="mean"`` is the release's fixed fusion with ``av_alpha = 0.5``.

Where the default departs from what the release executes (:attr:`MLA.reconstructed`):
- *The release never projects* (bug). ``before_update`` receives the ``nn.Linear`` head and tests
  ``name == "module.weight"``, but the head's parameter is named ``"weight"``. The default applies
  the release's formula (the paper's gradient modification); ``projection="none"`` is what the
  release executes.
- *Per-sample entropies.* The release's ``calculate_entropy`` takes the softmax over the **batch**
  axis and sums over the batch: one weight per modality per evaluation batch, so a prediction
  depends on the other test samples. mmbench uses per-sample entropies over classes (as BalanceMM);
  the release's form is not offered.
Smaller differences: ``P`` starts as the ``D x D`` identity (the release: 512, its feature width);
with the release's pinned torch 1.8, ``zero_grad`` leaves zero gradients (not None), so SGD's
momentum and weight decay also move the encoders of the modalities already stepped on that batch;
mmbench (and torch >= 2) leaves them untouched. ``log_softmax`` is used for the entropy (the
release's ``log(softmax)`` gives NaN on underflow). Model selection is on the validation split
(the release selects on the test loader). More than two modalities: the release's ``--modal3``
order, generalised (dataset order).

Defaults: ``fusion="dynamic"``, ``projection="release"``. Release optimiser: SGD lr 1e-3, momentum
0.9, weight decay 1e-4, StepLR(70, 0.1), batch 64, 100 epochs (in the recipes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.methods.base import Method, check_choices
from mmbench.models.multimodal import HeadFusionModel, ModelOutput, ModelSpec, configured_encoders
from mmbench.registry import METHODS

FUSIONS = ("dynamic", "mean")
PROJECTIONS = ("release", "balancemm", "none")


def entropy_weights(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-sample ``lambda_m = softmax_m(-e_m)``, ``e_m`` the entropy of ``softmax(z_m)`` over classes."""
    entropy = torch.stack([-(F.softmax(z, 1) * F.log_softmax(z, 1)).sum(1) for z in logits.values()])
    return dict(zip(logits, torch.softmax(-entropy, dim=0)))


class SharedHead(nn.Module):
    """One ``Linear(feature_dim, classes)`` for every modality; fused logits ``sum_m lambda_m z_m`` over
    the modalities present, with the per-sample weights in ``extras["weight_<m>"]``."""

    def __init__(self, feature_dim: int, num_classes: int, fusion: str):
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_classes)
        self.rule = fusion

    def forward(self, features: dict[str, torch.Tensor], batch_size: int, device):
        unimodal = {m: self.linear(f) for m, f in features.items()}
        if not unimodal:
            return torch.zeros(batch_size, self.linear.out_features, device=device), {}, {}
        if self.rule == "dynamic":
            weights = entropy_weights(unimodal)
        else:
            weights = {m: torch.full_like(z[:, 0], 1 / len(unimodal)) for m, z in unimodal.items()}
        logits = sum(weights[m][:, None] * z for m, z in unimodal.items())
        return logits, unimodal, {f"weight_{m}": w for m, w in weights.items()}


def update_projector(p: torch.Tensor, r: torch.Tensor, a: float) -> torch.Tensor:
    """The release's recursion: ``k = P r^T``, ``P - (k k^T) / (a + k r)`` (elementwise over the ``D x D``
    outer product ``k r``), normalised to unit Frobenius norm; ``r`` is ``1 x D``."""
    k = p @ r.T
    p = p - (k @ k.T) / (a + k @ r)
    return p / p.norm()


@METHODS.register("mla")
class MLA(Method):
    """MLA (CVPR 2024): alternating unimodal steps through a shared head, entropy-weighted fusion."""

    trains_unimodal_heads = True
    reconstructed: ClassVar[tuple[str, ...]] = (
        "head-gradient projection applied (the release's parameter-name check never runs it)",
        "per-sample entropy fusion weights (the release: one weight per modality per test batch)")

    @dataclass(frozen=True)
    class Params:
        fusion: str = "dynamic"  # dynamic | mean
        projection: str = "release"  # release | balancemm | none (what the release executes)

        def __post_init__(self):
            check_choices(self, fusion=FUSIONS, projection=PROJECTIONS)

    def __init__(self, params=None):
        super().__init__(params)
        self.projector: torch.Tensor | None = None  # the head's gradient projector P (training state)
        self._features: dict[str, torch.Tensor] | None = None  # this batch's features, between its steps

    def build_model(self, spec: ModelSpec) -> HeadFusionModel:
        head = SharedHead(spec.config.feature_dim, spec.num_classes, self.params.fusion)
        return HeadFusionModel(configured_encoders(spec), head)

    def steps_per_batch(self, model) -> int:
        return len(model.modalities)

    @staticmethod
    def current(model: HeadFusionModel, state) -> str:
        """The modality trained at this step: ``modalities[substep]``."""
        return model.modalities[state.substep]

    def forward(self, model, batch, state):
        """The encoders run once per batch; later steps re-apply the updated head to those features."""
        if state.substep == 0:
            out = model(batch)
            features = out.features
        else:
            features = self._features
            logits, unimodal = model.fuse(features)
            out = ModelOutput(logits, features, unimodal, {})
        self._features = features if state.substep + 1 < len(model.modalities) else None
        return out

    def loss(self, model, batch, out, state):
        current = self.current(model, state)
        losses = {m: F.cross_entropy(z, batch.labels) for m, z in out.unimodal_logits.items()}
        logs = {f"loss_{m}": v.item() for m, v in losses.items()}
        logs.update({f"trained_{m}": float(m == current) for m in losses})
        return losses[current], logs

    @torch.no_grad()
    def after_backward(self, model, batch, out, state):
        if self.params.projection == "none" or state.step == 0:
            return {}
        steps = max(math.ceil(len(state.train) / state.batch_size), 1)
        a = 0.1 ** (1 + (state.step // len(model.modalities)) % steps / steps)
        r = out.features[self.current(model, state)].detach().mean(0, keepdim=True)  # [1, D]
        p = self.projector if self.projector is not None else torch.eye(r.shape[1], dtype=r.dtype, device=r.device)
        self.projector = update_projector(p, r, a)
        weight = model.fusion.linear.weight
        projected = weight.grad @ self.projector.T
        weight.grad = projected if self.params.projection == "release" else weight.grad + projected
        return {}
