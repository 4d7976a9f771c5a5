"""MLA: Multimodal Learning with Alternating Unimodal Adaptation.

Zhang, Yoon, Bansal, Yao. *Multimodal Representation Learning by Alternating Unimodal
Adaptation*. CVPR 2024, arXiv 2311.10707.
Official code: https://github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation
(``main.py`` ``train_epoch`` / ``valid`` with ``--gs_flag --dynamic``, ``utils/utils.py``
``GSPlugin``; commit 11ae1ee).

From the official code:
- one encoder per modality and **one head shared by all** (``fusion_module.fc_out``); training
  alternates unimodal steps, each ``CE(head(f_m), y)`` for one modality ``m``;
- gradient modification of the shared head's weight (OWM-style projector ``P``, ``D x D``, from
  the identity): with ``r`` the batch mean of the current modality's features and
  ``a = 0.1 ** (1 + batch_index / batches_per_epoch)``,
  ``k = P r^T``, ``P <- P - k k^T / (a + r k)``, ``P <- P / ||P||_F``, then ``grad W <- grad W P^T``;
  skipped on the very first update of the run; the bias is not projected;
- test-time fusion ``sum_m lambda_m z_m`` of the head's logits, with entropies
  ``e_m = -sum_c p_c log p_c`` and ``lambda_m = exp(max_j e_j - e_m) / sum_i exp(max_j e_j - e_i)``
  (= softmax over modalities of ``-e_m``), so the more certain modality weighs more; it is the
  model's own fusion (:class:`SharedHead`), so masked and corrupted evaluations use it too.
  ``fusion="mean"`` is the release's fixed fusion with ``av_alpha = 0.5``.

Quirks of the release, and what mmbench does:
- *The projection never runs* (bug). ``GSPlugin.before_update`` receives the ``nn.Linear``
  head and tests ``name == "module.weight"``, but the head's parameter is named ``"weight"``, so
  ``P`` is never updated and no gradient is projected. Default ``projection="owm"`` applies the
  rule above (the paper's gradient modification; a fork fixes the name the same way);
  ``projection="none"`` reproduces what the release executes; ``projection="balancemm"`` is
  BalanceMM's variant ``grad W <- grad W + grad W P^T``.
- *Batch-level entropy* (bug). ``calculate_entropy`` takes the softmax over the **batch** axis
  and sums over the whole batch, giving one weight per modality per evaluation batch, so a
  prediction depends on the other test samples in its batch. mmbench uses per-sample entropies
  over classes (as BalanceMM); the release form is not offered.
- *Alternation granularity* [mmbench choice]. The release takes, for every batch, one optimiser
  step per modality in turn (``M`` steps per batch). mmbench's trainer takes one step per batch,
  so step ``t`` trains modality ``t mod M``: an epoch gives each modality ``1/M`` of the batches,
  and ``M`` times the epochs match the release's number of updates.
- *More than two modalities*: the release runs three (``--modal3``) the same way; mmbench cycles
  over all ``M`` in dataset order.
- ``log_softmax`` is used for the entropy (the release's ``log(softmax)`` gives NaN on underflow).
- Model selection is on the validation split (the release selects on the test loader).

Defaults: ``fusion="dynamic"``, ``projection="owm"``. Release optimiser: SGD lr 1e-3, momentum 0.9,
weight decay 1e-4, StepLR(70, 0.1), batch 64, 100 epochs (in the recipes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.methods.base import Method, check_choices
from mmbench.methods.modulation import HeadFusionModel
from mmbench.models.multimodal import ModelSpec, configured_encoders
from mmbench.registry import METHODS

FUSIONS = ("dynamic", "mean")
PROJECTIONS = ("owm", "none", "balancemm")


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


@METHODS.register("mla")
class MLA(Method):
    """MLA (CVPR 2024): alternating unimodal steps through a shared head, entropy-weighted test-time fusion."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        fusion: str = "dynamic"  # dynamic | mean
        projection: str = "owm"  # owm | none (the release as it runs) | balancemm

        def __post_init__(self):
            check_choices(self, fusion=FUSIONS, projection=PROJECTIONS)

    def __init__(self, params=None):
        super().__init__(params)
        self.projector: torch.Tensor | None = None  # the head's gradient projector P (training state)

    def build_model(self, spec: ModelSpec) -> HeadFusionModel:
        head = SharedHead(spec.config.feature_dim, spec.num_classes, self.params.fusion)
        return HeadFusionModel(configured_encoders(spec), head)

    @staticmethod
    def current(model: HeadFusionModel, state) -> str:
        """The modality trained at this step: ``modalities[step mod M]``."""
        return model.modalities[state.step % len(model.modalities)]

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
        a = 0.1 ** (1 + (state.step % steps) / steps)
        r = out.features[self.current(model, state)].detach().mean(0, keepdim=True)  # [1, D]
        p = self.projector if self.projector is not None else torch.eye(r.shape[1], device=r.device)
        k = p @ r.T
        p = p - (k @ k.T) / (a + r @ k)
        self.projector = p / p.norm()
        weight = model.fusion.linear.weight
        projected = weight.grad @ self.projector.T
        weight.grad = projected if self.params.projection == "owm" else weight.grad + projected
        return {}
