"""ARM: Asymmetric Reinforcing against Multi-modal Representation Bias.

Gao, Cao, Zhu, Wang, Hu. AAAI 2025, 39(16):16754-16762, arXiv 2501.01240.
Official code: https://github.com/Gao-xiyuan/ARM (MMPretrain head/neck/MI module and
``configs/arm/resnet18_ks.py`` at a96d0ad; the older stand-alone ``train_armr.py`` with the
sample re-sampling stage in the history, commits 8566adf / 69563aa / c4453b9).
Equality with the release, measured: ``docs/methods/arm.md``.

From the official code [V-code] (MMPretrain generation):
- two encoders, features ``f_v``, ``f_a``; a joint feature ``f_c = fc_c([f_v, f_a])``
  (``Linear(2D -> D)``, the neck's ``fc_out``). ``f_c`` reaches the loss through nothing, so
  ``fc_c`` gets no gradient and keeps its initial weights (the release runs with
  ``find_unused_parameters=True``); mmbench reproduces that;
- one shared classifier ``fc: Linear(D -> K)`` applied to ``f_c``, ``f_v``, ``f_a``;
  ``p_c, p_v, p_a`` = batch means of the softmax probability of the true class;
- on the **flattened** batch features (all ``B x D`` values of one paired element-wise with the
  other's), detached: ``nmi_m = NMI(f_m, f_c)`` from a 30-bin 2-D histogram,
  ``NMI = 2 I(X;Y) / (H(X) + H(Y))``; ``cnmi_a = NCMI(f_a, f_c | f_v)``,
  ``cnmi_v = NCMI(f_v, f_c | f_a)`` from a 2-bin 3-D histogram,
  ``NCMI = [H(X|Z) + H(Y|Z) - H(X,Y|Z)] / [H(X|Z) + H(Y|Z)]`` (no factor 2, so in ``[0, 1/2]``);
  ``ii_m = nmi_m - cnmi_m``;
- contributions with **crossed** confidences: ``pcmi_a = p_c nmi_a + p_v ii_a``,
  ``pcmi_v = p_c nmi_v + p_a ii_v`` (``pairing="crossed"``); in general
  ``pcmi_m = p_c nmi_m + p_other ii_m``;
- asymmetric re-weighted fusion, the ratios batch scalars without gradient:
  ``logits = fc(fc_out2([(pcmi_a/pcmi_v) f_v, (pcmi_v/pcmi_a) f_a]))``, i.e. every modality's
  features are scaled by ``w_m = pcmi_other / pcmi_m`` and the less-contributing one is enlarged;
- loss: cross-entropy on those fused logits only;
- head ``Linear`` layers initialised ``N(0, 0.01^2)``, bias 0 (``head_init_std``);
- KS config: SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 128, 30 epochs, no LR decay
  within them, ResNet-18 x 2 from scratch, K = 31.

mmbench defaults where the release is a bug or leaks labels:
- *Conditional entropy.* The release's "conditional entropy" divides the 3-D joint by
  ``p(z)`` along the **x** axis and broadcasts the 2-D marginals into a ``bins^3`` array
  (``q[m, i, k] = P_xz[i, k] / p_z[m]``, summed over every ``m``), with a 1e-10 floor on
  ``p(z)`` and NCMI = 0 on a zero denominator. Default ``mi_estimator="plugin"`` is the correct
  plug-in estimator on the same histograms, ``H(X|Z) = H(X,Z) - H(Z)`` and likewise;
  ``mi_estimator="released"`` reproduces the release exactly (it uses no label or test
  information). Both NMI estimators return 0 where the release divides 0 by 0 (constant inputs).
  The histograms are built with torch on the training device in float64, with numpy's binning
  rule (:func:`histogram_codes`; identical to ``np.histogramdd`` on float64 data); the release bins
  float32 arrays on the CPU, so a value within float32 rounding of a bin edge may land elsewhere.
- *Test-time fusion weights.* The release evaluates with the training ``forward``: ``p_c, p_v,
  p_a`` come from the **test labels** and all MI terms from the evaluation batch, so
  predictions leak labels and depend on the other samples of the batch. This is not offered.
  mmbench evaluates label-free and batch-independent [INF, the paper's test-time rule is not
  known]: the weights are a buffer of the fusion (saved with the model), by default the mean of
  each ``w_m`` over the last finished training epoch (``eval_weights="epoch_mean"``; ``fc_out2``
  is linear, so this gives the expected fused pre-activation over that epoch's weights);
  ``"ema"``: an exponential moving average over training steps (``ema_momentum``);
  ``"ones"``: unweighted concatenation. The weights in use are logged per epoch
  (``eval_weight_<m>``).
- *Degenerate contributions.* The release divides by ``pcmi`` unguarded; ``ii`` can be negative,
  so a ``pcmi`` of 0 or of the other's opposite sign gives infinite or negative (sign-flipping)
  weights. mmbench keeps the release's ratio whenever it is positive and finite (both ``pcmi``
  negative included), floors both ``pcmi`` at ``pcmi_floor`` otherwise, and clips ``w_m`` to
  ``[1/max_weight, max_weight]``; the share of batches where either acted is logged as
  ``clipped``. With ``mi_estimator="released"`` the buggy NCMI is often above ``nmi`` (``ii < 0``),
  so both ``pcmi`` are often negative: their ratio is used as the release uses it.

Sample-level re-sampling (``resample=True``; older script, [V-code] except where marked):
- after each epoch ``>= resample_warmup - 1`` the training set is scored in eval mode: fused
  logits ``z``, and ``z_m`` with only modality ``m`` present (the others' features zeroed);
  per sample, on the K-dim logit vectors: ``nmi_m = NMI(z_m, z)`` (30 bins),
  ``cnmi_m = NCMI(z, z_m | z_other)`` (10 bins, the script's default), ``ii_m = nmi_m - cnmi_m``;
  ``v_x`` = max softmax probability if ``argmax == y`` else 0 (training labels);
  ``contrib_m = v_all nmi_m + v_m ii_other`` (crossed as in the script);
  ``con = mean_m contrib_m``; extra copies 3 if ``con < 0.5``, 2 if ``0.5 < con < 0.9``, else 1
  (the script appends them to the full list, so a sample occurs 4, 3 or 2 times);
- (reconstructed) mmbench's trainer iterates a fixed split, so the copies become per-sample loss weights
  ``n_i`` (occurrences) with the batch loss ``sum_i n_i CE_i / B``: the per-epoch sum of
  updates equals the duplicated list's to first order, with the same number of steps as
  without re-sampling. The first weights apply from epoch ``resample_warmup``.
- (reconstructed) the script trains a plain concat model; mmbench re-samples on top of the ARM fusion
  (the paper names both as parts of ARM), scoring with the evaluation weights.
- The script does not run as released (dataset classes that its loader file lacks; a ``Dim_redu``
  that the stored ``models/models.py`` lacks; ``value = p[0][argmax]`` on a 1-D vector; an NCMI
  returning a tuple; copies appended without their ``drop`` entries);
  mmbench follows the evident intent and uses the MMPretrain NCMI normalisation.
- Last copy counts are kept in ``artifacts.npz`` (``arm_resample_occurrences``).

Not implemented: the paper's **balanced min-max loss** is absent from the release and its
formula is not available to us (only its name, from secondary summaries), so mmbench does not
offer it rather than invent one. Two modalities only (``max_modalities = 2``): the rule pairs
each modality with "the other". ``model.fusion`` is ignored (ARM brings its own fusion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range
from mmbench.evaluation import eval_mode
from mmbench.measures import true_class_prob
from mmbench.methods.base import Method, TrainState, check_choices
from mmbench.models.multimodal import ModelOutput, ModelSpec, MultimodalModel, configured_encoders
from mmbench.registry import METHODS

ESTIMATORS = ("plugin", "released")
PAIRINGS = ("crossed", "own")
EVAL_WEIGHTS = ("epoch_mean", "ema", "ones")
RELEASED_FLOOR = 1e-10


# ---------------------------------------------------------------------------------------
# Histogram estimators (numpy's histogramdd binning, vectorised over rows)
# ---------------------------------------------------------------------------------------


def histogram_codes(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of every value of each row of ``x`` ``[N, L]``, with numpy's rule: ``bins``
    equal-width bins from the row's min to max (``+-0.5`` if constant), the last one closed."""
    x = x.detach().double()
    lo, hi = x.min(1, keepdim=True).values, x.max(1, keepdim=True).values
    flat = lo == hi
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    steps = torch.arange(bins + 1, dtype=torch.float64, device=x.device)
    edges = steps * ((hi - lo) / bins) + lo  # np.linspace
    edges[:, -1:] = hi
    # searchsorted(edges, x, right=True) - 1, by arithmetic and one exact correction step
    codes = ((x - lo) * (bins / (hi - lo))).floor_().long().clamp_(0, bins - 1)
    codes -= (x < edges.gather(1, codes)).long()
    codes.clamp_(0, bins - 1)
    codes += ((x >= edges.gather(1, codes + 1)) & (codes < bins - 1)).long()
    return codes


def joint_histogram(*variables: torch.Tensor, bins: int) -> torch.Tensor:
    """Joint probability table ``[N, bins, ..., bins]`` of the paired values of each row
    (each variable ``[N, L]``, or ``[L]`` for a single row)."""
    rows = [v.reshape(1, -1) if v.ndim == 1 else v for v in variables]
    n, k = rows[0].shape[0], len(rows)
    flat = torch.zeros_like(histogram_codes(rows[0], bins))
    for v in rows:
        flat = flat * bins + histogram_codes(v, bins)
    flat = flat + bins ** k * torch.arange(n, device=flat.device)[:, None]
    counts = torch.bincount(flat.reshape(-1), minlength=n * bins ** k).double()
    counts = counts.view(n, *([bins] * k))
    return counts / counts.flatten(1).sum(1).view(n, *([1] * k))


def _plogp(p: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), torch.zeros_like(p))


def entropy(p: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``-sum p log p`` over ``dims`` (natural log, 0 log 0 = 0)."""
    return -_plogp(p).sum(dims)


def nmi_from_joint(p: torch.Tensor) -> torch.Tensor:
    """``2 I(X;Y) / (H(X) + H(Y))`` from joint tables ``[N, bx, by]``; 0 where both entropies are 0."""
    px, py = p.sum(2), p.sum(1)
    hx, hy = entropy(px, (1,)), entropy(py, (1,))
    mi = hx + hy - entropy(p, (1, 2))
    den = hx + hy
    return torch.where(den > 0, 2 * mi / torch.where(den > 0, den, 1.0), torch.zeros_like(den))


def released_conditional_entropy(p: torch.Tensor, p_z: torch.Tensor) -> torch.Tensor:
    """The release's ``conditional_entropy``, per row: ``p_z`` floored
    at 1e-10 divides ``p`` along its **first** axis (``q[i,j,k] = P[i,j,k] / p_z[i]``) for a
    3-D table, and a 2-D table ``P[i, k]`` is broadcast to ``q[m,i,k] = P[i,k] / p_z[m]``;
    returns ``-sum q log q`` over the positive entries."""
    p_z = torch.where(p_z > 0, p_z, torch.full_like(p_z, RELEASED_FLOOR))
    shape = (p_z.shape[0], p_z.shape[1]) + (1,) * 2
    q = p / p_z.view(shape) if p.ndim == 4 else p[:, None] / p_z.view(shape)
    return entropy(q, tuple(range(1, q.ndim)))


def ncmi_from_joint(p: torch.Tensor, estimator: str = "plugin") -> torch.Tensor:
    """Normalised conditional MI ``[H(X|Z) + H(Y|Z) - H(X,Y|Z)] / [H(X|Z) + H(Y|Z)]`` from
    joint tables ``[N, bx, by, bz]``; 0 where the denominator is 0 (as the release).

    ``plugin``: ``H(A|Z) = H(A,Z) - H(Z)``; ``released``: the release's
    :func:`released_conditional_entropy` (a bug, kept as a documented option)."""
    p_xz, p_yz, p_z = p.sum(2), p.sum(1), p.sum((1, 2))
    if estimator == "plugin":
        hz = entropy(p_z, (1,))
        hx_z = entropy(p_xz, (1, 2)) - hz
        hy_z = entropy(p_yz, (1, 2)) - hz
        hxy_z = entropy(p, (1, 2, 3)) - hz
    elif estimator == "released":
        hx_z = released_conditional_entropy(p_xz, p_z)
        hy_z = released_conditional_entropy(p_yz, p_z)
        hxy_z = released_conditional_entropy(p, p_z)
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    den = hx_z + hy_z
    return torch.where(den != 0, (den - hxy_z) / torch.where(den != 0, den, 1.0), torch.zeros_like(den))


def nmi(x: torch.Tensor, y: torch.Tensor, bins: int = 30) -> torch.Tensor:
    """Histogram NMI of paired values, per row of ``[N, L]`` inputs (a scalar for 1-D inputs)."""
    out = nmi_from_joint(joint_histogram(x, y, bins=bins))
    return out[0] if x.ndim == 1 else out


def ncmi(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, bins: int = 2, estimator: str = "plugin") -> torch.Tensor:
    """Histogram NCMI ``NCMI(X; Y | Z)`` of paired values, per row (a scalar for 1-D inputs)."""
    out = ncmi_from_joint(joint_histogram(x, y, z, bins=bins), estimator)
    return out[0] if x.ndim == 1 else out


# ---------------------------------------------------------------------------------------
# Fusion
# ---------------------------------------------------------------------------------------


class ARMFusion(nn.Module):
    """ARM's head for two modalities: ``f_c = fc_c([f_0, f_1])`` (measured, never trained),
    fused logits ``fc(fc_out2([w_0 f_0, w_1 f_1]))`` and unimodal logits ``fc(f_m)`` from the
    shared classifier. ``weights`` default to the ``eval_weights`` buffer (saved with the model)."""

    decomposable = False

    def __init__(self, modalities: list[str], feature_dim: int, num_classes: int, init_std: float | None = 0.01):
        super().__init__()
        self.modalities = list(modalities)
        width = feature_dim * len(self.modalities)
        self.fc_c = nn.Linear(width, feature_dim)
        self.fc_out2 = nn.Linear(width, feature_dim)
        self.fc = nn.Linear(feature_dim, num_classes)
        if init_std is not None:
            for layer in (self.fc_out2, self.fc):
                nn.init.normal_(layer.weight, 0.0, init_std)
                nn.init.zeros_(layer.bias)
        self.register_buffer("eval_weights", torch.ones(len(self.modalities)))

    def joint(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc_c(torch.cat([features[m] for m in self.modalities], 1))

    def scaled(self, features: dict[str, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        """``[w_0 f_0, w_1 f_1]``, the input of ``fc_out2``."""
        return torch.cat([weights[i] * features[m] for i, m in enumerate(self.modalities)], 1)

    def forward(self, features: dict[str, torch.Tensor], present: list[str], weights: torch.Tensor | None = None):
        w = self.eval_weights if weights is None else weights
        logits = self.fc(self.fc_out2(self.scaled(features, w)))
        return logits, {m: self.fc(features[m]) for m in self.modalities if m in present}


# ---------------------------------------------------------------------------------------
# Method
# ---------------------------------------------------------------------------------------


@METHODS.register("arm")
class ARM(Method):
    """ARM (AAAI 2025): fused features re-weighted by the inverse ratio of MI-based contributions."""

    max_modalities = 2

    reconstructed: ClassVar[tuple[str, ...]] = ("label-free test-time weights", "pcmi floor and weight clip",
                                                "re-sampling as loss weights, on top of the ARM fusion",
                                                "balanced min-max loss absent")

    @dataclass(frozen=True)
    class Params:
        nmi_bins: Annotated[int, AT_LEAST_ONE] = 30
        ncmi_bins: Annotated[int, AT_LEAST_ONE] = 2
        mi_estimator: str = "plugin"  # plugin | released (the release's conditional-entropy bug)
        pairing: str = "crossed"  # crossed (release) | own (reconstructed: p_m with ii_m)
        eval_weights: str = "epoch_mean"  # epoch_mean | ema | ones: label-free test-time weights (reconstructed)
        ema_momentum: Annotated[float, Range(0, 1, low_open=True)] = 0.1
        pcmi_floor: Annotated[float, POSITIVE] = 1e-6
        max_weight: Annotated[float, AT_LEAST_ONE] = 100.0
        head_init_std: Annotated[float | None, POSITIVE] = 0.01  # None: PyTorch's default init
        resample: bool = False  # the older script's sample-level re-sampling stage
        resample_warmup: Annotated[int, NON_NEGATIVE] = 5
        resample_nmi_bins: Annotated[int, AT_LEAST_ONE] = 30
        resample_ncmi_bins: Annotated[int, AT_LEAST_ONE] = 10
        resample_thresholds: tuple[float, ...] = (0.5, 0.9)
        resample_extra: tuple[int, ...] = (3, 2, 1)  # extra copies: con < lo, lo < con < hi, otherwise

        def __post_init__(self):
            check_choices(self, mi_estimator=ESTIMATORS, pairing=PAIRINGS, eval_weights=EVAL_WEIGHTS)
            if len(self.resample_thresholds) != 2 or len(self.resample_extra) != 3:
                raise ValueError("resample_thresholds needs 2 values (low, high), resample_extra 3 counts")

    def __init__(self, params=None):
        super().__init__(params)
        self._weight_sum: torch.Tensor | None = None
        self._steps = 0
        self.occurrences: torch.Tensor | None = None  # per training sample, from re-sampling

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        fusion = ARMFusion(list(spec.modalities), spec.config.feature_dim, spec.num_classes,
                           self.params.head_init_std)
        return MultimodalModel(configured_encoders(spec), fusion)

    # -- the batch rule --------------------------------------------------------------------
    @torch.no_grad()
    def contributions(self, fusion: ARMFusion, features: dict[str, torch.Tensor],
                      labels: torch.Tensor) -> dict[str, dict[str, float]]:
        """Per-modality ``p``, ``nmi``, ``cnmi``, ``ii``, ``pcmi`` and weight ``w`` of one batch."""
        p = self.params
        a, b = fusion.modalities
        other = {a: b, b: a}
        feats = {m: f.detach() for m, f in features.items()}
        joint = fusion.joint(feats)
        conf = {m: true_class_prob(fusion.fc(f).detach().double(), labels).mean().item() for m, f in feats.items()}
        p_c = true_class_prob(fusion.fc(joint).detach().double(), labels).mean().item()
        flat = {m: f.reshape(-1) for m, f in feats.items()}
        c = joint.reshape(-1)
        nmi_m = {m: nmi(flat[m], c, p.nmi_bins).item() for m in flat}
        cnmi_m = {m: ncmi(flat[m], c, flat[other[m]], p.ncmi_bins, p.mi_estimator).item() for m in flat}
        ii = {m: nmi_m[m] - cnmi_m[m] for m in flat}
        partner = other if p.pairing == "crossed" else {m: m for m in flat}
        pcmi = {m: p_c * nmi_m[m] + conf[partner[m]] * ii[m] for m in flat}
        w, clipped = contribution_weights(pcmi, p.pcmi_floor, p.max_weight)
        return {"p": {**conf, "c": p_c}, "nmi": nmi_m, "cnmi": cnmi_m, "ii": ii, "pcmi": pcmi, "w": w,
                "clipped": clipped}

    def forward(self, model: MultimodalModel, batch, state: TrainState) -> ModelOutput:
        fusion: ARMFusion = model.fusion
        features = {m: model.encoders[m](batch.inputs[m]) for m in model.modalities}
        measured = self.contributions(fusion, features, batch.labels)
        weights = torch.tensor([measured["w"][m] for m in fusion.modalities], device=batch.labels.device)
        self._track(fusion, weights)
        logits, unimodal = fusion(features, list(features), weights)
        extras = {f"arm_{k}": torch.tensor([measured[k][m] for m in fusion.modalities])
                  for k in ("nmi", "cnmi", "ii", "pcmi", "w")}
        extras["arm_p"] = torch.tensor([measured["p"][m] for m in [*fusion.modalities, "c"]])
        extras["arm_clipped"] = torch.tensor([float(measured["clipped"])])
        return ModelOutput(logits, features, unimodal, extras)

    @torch.no_grad()
    def _track(self, fusion: ARMFusion, weights: torch.Tensor) -> None:
        if self.params.eval_weights == "ema":
            fusion.eval_weights.lerp_(weights.to(fusion.eval_weights), self.params.ema_momentum)
        self._weight_sum = weights.double() if self._weight_sum is None else self._weight_sum + weights.double()
        self._steps += 1

    def loss(self, model, batch, out, state):
        ce = F.cross_entropy(out.logits, batch.labels, reduction="none")
        if self.occurrences is not None and batch.ids is not None:
            loss = (self.occurrences[batch.ids].to(ce) * ce).mean()
        else:
            loss = ce.mean()
        logs = {}
        names = model.fusion.modalities
        for key, values in out.extras.items():
            if key == "arm_clipped":
                logs["clipped"] = float(values[0])
            elif key.startswith("arm_"):
                labels = [*names, "c"] if key == "arm_p" else names
                logs.update({f"{key[4:]}_{m}": float(v) for m, v in zip(labels, values)})
        return loss, logs

    # -- epochs ----------------------------------------------------------------------------
    def on_epoch_start(self, state):
        self._weight_sum, self._steps = None, 0

    def on_epoch_end(self, state):
        p = self.params
        fusion: ARMFusion = state.model.fusion
        if p.eval_weights == "epoch_mean" and self._steps:
            fusion.eval_weights.copy_((self._weight_sum / self._steps).to(fusion.eval_weights))
        elif p.eval_weights == "ones":
            fusion.eval_weights.fill_(1.0)
        state.epoch_logs.update({f"eval_weight_{m}": fusion.eval_weights[i].item()
                                 for i, m in enumerate(fusion.modalities)})
        if p.resample and state.epoch >= p.resample_warmup - 1:
            con = self.sample_contributions(state.model, state.train, state.batch_size * 4)
            self.occurrences = resample_occurrences(con, p.resample_thresholds, p.resample_extra)
            state.artifacts["arm_resample_occurrences"] = self.occurrences.cpu().numpy()
            state.epoch_logs.update({"resample_con_mean": con.mean().item(),
                                     "resample_mean_occurrences": self.occurrences.float().mean().item()})

    @torch.no_grad()
    def sample_contributions(self, model: MultimodalModel, data, batch_size: int) -> torch.Tensor:
        """``con_i`` of every training sample (older script's rule), in eval mode."""
        p = self.params
        a, b = model.fusion.modalities
        out = []
        with eval_mode(model):
            for batch in data.batches(batch_size):
                features = {m: model.encoders[m](batch.inputs[m]) for m in (a, b)}
                z, _ = model.fuse(features)
                only = {m: model.fuse({m: features[m]})[0] for m in (a, b)}
                out.append(sample_con(z, only, batch.labels, p.resample_nmi_bins, p.resample_ncmi_bins,
                                      p.mi_estimator))
        return torch.cat(out)


def contribution_weights(pcmi: dict[str, float], floor: float = 1e-6,
                         max_weight: float = 100.0) -> tuple[dict[str, float], bool]:
    """``w_m = pcmi_other / pcmi_m`` for two modalities, as the release whenever that ratio is
    positive and finite (also when both ``pcmi`` are negative); otherwise (a zero, or opposite
    signs) both ``pcmi`` are floored at ``floor`` first. ``w`` is clipped to
    ``[1/max_weight, max_weight]``. Also returns whether the floor or the clip acted."""
    a, b = pcmi
    pa, pb = pcmi[a], pcmi[b]
    raw = pb / pa if pa != 0 else math.nan
    guarded = not (math.isfinite(raw) and raw > 0)
    if guarded:
        raw = max(pb, floor) / max(pa, floor)
    ratio = min(max(raw, 1 / max_weight), max_weight)
    return {a: ratio, b: 1 / ratio}, guarded or ratio != raw


def sample_con(fused: torch.Tensor, only: dict[str, torch.Tensor], labels: torch.Tensor,
               nmi_bins: int = 30, ncmi_bins: int = 10, estimator: str = "plugin") -> torch.Tensor:
    """Per-sample ``con = mean_m (v_all nmi_m + v_m ii_other)`` on logit vectors ``[B, K]``."""
    a, b = only
    other = {a: b, b: a}
    nmi_m = {m: nmi(z, fused, nmi_bins) for m, z in only.items()}
    ii = {m: nmi_m[m] - ncmi(fused, only[m], only[other[m]], ncmi_bins, estimator) for m in only}

    def value(z):
        prob = torch.softmax(z.double(), 1)
        top, arg = prob.max(1)
        return torch.where(arg == labels, top, torch.zeros_like(top))

    v_all = value(fused)
    contrib = [v_all * nmi_m[m] + value(only[m]) * ii[other[m]] for m in only]
    return (contrib[0] + contrib[1]) / 2


def resample_occurrences(con: torch.Tensor, thresholds=(0.5, 0.9), extra=(3, 2, 1)) -> torch.Tensor:
    """How often each sample occurs after re-sampling: ``1 +`` extra copies
    (``con < lo``: ``extra[0]``; ``lo < con < hi``: ``extra[1]``; otherwise, NaN included: ``extra[2]``)."""
    lo, hi = thresholds
    occ = torch.full(con.shape, 1 + extra[2], dtype=torch.long, device=con.device)
    occ[(con > lo) & (con < hi)] = 1 + extra[1]
    occ[con < lo] = 1 + extra[0]
    return occ


__all__ = ["ARM", "ARMFusion", "nmi", "ncmi", "nmi_from_joint", "ncmi_from_joint", "joint_histogram",
           "histogram_codes", "released_conditional_entropy", "contribution_weights", "sample_con",
           "resample_occurrences"]
