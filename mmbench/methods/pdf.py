"""PDF: Predictive Dynamic Fusion.

Cao, Xia, Ding, Zhang, Hu. *Predictive Dynamic Fusion*. ICML 2024, arXiv 2406.04802. Official code:
https://github.com/Yinan-Xia/PDF (Apache-2.0), line-checked at 8648674 (``src/models/latefusion_pdf.py``
``MultimodalLateFusionClf_pdf``; ``train_pdf.py`` ``model_forward`` / ``get_optimizer``; ``test_pdf.py``;
``shells/batch_train_latefusion_pdf.sh``). Equality with the release, measured: ``docs/methods/pdf.md``.

From the official code:
- late fusion of per-modality classifiers (one linear head per modality on the encoder's features);
- Mono-Confidence: per modality a ConfidNet (``Linear(d, 2d)``, ``Linear(2d, d)``, ``Linear(d, 1)``, no
  activations between them, then a sigmoid) on the **detached** features predicts the true-class
  probability ``tcp_m``; trained by ``L1(tcp_m, p_m[y].detach())``;
- Holo-Confidence ``h_m = sum_{j != m} log tcp_j / (sum_j log tcp_j + 1e-8)`` (two modalities: the
  release's ``log(tcp_other) / (log(tcp_txt * tcp_img) + 1e-8)``);
- Co-Belief ``cb_m = tcp_m + h_m`` (detached), fusion weights ``w = softmax_m(cb)``, fused logits
  ``sum_m w_m.detach() * z_m``;
- loss ``sum_m CE(z_m) + CE(fused) + sum_m L1_m``;
- relative calibration at test time (``test_pdf.py --du true``): the distance of each modality's
  softmax from uniform ``du_m = mean_k |p_mk - 1/K|``; the less certain modality's Co-Belief is
  scaled by ``du_m / du_max`` (the most certain one keeps 1) before the softmax;
- the scripts' weight decay 1 applies to one ConfidNet layer per modality only (``get_optimizer``'s
  ``decay`` list: the text ConfidNet's first layer, the image ConfidNet's second), everything else 0.

mmbench's choices:
- The ConfidNet weight decay is the loss term ``confidnet_weight_decay / 2 * ||W||^2`` on those layers
  (the first modality's layer 0, every other modality's layer 1): the gradient Adam's coupled weight
  decay adds, so the steps are the release's; logged as ``confidnet_decay``. With ``optim.grad_clip``
  set, the term's gradient is clipped with the others (the release has no clipping).
- Calibration applies whenever the model is in eval mode (validation included; the release's
  validation during training runs uncalibrated, its test script calibrated). Where every modality's
  prediction is exactly uniform (``du_max = 0``, 0/0 in the release) the factors are 1.
- More than two modalities: every rule above is per modality; the calibration factor is
  ``du_m / max_j du_j`` (for two modalities exactly the release's two cases).
- A masked (absent) modality has no term: the weights are a softmax over the modalities present.
- Text-image only in the release; RGB-D recipes reuse QMF's RGB-D optimiser (docs/methods/pdf.md).

Logged per epoch: ``tcp_loss_<m>`` (L1), ``tcp_<m>`` (mean predicted true-class probability),
``weight_<m>`` (mean fusion weight), ``confidnet_decay``. ``ModelOutput.extras`` holds each sample's
``tcp_<m>`` and ``weight_<m>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import NON_NEGATIVE
from mmbench.methods.base import Method
from mmbench.models.multimodal import HeadFusionModel, ModelSpec, configured_encoders
from mmbench.registry import METHODS


def confidnet(dim: int) -> nn.Sequential:
    """The release's ConfidNet: three linear layers without activations, then a sigmoid."""
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim), nn.Linear(dim, 1), nn.Sigmoid())


def co_belief(tcp: torch.Tensor) -> torch.Tensor:
    """``cb_m = tcp_m + h_m`` from the Mono-Confidences ``tcp`` ``[B, M]``; Holo-Confidence
    ``h_m = sum_{j != m} log tcp_j / (sum_j log tcp_j + 1e-8)``."""
    logs = torch.log(tcp)
    total = logs.sum(1, keepdim=True)
    return tcp + (total - logs) / (total + 1e-8)


def relative_calibration(probs: torch.Tensor) -> torch.Tensor:
    """Factors ``[B, M]`` for the Co-Belief from the modalities' class probabilities ``probs`` ``[B, M, K]``:
    ``du_m / max_j du_j`` with ``du_m = mean_k |p_mk - 1/K|`` (1 where every ``du`` is 0)."""
    du = (probs - 1 / probs.shape[2]).abs().mean(2)
    top = du.max(1, keepdim=True).values
    return torch.where(top > 0, du / torch.where(top > 0, top, torch.ones_like(top)), torch.ones_like(du))


class PDFHead(nn.Module):
    """Linear classifier and ConfidNet per modality; fused logits weighted by the softmax of the Co-Beliefs
    (calibrated in eval mode when ``calibrate``)."""

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int, calibrate: bool):
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Linear(feature_dim, num_classes) for m in modalities})
        self.confidnets = nn.ModuleDict({m: confidnet(feature_dim) for m in modalities})
        self.num_classes, self.calibrate = num_classes, calibrate

    def forward(self, features, batch_size, device):
        unimodal = {m: self.heads[m](f) for m, f in features.items()}
        if not unimodal:
            return torch.zeros(batch_size, self.num_classes, device=device), unimodal, {}
        mods = list(unimodal)
        tcp = torch.cat([self.confidnets[m](features[m].detach()) for m in mods], 1)  # [B, M]
        belief = co_belief(tcp.detach())
        if self.calibrate and not self.training:
            probs = torch.stack([F.softmax(unimodal[m], 1) for m in mods], 1)
            belief = belief * relative_calibration(probs)
        weights = F.softmax(belief, 1).detach()
        fused = sum(weights[:, i, None] * unimodal[m] for i, m in enumerate(mods))
        extras = {f"tcp_{m}": tcp[:, i] for i, m in enumerate(mods)}
        extras.update({f"weight_{m}": weights[:, i] for i, m in enumerate(mods)})
        return fused, unimodal, extras


@METHODS.register("pdf")
class PDF(Method):
    """PDF (ICML 2024): late fusion weighted by predicted Co-Beliefs, relative calibration at test time."""

    trains_unimodal_heads = True

    @dataclass(frozen=True)
    class Params:
        confidnet_weight_decay: Annotated[float, NON_NEGATIVE] = 1.0  # shells --weight_decay 1 (one layer per ConfidNet)
        calibrate: bool = True  # test_pdf.py --du true: relative calibration at evaluation

    def build_model(self, spec: ModelSpec) -> HeadFusionModel:
        head = PDFHead(list(spec.modalities), spec.config.feature_dim, spec.num_classes, self.params.calibrate)
        return HeadFusionModel(configured_encoders(spec), head)

    def loss(self, model, batch, out, state):
        y = batch.labels
        total = F.cross_entropy(out.logits, y)
        logs = {}
        for m, z in out.unimodal_logits.items():
            target = F.softmax(z, 1).gather(1, y[:, None]).squeeze(1).detach()
            tcp_loss = F.l1_loss(out.extras[f"tcp_{m}"], target)
            total = total + F.cross_entropy(z, y) + tcp_loss
            logs[f"tcp_loss_{m}"] = tcp_loss.item()
            logs[f"tcp_{m}"] = out.extras[f"tcp_{m}"].mean().item()
            logs[f"weight_{m}"] = out.extras[f"weight_{m}"].mean().item()
        decay = self._decay(model)
        logs["confidnet_decay"] = decay.item()
        return total + decay, logs

    def _decay(self, model) -> torch.Tensor:
        """``wd / 2 * ||W||^2`` on the release's decayed ConfidNet layers (first modality: layer 0, others: 1)."""
        nets = model.fusion.confidnets
        weights = [net[0 if i == 0 else 1].weight for i, net in enumerate(nets.values())]
        return self.params.confidnet_weight_decay / 2 * sum(w.pow(2).sum() for w in weights)
