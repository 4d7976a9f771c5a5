"""Encoder weights from local files (``model.pretrained``) and frozen encoders (``model.freeze``).

Nothing is downloaded. ``model.pretrained.<modality>`` is one of

- ``none`` (the default): the encoder's own initialisation;
- ``imagenet``: the encoder's published ImageNet weights, read from the file the provider's own
  download would have written into torch's cache (``$TORCH_HOME/hub/checkpoints``, default
  ``~/.cache/torch/hub/checkpoints``), e.g. torchvision's ``resnet18-f37072fd.pth``; or
- a path: a state dict in the provider's layout (torchvision / timm ResNet keys such as
  ``layer1.0.conv1.weight``; QMF's ``resnet18_pretrained.pth`` is one), an mmbench encoder's own
  state dict, or an mmbench run's ``model.pt`` (the encoder of the same modality is taken);
- for an encoder built from a Hugging Face folder (``bert``): the folder (``save_pretrained``:
  ``config.json`` and weights; ``config.json`` alone gives the architecture with random weights).

Every backbone weight must be found (a missing or extra one is an error naming it); the classifier
of an ImageNet file (``fc.*``) is dropped and mmbench's projection head keeps its initialisation.
A 3-channel first convolution loaded into a 1-channel encoder (a spectrogram, a depth map) is summed
over its input channels: the response to a grey image repeated in three channels.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from mmbench.checksums import file_sha256, files_sha256
from mmbench.errors import MMBenchError
from mmbench.hf import local_folder
from mmbench.models.encoders import DEFAULT_ENCODER
from mmbench.registry import ENCODERS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet statistics


def torch_cache() -> Path:
    """Where torch's hub keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def weight_file(source: str, encoder_name: str) -> Path:
    """The local file ``model.pretrained`` names for an encoder; a one-line error when it is not there.

    An encoder whose class sets ``loads_folder`` (a Hugging Face model, :mod:`mmbench.models.bert`) is
    built from a ``save_pretrained`` folder instead: ``source`` must name one with a ``config.json``."""
    cls = ENCODERS.get(encoder_name)
    if getattr(cls, "loads_folder", False):
        if source in ("none", "imagenet"):
            raise MMBenchError(f"encoder {encoder_name!r} is built from a folder: set model.pretrained.<modality> to "
                               "a folder written by save_pretrained (config.json and weights; config.json alone "
                               "gives random weights)")
        return local_folder(source, "model.pretrained folder", "config.json")
    if source == "imagenet":
        published = getattr(cls, "imagenet_file", None)
        if published is None:
            raise MMBenchError(f"encoder {encoder_name!r} has no published ImageNet weights; give model.pretrained "
                               "a weight file instead, or use an encoder that has them (resnet18)")
        path = torch_cache() / published
        if not path.is_file():
            raise MMBenchError(f"ImageNet weights for {encoder_name} not found at {path}: put {published} (from "
                               f"{cls.imagenet_url}) there, or give model.pretrained the file's path")
        return path
    path = Path(source).expanduser()
    if not path.is_file():
        raise MMBenchError(f"model.pretrained weight file {source!r} does not exist; give the path of a state dict "
                           "(a .pth/.pt file), or imagenet")
    return path


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (tensors only, never pickled code); nested ``state_dict``/``model`` unwrapped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise MMBenchError(f"{path} is not a readable state dict ({type(e).__name__}); give a .pth/.pt file "
                           "saved with torch.save(model.state_dict())") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MMBenchError(f"{path} holds no state dict of tensors; give a file saved with torch.save(state_dict)")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def load_encoder_weights(encoder: nn.Module, modality: str, path: Path) -> None:
    """Load ``path`` into the mmbench encoder inside ``encoder``'s wrappers (:func:`innermost`); an encoder
    built on the meta device (to size a model before building it) gets nothing."""
    target = innermost(encoder)
    if any(p.is_meta for p in target.parameters()):
        return
    state = load_state(path)
    prefix = f"encoders.{modality}."
    if any(k.startswith(prefix) for k in state):  # an mmbench run's model.pt: that modality's encoder
        state = {re.sub(r"^(encoder\.)+", "", k[len(prefix):]): v for k, v in state.items() if k.startswith(prefix)}
    elif hasattr(target, "from_provider_layout") and not _matches(target, state):
        state = target.from_provider_layout(state)
    own = target.state_dict()
    missing = sorted(k for k in own if k not in state and not k.startswith("head."))  # mmbench's projection head
    extra = sorted(k for k in state if k not in own)
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which the encoder does not"
        raise MMBenchError(f"{path} does not fit the {modality} encoder ({type(target).__name__}): the file {what}; "
                           "give weights of the same architecture")
    for k, v in state.items():
        if v.shape != own[k].shape:
            v = _adapt(v, own[k].shape)
            if v is None:
                raise MMBenchError(f"{path}: {k} has shape {list(state[k].shape)}, the {modality} encoder needs "
                                   f"{list(own[k].shape)}; give weights of the same architecture and sizes")
        own[k] = v
    target.load_state_dict(own)


def _matches(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return set(state) <= set(module.state_dict())


def _adapt(value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """A 3-channel first convolution for a 1-channel input: summed over the input channels."""
    if value.dim() == 4 and value.shape[1] == 3 and shape[1] == 1 and value.shape[0] == shape[0] \
            and value.shape[2:] == shape[2:]:
        return value.sum(1, keepdim=True)
    return None


def innermost(module: nn.Module) -> nn.Module:
    """The encoder inside :class:`Standardize` / :class:`FramePool` / :class:`Frozen` wrappers."""
    while hasattr(module, "encoder"):
        module = module.encoder
    return module


class Frozen(nn.Module):
    """An encoder that is not trained: no gradients, and its BatchNorm statistics stay as loaded
    (it stays in eval mode when the model trains)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.out_dim = encoder.out_dim

    def train(self, mode: bool = True) -> Frozen:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def digests(spec) -> dict[str, str]:
    """SHA-256 of every weight file a :class:`ModelSpec`'s encoders load, by modality (for ``summary.json``);
    of a folder: of its files' names and digests together."""
    cfg = spec.config
    paths = {m: weight_file(src, cfg.encoders.get(m, DEFAULT_ENCODER[spec.modalities[m].kind]))
             for m, src in cfg.pretrained.items() if m in spec.modalities and src != "none"}
    return {m: files_sha256(p, [f.name for f in p.iterdir() if f.is_file()]) if p.is_dir() else file_sha256(p)
            for m, p in paths.items()}
