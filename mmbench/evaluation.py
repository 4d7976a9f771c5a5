"""Evaluation of a trained model on a split: fused, per-head and masking-based accuracy."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from mmbench.data.types import MultimodalData
from mmbench.methods.base import Method
from mmbench.metrics import accuracy, macro_f1


@torch.no_grad()
def predict(model: torch.nn.Module, method: Method, data: MultimodalData, batch_size: int = 512,
            mask: Iterable[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Fused and unimodal logits for every sample (no sample dropped), in eval mode."""
    model.eval()
    mask = tuple(mask)
    fused, unimodal = [], {}
    for batch in data.batches(batch_size):
        out = method.predict(model, batch) if not mask else model(batch, mask=mask)
        fused.append(out.logits.float())
        for m, z in out.unimodal_logits.items():
            unimodal.setdefault(m, []).append(z.float())
    logits = torch.cat(fused)
    assert len(logits) == len(data), "evaluation must see every sample"
    return logits, {m: torch.cat(z) for m, z in unimodal.items()}


def fused_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """``acc``, ``f1`` (macro) and ``loss`` (cross-entropy) of fused logits."""
    pred = logits.argmax(1)
    return {"acc": accuracy(pred, labels), "f1": macro_f1(pred, labels, num_classes),
            "loss": F.cross_entropy(logits, labels).item()}


def evaluate(model: torch.nn.Module, method: Method, data: MultimodalData, batch_size: int = 512,
             masking: bool = False) -> dict[str, float]:
    """``acc``, ``f1`` (macro), ``loss``, ``acc_<m>`` per unimodal head; with ``masking``, also
    ``acc_masked_<m>``: the fused model's accuracy with every other modality masked."""
    logits, unimodal = predict(model, method, data, batch_size)
    y = data.labels
    metrics = fused_metrics(logits, y, data.meta.num_classes)
    metrics.update({f"acc_{m}": accuracy(z.argmax(1), y) for m, z in unimodal.items()})
    modalities = list(model.modalities)
    if masking and len(modalities) > 1:
        for m in modalities:
            masked, _ = predict(model, method, data, batch_size, mask=[o for o in modalities if o != m])
            metrics[f"acc_masked_{m}"] = accuracy(masked.argmax(1), y)
    return metrics
