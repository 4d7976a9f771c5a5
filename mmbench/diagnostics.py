"""Imbalance diagnostics of a trained model: exact Shapley contributions and linear probes.

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
  over all ``2^M`` subsets (:func:`mmbench.metrics.shapley_values`); the *imbalance degree*
  is ``(max phi - min phi) / sum |phi|`` (:func:`mmbench.metrics.imbalance_degree`).
  Masked passes call the model directly, so a method's test-time ``predict`` rule is not
  part of ``v(S)``.
- **Linear probe**: each frozen encoder's features (eval mode) feed a multinomial logistic
  regression on ``train``; its inverse regularisation ``C`` is chosen on ``val``; the score
  is its accuracy on ``test``. It measures how well the encoder itself learned, whatever the
  fusion and heads did.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mmbench.data.types import MultimodalData
from mmbench.metrics import accuracy, imbalance_degree, shapley_values

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
