"""Diagnosing & Re-learning: soft re-initialisation of each encoder by its diagnosed learning state.

Wei, Li, Feng, Hu. *Diagnosing and Re-learning for Balanced Multimodal Learning*. ECCV 2024,
arXiv 2407.09705. Official code: https://github.com/GeWu-Lab/Diagnosing_Relearning_ECCV2024
(commit 025085e, ``code/ours.py``, ``code/script/ours.sh``); BalanceBenchmark
(GeWu-Lab/BalanceBenchmark @ 4c1482f, ``balancemm/trainer/ReLearning_trainer.py``) ports it.

From the official code:
- training is plain cross-entropy on the fused prediction;
- every ``reinit_epoch`` epochs (after epoch ``e`` with ``e % reinit_epoch == 0``, ``e > 0``, at most
  ``reinit_num`` times) each modality's encoder features of the training and the validation split are
  scaled to [-1, 1] per dimension, clustered by k-means into as many clusters as classes
  (``random_state=0``) and scored by *purity* (the share of samples whose cluster's majority class is
  theirs); the learning state is the gap ``|purity_train - purity_val|`` (a well-learnt modality
  separates its training data better than unseen data);
- re-init strength ``alpha_m = tanh(move_lambda * gap_m)``; every parameter of encoder ``m`` becomes
  ``alpha_m * theta_init + (1 - alpha_m) * theta`` (``theta_init``: the weights before training);
- ``move_lambda`` 3, ``reinit_epoch`` 20, ``reinit_num`` 3 (``ours.sh``, also the argparse defaults).
The release re-initialises after that epoch's evaluation; ``variant="balancemm"`` does so before it, as
BalanceBenchmark does (whose settings are ``reinit_epoch`` 15, ``reinit_num`` 2, ``configs/trainer_config.yaml``).

Reconstructed: k-means restarts ``n_init`` 10 (scikit-learn's default before 1.4; the release pins no
version; BalanceBenchmark pins 1.4.2, whose ``"auto"`` is 1 restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.preprocessing import MinMaxScaler

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE
from mmbench.evaluation import encode, eval_mode
from mmbench.methods.base import Method, check_choices
from mmbench.registry import METHODS

VARIANTS = ("release", "balancemm")


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Share of samples whose cluster's most frequent label is their own (ties: the smallest label)."""
    _, y = np.unique(labels, return_inverse=True)
    _, c = np.unique(clusters, return_inverse=True)
    counts = np.zeros((c.max() + 1, y.max() + 1), dtype=np.int64)
    np.add.at(counts, (c, y), 1)
    return float(counts.max(1).sum() / len(y))


def cluster_purity(features: np.ndarray, labels: np.ndarray, num_classes: int, n_init: int) -> float:
    """Purity of k-means (``num_classes`` clusters, seed 0) on features min-max scaled to [-1, 1]."""
    scaled = MinMaxScaler(feature_range=(-1, 1)).fit_transform(features)
    clusters = KMeans(n_clusters=num_classes, random_state=0, n_init=n_init).fit_predict(scaled)
    return purity(labels, clusters)


def reinit_strength(purity_train: float, purity_val: float, move_lambda: float) -> float:
    """``tanh(move_lambda * |purity_train - purity_val|)``."""
    return float(np.tanh(move_lambda * abs(purity_train - purity_val)))


@METHODS.register("relearning")
class Relearning(Method):
    """Diagnosing & Re-learning (ECCV 2024): encoders softly re-initialised by their clustering purity gap."""

    reconstructed: ClassVar[tuple[str, ...]] = ("k-means restarts (n_init; the release pins no scikit-learn)",)

    @dataclass(frozen=True)
    class Params:
        move_lambda: Annotated[float, NON_NEGATIVE] = 3.0
        reinit_epoch: Annotated[int, AT_LEAST_ONE] = 20
        reinit_num: Annotated[int, NON_NEGATIVE] = 3
        n_init: Annotated[int, AT_LEAST_ONE] = 10
        variant: str = "release"  # release | balancemm

        def __post_init__(self):
            check_choices(self, variant=VARIANTS)

    def __init__(self, params=None):
        super().__init__(params)
        self.init_weights: dict[str, torch.Tensor] | None = None  # encoder parameters before training

    def due(self, epoch: int) -> bool:
        """Whether the re-init follows the training of ``epoch``."""
        p = self.params
        return epoch > 0 and epoch % p.reinit_epoch == 0 and epoch // p.reinit_epoch <= p.reinit_num

    def on_epoch_start(self, state):
        if self.init_weights is None:
            self.init_weights = {k: v.detach().clone() for k, v in state.model.encoders.named_parameters()}
        if self.params.variant == "release" and self.due(state.epoch - 1):
            self.relearn(state)

    def on_epoch_end(self, state):
        if self.params.variant == "balancemm" and self.due(state.epoch):
            self.relearn(state)

    def diagnose(self, model, train, val, batch_size: int) -> dict[str, dict[str, float]]:
        """Per modality: ``purity_train``, ``purity_val`` and the re-init ``strength``."""
        p, out = self.params, {}
        with eval_mode(model):
            for m in model.encoders:
                purities = [cluster_purity(encode(model, d, m, batch_size), d.labels.cpu().numpy(),
                                           d.meta.num_classes, p.n_init) for d in (train, val)]
                out[m] = {"purity_train": purities[0], "purity_val": purities[1],
                          "strength": reinit_strength(*purities, p.move_lambda)}
        return out

    def relearn(self, state) -> None:
        model = state.model
        diagnosis = self.diagnose(model, state.train, state.val, state.batch_size * 4)
        with torch.no_grad():
            for m, encoder in model.encoders.items():
                a = diagnosis[m]["strength"]
                for name, param in encoder.named_parameters():
                    param.copy_(a * self.init_weights[f"{m}.{name}"] + (1 - a) * param)
        state.epoch_logs.update({f"{k}_{m}": v for m, d in diagnosis.items() for k, v in d.items()})

    def loss(self, model, batch, out, state):
        return F.cross_entropy(out.logits, batch.labels), {}
