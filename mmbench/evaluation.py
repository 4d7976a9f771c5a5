"""Evaluation of a trained model on a split: fused, per-head and masking-based accuracy, and the
imbalance diagnostics of a trained model: exact Shapley contributions and linear probes.

- **Shapley** (BalanceBenchmark's modality-level measure): ``v(S)`` is the accuracy of the
  fused model with every modality outside ``S`` masked, for every non-empty ``S``; the empty
  coalition's value is chance, ``v({}) = 1 / num_classes`` (the accuracy expected of a uniform
  prior), for every fusion head. With every modality masked a model predicts one constant class
  whose accuracy is that class's share of the data, and which class it is depends on the head's
  biases (concat: its bias; sum: the sum of the heads' biases; late: their mean; gated/FiLM: the
  head applied to zeros), so ``phi`` and the imbalance degree would differ in meaning across heads.
  Hence ``sum_m phi_m = v(all) - 1 / num_classes`` (the accuracy above chance) whatever the head;
  a modality the model ignores gets ``phi = 0`` on class-balanced data (elsewhere it shares the
  constant prediction's excess over chance). ``phi_m`` is the exact Shapley value
  over all ``2^M`` subsets (:func:`mmbench.measures.shapley_values`); the *imbalance degree*
  is ``(max phi - min phi) / sum |phi|`` (:func:`mmbench.measures.imbalance_degree`).
  Masked passes call the model directly, so a method's test-time ``predict`` rule is not
  part of ``v(S)``.
- **Linear probe**: each frozen encoder's features (eval mode) feed a multinomial logistic
  regression on ``train``; its inverse regularisation ``C`` is chosen on ``val``; the score
  is its accuracy on ``test``. It measures how well the encoder itself learned, whatever the
  fusion and heads did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from mmbench.data.types import MultimodalData
from mmbench.measures import imbalance_degree, shapley_values
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


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model`` in eval mode inside the block (norm layers' running statistics, no dropout), then back
    in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


PROBE_C = (0.01, 0.1, 1.0, 10.0)


@torch.no_grad()
def shapley(model: torch.nn.Module, data: MultimodalData, batch_size: int = 512) -> dict[str, float]:
    """``shapley_<m>`` per modality and ``imbalance`` (the imbalance degree), from masked accuracies.

    Each batch is encoded once and its coalitions re-fused (:meth:`MultimodalModel.fuse_coalitions`),
    which is what masked forward passes compute.
    """
    model.eval()
    modalities = list(model.modalities)
    preds: dict[frozenset, list[torch.Tensor]] = {}
    for batch in data.batches(batch_size):
        features = {m: model.encoders[m](batch.inputs[m]) for m in modalities}
        for subset, logits in model.fuse_coalitions(features).items():
            preds.setdefault(subset, []).append(logits.argmax(1))
    value = {s: accuracy(torch.cat(p), data.labels) for s, p in preds.items()}
    value[frozenset()] = 1.0 / data.meta.num_classes  # one convention for every head (module docstring)
    phi = shapley_values(value, modalities)
    return {**{f"shapley_{m}": v for m, v in phi.items()}, "imbalance": imbalance_degree(phi)}


@torch.no_grad()
def encode(model: torch.nn.Module, data: MultimodalData, modality: str, batch_size: int = 512) -> np.ndarray:
    model.eval()
    encoder = model.encoders[modality]
    return torch.cat([encoder(b.inputs[modality]).float().cpu() for b in data.batches(batch_size)]).numpy()


def linear_probe(model: torch.nn.Module, splits: dict[str, MultimodalData], modality: str,
                 batch_size: int = 512, seed: int = 0) -> dict[str, float]:
    """Probe one frozen encoder: ``{"C": chosen on val, "val": accuracy, "test": accuracy}``."""
    feats = {s: encode(model, d, modality, batch_size) for s, d in splits.items()}
    labels = {s: d.labels.cpu().numpy() for s, d in splits.items()}
    scaler = StandardScaler().fit(feats["train"])
    x = {s: scaler.transform(f) for s, f in feats.items()}
    best = None
    for c in PROBE_C:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x["train"], labels["train"])
        val = float((clf.predict(x["val"]) == labels["val"]).mean())
        if best is None or val > best[0]:
            best = (val, c, clf)
    val, c, clf = best
    return {"C": c, "val": val, "test": float((clf.predict(x["test"]) == labels["test"]).mean())}


def probe_all(model: torch.nn.Module, splits: dict[str, MultimodalData], batch_size: int = 512,
              seed: int = 0) -> dict[str, dict[str, float]]:
    return {m: linear_probe(model, splits, m, batch_size, seed) for m in model.encoders}
