"""Shared mechanics of gradient-modulation methods (OGM-GE, and the later AGM, ARL, CAL).

- :func:`unimodal_scores`: each modality's batch confidence on the true class;
- :func:`encoder_parameters`: the parameters of one modality's encoder that get modulated;
- :func:`scale_gradients`: ``g <- k * g`` plus optional Gaussian gradient noise, on parameters;
- :func:`coalition_values`: ``v(S)`` for every subset of modalities, by re-fusing detached
  features with the absent modalities zeroed (no extra encoder passes);
- :func:`scale_grad`: identity forward, gradient times a factor backward, on a tensor
  (e.g. encoder features, through ``MultimodalModel.forward(feature_hook=...)``);
- :func:`with_unimodal_heads`: the configured model plus a separate linear head per modality,
  for methods whose unimodal losses train their own heads (MMPareto, G-Blending).
- :func:`score_ratios`: each modality's score over the mean of the others' (PMR's rho, OGM-GE's rule);
- :func:`subset_logits`: fused logits with only some modalities present, the others zeroed, in eval
  mode with gradients (AGM's padded passes).
- :func:`configured_encoders`, :class:`HeadFusionModel`: the configured encoders with a method's own
  fusion head returning ``extras`` (QMF, TMC, MICINet, QADM);
- :class:`PrototypeBank`: class prototypes and variances as EMA buffers saved with the model (MICINet, QADM).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mmbench.metrics import true_class_prob
from mmbench.models.multimodal import ModelSpec, MultimodalModel, build_model

PARAM_SCOPES = ("conv", "weights", "all")


def unimodal_scores(unimodal_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s_m = sum_batch softmax(logits_m)[y]`` (OGM-GE Eq. 8, a batch sum), detached."""
    return {m: true_class_prob(z.detach(), labels).sum() for m, z in unimodal_logits.items()}


def encoder_parameters(model: nn.Module, modality: str, scope: str = "weights") -> list[nn.Parameter]:
    """Parameters of ``model.encoders[modality]`` selected by ``scope``.

    ``conv``: 4-D (convolution) weights only, the literal rule of the OGM-GE release;
    ``weights``: every weight matrix or kernel (``ndim >= 2``: linear and conv, no norms, no biases),
    which is the release's rule carried over to non-convolutional encoders;
    ``all``: every parameter of the encoder.
    """
    if scope not in PARAM_SCOPES:
        raise ValueError(f"scope must be one of {PARAM_SCOPES}, got {scope!r}")
    params = [p for p in model.encoders[modality].parameters() if p.requires_grad]
    if scope == "conv":
        return [p for p in params if p.ndim == 4]
    if scope == "weights":
        return [p for p in params if p.ndim >= 2]
    return params


@torch.no_grad()
def scale_gradients(params: list[nn.Parameter], coeff: float, noise: bool = False,
                    generator: torch.Generator | None = None) -> None:
    """``g <- coeff * g``; with ``noise``, add ``N(0, (std(g) + 1e-8)^2)`` using the unscaled ``g``'s std,
    drawn in the gradient's dtype."""
    for p in params:
        if p.grad is None:
            continue
        std = p.grad.std().item() + 1e-8 if noise and p.grad.numel() > 1 else 1e-8
        p.grad.mul_(coeff)
        if noise:
            eps = torch.randn(p.grad.shape, generator=generator, dtype=p.grad.dtype,  # as the release: the grad's dtype
                              device=generator.device if generator else "cpu")
            p.grad.add_(eps.to(p.grad.device), alpha=std)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(factor)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (factor,) = ctx.saved_tensors
        return grad * factor, None


def scale_grad(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass; multiplies the incoming gradient by ``factor`` in the backward pass."""
    factor = torch.as_tensor(factor, dtype=x.dtype, device=x.device).detach()
    return _ScaleGrad.apply(x, factor)


def with_unimodal_heads(spec: ModelSpec) -> MultimodalModel:
    """The configured encoders and fusion, with a separate ``Linear(feature_dim, classes)`` head per
    modality whose logits are the unimodal logits (kept when the fusion already needs heads)."""
    model = build_model(spec)
    if model.heads is not None:
        return model
    heads = {m: nn.Linear(spec.config.feature_dim, spec.num_classes) for m in spec.modalities}
    return MultimodalModel(dict(model.encoders), model.fusion, heads)


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


def score_ratios(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """``rho_m = s_m / mean_{j != m} s_j``; for two modalities ``s_a / s_v`` and its inverse."""
    names = list(scores)
    return {m: (scores[m] / torch.stack([scores[j] for j in names if j != m]).mean().clamp_min(1e-12)).item()
            for m in names}


MUTE_MODES = ("input", "features")


def _zero_input(x: torch.Tensor, spec) -> torch.Tensor:
    """The input the network reads as zero: the training mean for uint8 pixels (see ``Standardize``), else 0."""
    if spec is not None and spec.dtype == "uint8":
        return torch.full(x.shape, spec.mean, dtype=torch.float32, device=x.device)
    return torch.zeros_like(x)


def subset_logits(model: nn.Module, batch, subsets: list[frozenset[str]],
                  mute: str = "input") -> dict[frozenset[str], torch.Tensor]:
    """Fused logits with only each subset's modalities present, **with gradients** but in eval mode
    (norm layers' running statistics, no dropout); the model's mode is restored afterwards.

    ``mute="input"``: the other modalities' inputs are zeroed as the network sees them (uint8 pixels,
    standardised inside the model, get the training mean) and their encoders run on them;
    ``mute="features"``: the model's masking (their features are zero, their encoders do not run).
    """
    if mute not in MUTE_MODES:
        raise ValueError(f"mute must be one of {MUTE_MODES}, got {mute!r}")
    logits = {}
    with eval_mode(model):
        for subset in subsets:
            if mute == "input":
                inputs = {m: x if m in subset else _zero_input(x, batch.meta.modalities.get(m))
                          for m, x in batch.inputs.items()}
                logits[subset] = model(batch.with_inputs(inputs)).logits
            else:
                logits[subset] = model(batch, mask=[m for m in model.modalities if m not in subset]).logits
    return logits


@torch.no_grad()
def coalition_values(model: MultimodalModel, features: dict[str, torch.Tensor], labels: torch.Tensor,
                     ) -> dict[frozenset, float]:
    """``v(S)`` = batch mean of the true-class probability of the fused prediction when only the
    modalities in ``S`` are kept (the others zeroed), for every ``S``, from already computed features."""
    logits = model.fuse_coalitions({m: f.detach() for m, f in features.items()})
    return {s: true_class_prob(z, labels).mean().item() for s, z in logits.items()}


# -- robust-fusion architectures (QMF, TMC, MICINet, QADM) ----------------------------------------


class HeadFusionModel(MultimodalModel):
    """Encoders plus a method's own fusion ``head(features, batch_size, device) -> (logits, unimodal, extras)``.

    ``features`` holds only the modalities present (masked ones are absent, their encoders do not
    run), so each method decides what an absent modality means (QMF: no term in the weighted sum,
    TMC: a vacuous opinion). ``extras`` lands in :attr:`ModelOutput.extras` (fusion weights,
    uncertainties, depths); :meth:`fuse` re-fuses given features, as for the other models.
    """

    def __init__(self, encoders: dict[str, nn.Module], head: nn.Module):
        super().__init__(encoders, head, None)

    def _fuse(self, features, batch_size, device):
        return self.fusion({m: features[m] for m in self.encoders if m in features}, batch_size, device)


class PrototypeBank(nn.Module):
    """Class prototypes (means) and per-dimension class variances of some features, as buffers.

    :meth:`update` moves them toward the (optionally weighted) class means of a batch by an
    exponential moving average (the first batch that contains a class sets it); classes not
    seen yet are at infinite distance. Saved with the model, so evaluation uses the training
    statistics, never the test batch's.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.register_buffer("protos", torch.zeros(num_classes, dim))
        self.register_buffer("var", torch.ones(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes))

    @property
    def ready(self) -> bool:
        return bool(self.seen.any())

    def sq_distances(self, x: torch.Tensor) -> torch.Tensor:
        """``||x_i - p_k||^2`` for every sample and class, ``inf`` for classes not seen yet."""
        d = torch.cdist(x.float(), self.protos).pow(2)
        return d.masked_fill(self.seen[None] == 0, float("inf"))

    @torch.no_grad()
    def update(self, x: torch.Tensor, labels: torch.Tensor, momentum: float,
               weights: torch.Tensor | None = None) -> None:
        x = x.detach().float()
        w = torch.ones(len(x), device=x.device) if weights is None else weights.detach().float()
        onehot = torch.nn.functional.one_hot(labels, self.protos.shape[0]).float() * w[:, None]  # [B, C]
        mass = onehot.sum(0)
        has = mass > 1e-12
        mean = (onehot.T @ x) / mass.clamp_min(1e-12)[:, None]
        var = (onehot.T @ x.pow(2)) / mass.clamp_min(1e-12)[:, None] - mean.pow(2)
        rate = torch.where(self.seen > 0, torch.full_like(mass, momentum), torch.ones_like(mass))
        rate = (rate * has)[:, None]
        self.protos.mul_(1 - rate).add_(rate * mean)
        self.var.mul_(1 - rate).add_(rate * var.clamp_min(0))
        self.seen.copy_(torch.maximum(self.seen, has.float()))
