"""The multimodal model: one encoder per modality, a fusion, per-modality logits, masking.

Variants methods build: :func:`with_unimodal_heads` (a separate linear head per modality, for methods
whose unimodal losses train their own heads: MMPareto, G-Blending) and :class:`HeadFusionModel` (the
configured encoders with a method's own fusion head returning ``extras``: QMF, TMC, MICINet, QADM).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from mmbench.config import ModelConfig
from mmbench.data.types import ModalitySpec, MultimodalData
from mmbench.models.encoders import DEFAULT_ENCODER
from mmbench.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, Frozen, load_encoder_weights, weight_file
from mmbench.registry import ENCODERS, FUSIONS


@dataclass
class ModelSpec:
    """What a method needs to build a model: the data's modalities and classes, and the model config."""

    modalities: dict[str, ModalitySpec]
    num_classes: int
    config: ModelConfig = field(default_factory=ModelConfig)

    def only(self, modalities: Iterable[str]) -> ModelSpec:
        return ModelSpec({m: self.modalities[m] for m in modalities}, self.num_classes, self.config)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # fused prediction [B, C]
    features: dict[str, torch.Tensor]  # per-modality encoder outputs [B, D]
    unimodal_logits: dict[str, torch.Tensor]  # per-modality predictions [B, C] (modalities present)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # method-specific outputs


Inputs = MultimodalData | dict[str, torch.Tensor]


class MultimodalModel(nn.Module):
    """``encoders[m]`` -> features, ``fusion`` -> fused logits; ``heads`` for non-decomposable fusions.

    ``forward(batch, mask)`` replaces the features of masked modalities by zeros (their
    encoders are not run), so a masked modality contributes nothing but a bias.
    ``feature_hook(modality, features) -> features``, if given, is applied to each present
    modality's features before fusion (e.g. to scale their gradients).
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module, heads: dict[str, nn.Module] | None = None):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.heads = nn.ModuleDict(heads) if heads else None

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def forward(self, batch: Inputs, mask: Iterable[str] = (),
                feature_hook: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> ModelOutput:
        inputs = batch.inputs if isinstance(batch, MultimodalData) else batch
        mask = set(mask)
        present = [m for m in self.encoders if m not in mask]
        features = {m: self.encoders[m](inputs[m]) for m in present}
        if feature_hook is not None:
            features = {m: feature_hook(m, f) for m, f in features.items()}
        ref = inputs[next(iter(inputs))]
        logits, unimodal, extras = self._fuse(features, ref.shape[0], ref.device)
        return ModelOutput(logits, features, unimodal, extras)

    def fuse(self, features: dict[str, torch.Tensor], batch_size: int | None = None,
             device: torch.device | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused and unimodal logits from the features of the modalities present (the others count as zeros).

        Re-fusing a subset of already computed features is how coalition values are measured
        without running the encoders again.
        """
        if features:
            ref = next(iter(features.values()))
            batch_size, device = ref.shape[0], ref.device
        logits, unimodal, _ = self._fuse(features, batch_size, device)
        return logits, unimodal

    def fuse_coalitions(self, features: dict[str, torch.Tensor]) -> dict[frozenset[str], torch.Tensor]:
        """Fused logits of every subset of ``features`` (the empty one included), each a masked forward
        pass's logits: the coalitions of Shapley values, with the encoders run once."""
        ref = next(iter(features.values()))
        names = list(features)
        return {frozenset(subset): self.fuse({m: features[m] for m in subset}, ref.shape[0], ref.device)[0]
                for size in range(len(names) + 1) for subset in combinations(names, size)}

    def _fuse(self, features: dict[str, torch.Tensor], batch_size: int, device: torch.device | None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(fused logits, unimodal logits, extras) from the present modalities' features; the one
        place a model architecture combines features (subclasses with a fusion of their own override it)."""
        present = [m for m in self.encoders if m in features]
        if len(present) < len(self.encoders):
            zeros = torch.zeros(batch_size, self._feature_dim(), device=device)
            features = {m: features.get(m, zeros) for m in self.encoders}
        logits, unimodal = self.fusion(features, present)
        if self.heads is not None:
            unimodal = {m: self.heads[m](features[m]) for m in present}
        return logits, unimodal, {}

    def _feature_dim(self) -> int:
        return next(iter(self.encoders.values())).out_dim

    def monitor_loss(self, out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the separate per-modality heads on *detached* features.

        It trains only those heads, so per-modality accuracy is measurable for any fusion
        without changing what the encoders learn. Zero for decomposable fusions.
        """
        if self.heads is None:
            return torch.zeros((), device=labels.device)
        return sum(F.cross_entropy(self.heads[m](f.detach()), labels) for m, f in out.features.items())


def build_encoder(spec: ModalitySpec, name: str, cfg: ModelConfig) -> nn.Module:
    """The encoder ``name`` for one modality, adapted to how its data is stored.

    - the encoder must accept the modality's kind (its ``kinds``), else a clear error;
    - ``text``: the encoder also gets ``vocab_size`` and ``pad_id`` (the modality's pad token, default 0);
    - uint8 pixels (0-255): scaled by the training mean/std inside the model (:class:`Standardize`),
      whatever the tensor's dtype, so corrupted float copies on the same scale are treated alike;
    - ``video`` ``[T, C, H, W]`` given to an image encoder: the encoder runs on every frame and the
      features are averaged over frames (:class:`FramePool`), as the OGM-GE line pools its visual
      ResNet over frames;
    - ``model.pretrained``: weights loaded from a local file (:mod:`mmbench.models.pretrained`), or, for an
      encoder that sets ``loads_folder`` (``bert``), the ``save_pretrained`` folder it is built from; with
      ``imagenet`` weights, uint8 pixels are scaled to 0-1 and normalised with ImageNet's per-channel
      statistics (their mean over channels for a 1-channel modality);
    - ``model.freeze``: the encoder is :class:`Frozen` (not trained, BatchNorm statistics fixed).
    """
    from mmbench.errors import MMBenchError

    cls = ENCODERS.get(name)
    kinds = getattr(cls, "kinds", None)
    if kinds is not None and spec.kind not in kinds:
        fits = [n for n in ENCODERS.names() if spec.kind in getattr(ENCODERS.get(n), "kinds", (spec.kind,))]
        raise MMBenchError(f"encoder {name!r} takes {', '.join(kinds)} modalities, not {spec.name!r} ({spec.kind}); "
                           f"set model.encoders.{spec.name} to one of: {', '.join(fits)}")
    frames = spec.kind == "video" and not getattr(cls, "takes_video", False)
    shape = spec.shape[1:] if frames else spec.shape
    kwargs = {"vocab_size": spec.vocab_size or 0, "pad_id": (spec.tokens or {}).get("pad", 0)} \
        if spec.kind == "text" else {}
    source = cfg.pretrained.get(spec.name, "none")
    folder = getattr(cls, "loads_folder", False)
    if folder:
        kwargs["folder"] = weight_file(source, name)
    encoder = cls(shape, cfg.feature_dim, cfg.hidden_dim, cfg.depth, cfg.dropout, **kwargs)
    if source != "none" and not folder:
        load_encoder_weights(encoder, spec.name, weight_file(source, name))
    if frames:
        encoder = FramePool(encoder)
    if spec.dtype == "uint8":
        imagenet = source == "imagenet" and shape[0] in (1, 3)
        encoder = Standardize(encoder, *(imagenet_statistics(shape[0]) if imagenet else (spec.mean, spec.std)))
    if spec.name in cfg.freeze:
        encoder = Frozen(encoder)
    return encoder


class Standardize(nn.Module):
    """``encoder((x - mean) / std)`` on float values: for pixels stored as uint8 on the 0-255 scale."""

    def __init__(self, encoder: nn.Module, mean: float | list[float], std: float | list[float]):
        super().__init__()
        self.encoder = encoder
        self.standardize = _Standardizing(mean, std)
        self.out_dim = encoder.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.standardize(x))


class _Standardizing(nn.Module):
    """``(x - mean) / std`` with scalars, or per channel (``[C]`` lists, broadcast over ``[..., C, H, W]``)."""

    def __init__(self, mean: float | list[float], std: float | list[float]):
        super().__init__()
        if isinstance(mean, list):
            self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        else:
            self.mean, self.std = float(mean), float(std) or 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def imagenet_statistics(channels: int) -> tuple[list[float], list[float]]:
    """ImageNet's per-channel mean and std on the 0-255 scale (their means for one channel)."""
    mean, std = [255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD]
    return (mean, std) if channels == 3 else ([sum(mean) / 3], [sum(std) / 3])


class FramePool(nn.Module):
    """Runs an image encoder on each frame of ``[B, T, C, H, W]`` and averages the features over frames."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.out_dim = encoder.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return self.encoder(x.reshape(b * t, *x.shape[2:])).view(b, t, -1).mean(1)


def configured_encoders(spec: ModelSpec) -> dict[str, nn.Module]:
    """The configured encoder of every modality (default by modality kind)."""
    cfg = spec.config
    return {m: build_encoder(s, cfg.encoders.get(m, DEFAULT_ENCODER[s.kind]), cfg) for m, s in spec.modalities.items()}


def build_model(spec: ModelSpec) -> MultimodalModel:
    """The default architecture: configured encoders (default by modality kind) and fusion."""
    cfg = spec.config
    encoders = configured_encoders(spec)
    fusion = FUSIONS.get(cfg.fusion)(list(spec.modalities), cfg.feature_dim, spec.num_classes)
    heads = None
    if not fusion.decomposable:
        heads = {m: nn.Linear(cfg.feature_dim, spec.num_classes) for m in spec.modalities}
    return MultimodalModel(encoders, fusion, heads)


def with_unimodal_heads(spec: ModelSpec) -> MultimodalModel:
    """The configured encoders and fusion, with a separate ``Linear(feature_dim, classes)`` head per
    modality whose logits are the unimodal logits (kept when the fusion already needs heads)."""
    model = build_model(spec)
    if model.heads is not None:
        return model
    heads = {m: nn.Linear(spec.config.feature_dim, spec.num_classes) for m in spec.modalities}
    return MultimodalModel(dict(model.encoders), model.fusion, heads)


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
