"""Unimodal models side by side, for the methods of Du et al. (ICML 2023) and the linear probe.

- :func:`unimodal_ensemble`: one unimodal model per modality (its configured encoder and its own
  ``Linear(feature_dim, classes)`` head, the ``late`` fusion); the fused logits are the mean of the
  present members' logits. Members share no parameter and each sees only its own modality, so a sum
  of their cross-entropies gives every member exactly the gradient it would get trained alone.
- :func:`fit_unimodal`: train each modality of a model alone (the others masked) with
  ``state.fit_copy``: UMT's teachers, the linear probe's ``encoders=unimodal``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from mmbench.methods.base import TrainState
from mmbench.models.multimodal import ModelSpec, MultimodalModel, build_model


def unimodal_ensemble(spec: ModelSpec) -> MultimodalModel:
    """The configured encoders with one linear head each, averaged (``late`` fusion): one model per modality."""
    return build_model(dataclasses.replace(spec, config=dataclasses.replace(spec.config, fusion="late")))


def unimodal_losses(out, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each member's cross-entropy on its own logits."""
    return {m: F.cross_entropy(z, labels) for m, z in out.unimodal_logits.items()}


def fit_unimodal(state: TrainState, model: MultimodalModel, epochs: int) -> None:
    """Train ``model`` one modality at a time, the others masked (their encoders do not run), for
    ``epochs`` each with the trainer's ``fit_copy``: a fresh optimizer and shuffle per modality."""
    for m in model.modalities:
        others = [o for o in model.modalities if o != m]
        state.fit_copy(model, lambda net, b, others=others: F.cross_entropy(net(b, mask=others).logits, b.labels),
                       state.train, epochs)
