"""PMR: Prototypical Modal Rebalance.

Fan et al. *PMR: Prototypical Modal Rebalance for Multimodal Learning*.
CVPR 2023, arXiv 2211.07089.
Official code: https://github.com/fanyunfeng-bit/Modal-Imbalance-PMR (commit 3615e48;
``main_Prototype_grad.py``, the script the released shell commands run).

From the official code (equal step for step on identical tensors: ``docs/methods/pmr.md``):
- a class prototype is the mean encoder feature of the class, computed in eval mode without
  gradients over the first ``len(loader) // 10`` batches of the shuffled training loader
  (l.383-441); computed once before epoch 0 and after every epoch, so epoch e trains with the
  prototypes of the end of epoch e - 1 (l.531-557); EMA ``p <- (1 - m) p_new + m p_old``, except
  the update after epoch 0, which replaces (l.435-440);
- prototype logits ``-||f_m - p_{m,c}||`` (Euclidean distance, no temperature: ``--temperature``
  is unused); ``s^p_m = sum_batch softmax(-dist_m)[y]``, ``rho = s^p_a / s^p_v`` (l.152-160);
- loss ``CE(out) + beta CE(-dist_a, y) + lambda CE(-dist_v, y)`` with the release's **binary**
  weights: the weaker modality (``rho < 1`` for audio) gets ``alpha``, the other 0, a tie neither
  (l.169-178); plain ``CE(out)`` outside the inclusive window ``modulation_starts <= epoch <=
  modulation_ends`` (epochs from 0).

Not implemented, documented:
- the paper's continuous coefficient and its prototype entropy regularisation (PER): neither is in
  the released training file, PER's script ``main_Proto_PER.py`` is missing from the repository,
  and the formulas cannot be checked against code, so mmbench runs the released rule.

mmbench choices, documented:
- *More than two modalities.* ``rho_m = s^p_m / mean_{j != m} s^p_j``; every modality with
  ``rho_m < 1`` gets ``alpha`` (for two modalities exactly the release's rule).
- *Which data.* Prototypes always come from the training split (``proto_fraction`` of its batches
  in a seeded shuffled order; 1.0 = all of it). The release's AVE prototypes come from the
  validation loader; mmbench selects checkpoints on validation, so that is not offered.
- A class absent from the sampled batches would give a 0/0 prototype (NaN in the release); its
  prototype is then computed from all its training samples.
- Logged: per step ``ratio_<m>``, ``proto_weight_<m>``, ``loss_proto_<m>``, ``proto_acc_<m>``
  (prototype accuracy on the batch); per epoch ``val_proto_acc_<m>`` (monitoring only).
- *Model selection* is on the validation split (the release has none; it evaluates on test).

Defaults = the release's argument defaults (``get_arguments``): alpha 1.0, momentum_coef 0.2, window 0-100.
The shell scripts (``bash.sh``) use alpha 2.0, momentum_coef 0.0 and window 0-70 (recipes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from mmbench.config import NON_NEGATIVE, UNIT, Range
from mmbench.evaluation import eval_mode
from mmbench.measures import score_ratios, unimodal_scores
from mmbench.methods.base import Method
from mmbench.registry import METHODS


def prototype_indices(labels: torch.Tensor, num_classes: int, batch_size: int, fraction: float,
                      generator: torch.Generator) -> torch.Tensor:
    """The first ``max(1, int(n_batches * fraction))`` batches of a shuffled order, plus every sample
    of a class those batches miss."""
    n = len(labels)
    keep = max(1, int(math.ceil(n / batch_size) * fraction)) * batch_size
    idx = torch.randperm(n, generator=generator, device=generator.device).to(labels.device)[:keep]
    missing = torch.ones(num_classes, dtype=torch.bool, device=labels.device)
    missing[labels[idx]] = False
    if missing.any():
        idx = torch.cat([idx, torch.nonzero(missing[labels]).flatten()])
    return idx


@torch.no_grad()
def class_prototypes(model, data, idx: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Per modality, the mean eval-mode encoder feature of each class over the samples ``idx``."""
    sums: dict[str, torch.Tensor] = {}
    with eval_mode(model):
        for chunk in idx.split(batch_size):
            batch = data.index(chunk)
            for m, f in model(batch).features.items():
                f = f.to(torch.promote_types(f.dtype, torch.float32))  # half -> float32; float64 stays float64
                total = sums.setdefault(m, f.new_zeros(data.meta.num_classes, f.shape[1]))
                total.index_add_(0, batch.labels, f)
    counts = torch.bincount(data.labels[idx], minlength=data.meta.num_classes).clamp_min(1)
    return {m: s / counts[:, None].to(s) for m, s in sums.items()}


def prototype_logits(features: dict[str, torch.Tensor], prototypes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``-||f_m - p_{m,c}||_2`` for every class ``c``."""
    return {m: -torch.cdist(f, prototypes[m].to(f)) for m, f in features.items()}


@METHODS.register("pmr")
class PMR(Method):
    """PMR (CVPR 2023): prototype cross-entropy on the weaker modality, class-mean prototypes."""

    @dataclass(frozen=True)
    class Params:
        alpha: Annotated[float, NON_NEGATIVE] = 1.0
        momentum_coef: Annotated[float, UNIT] = 0.2
        modulation_starts: Annotated[int, NON_NEGATIVE] = 0
        modulation_ends: Annotated[int, NON_NEGATIVE] = 100
        proto_fraction: Annotated[float, Range(0, 1, low_open=True)] = 0.1  # of the training batches, per prototype update

    def __init__(self, params=None):
        super().__init__(params)
        self.prototypes: dict[str, torch.Tensor] | None = None

    def _compute(self, state) -> dict[str, torch.Tensor]:
        data = state.train
        idx = prototype_indices(data.labels, data.meta.num_classes, state.batch_size,
                                self.params.proto_fraction, state.generator)
        return class_prototypes(state.model, data, idx, state.batch_size)

    def on_epoch_start(self, state):
        if state.epoch == 0:
            self.prototypes = self._compute(state)

    def on_epoch_end(self, state):
        new, m = self._compute(state), self.params.momentum_coef
        self.prototypes = new if state.epoch <= 0 else {k: (1 - m) * new[k] + m * self.prototypes[k] for k in new}
        if state.val is not None:
            state.epoch_logs.update(self._val_accuracy(state))

    @torch.no_grad()
    def _val_accuracy(self, state) -> dict[str, float]:
        correct: dict[str, float] = {}
        with eval_mode(state.model) as model:
            for batch in state.val.batches(state.batch_size):
                for m, z in prototype_logits(model(batch).features, self.prototypes).items():
                    correct[m] = correct.get(m, 0.0) + (z.argmax(1) == batch.labels).sum().item()
        return {f"val_proto_acc_{m}": c / len(state.val) for m, c in correct.items()}

    def loss(self, model, batch, out, state):
        fused = F.cross_entropy(out.logits, batch.labels)
        if self.prototypes is None:  # before the first prototypes (only when a hook is called alone)
            return fused, {}
        p = self.params
        logits = prototype_logits(out.features, self.prototypes)
        ratios = score_ratios(unimodal_scores(logits, batch.labels))
        in_window = p.modulation_starts <= state.epoch <= p.modulation_ends
        weights = {m: p.alpha if in_window and r < 1 else 0.0 for m, r in ratios.items()}
        proto_ce = {m: F.cross_entropy(z, batch.labels) for m, z in logits.items()}
        loss = fused + sum(weights[m] * proto_ce[m] for m in proto_ce if weights[m])
        logs = {}
        for m, z in logits.items():
            logs.update({f"ratio_{m}": ratios[m], f"proto_weight_{m}": weights[m], f"loss_proto_{m}": proto_ce[m].item(),
                         f"proto_acc_{m}": (z.argmax(1) == batch.labels).float().mean().item()})
        return loss, logs
