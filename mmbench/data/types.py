"""In-memory multimodal data: a dict of tensors per modality plus labels, sliced as batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

MODALITY_KINDS = ("vector", "image", "sequence", "video", "text")
"""What a modality's per-sample array is:

- ``vector`` ``[D]`` float;
- ``image`` ``[C, H, W]``: float (e.g. a log spectrogram ``[1, F, T]``), or uint8 pixels on the 0-255 scale;
- ``sequence`` ``[C, T]`` float;
- ``video`` ``[T, C, H, W]`` uint8 frames (0-255); image encoders run on every frame and average the features;
- ``text`` ``[L]`` int64 token ids, padded with ``tokens["pad"]`` (0 when absent) (``ModalitySpec.vocab_size``;
  ``ModalitySpec.tokens`` names the special ids, e.g. ``{"pad": 0, "unk": 1, "blank": 2}``; a Hugging Face
  tokenizer's also ``cls`` and ``sep``).

Encoders see stored values; pixels stored as uint8 are scaled by the training mean/std inside the
model (:func:`mmbench.models.multimodal.build_encoder`), so a float tensor on the same 0-255 scale
(e.g. a corrupted copy) is treated the same way.
"""


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: str  # one of MODALITY_KINDS: vector [D] | image [C,H,W] | sequence [C,T] | video [T,C,H,W] | text [L]
    shape: tuple[int, ...]
    dtype: str = "float32"
    mean: float = 0.0  # training-split statistics, the scale attacks use
    std: float = 1.0
    vocab_size: int | None = None  # text: number of token ids (padding included)
    tokens: dict[str, int] | None = field(default=None, hash=False)  # text: special ids, e.g. {pad, unk, blank}

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "kind": self.kind, "shape": list(self.shape), "dtype": self.dtype,
             "mean": self.mean, "std": self.std}
        if self.vocab_size is not None:
            d["vocab_size"] = self.vocab_size
        if self.tokens is not None:
            d["tokens"] = dict(self.tokens)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModalitySpec:
        vocab, tokens = d.get("vocab_size"), d.get("tokens")
        return cls(d["name"], d["kind"], tuple(d["shape"]), d.get("dtype", "float32"),
                   float(d.get("mean", 0.0)), float(d.get("std", 1.0)), int(vocab) if vocab is not None else None,
                   {k: int(v) for k, v in tokens.items()} if tokens is not None else None)


@dataclass(frozen=True)
class DatasetMeta:
    name: str
    builder: str
    classes: tuple[str, ...]
    modalities: dict[str, ModalitySpec]
    splits: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)  # source, preprocessing, split seeds, options
    checksums: dict[str, str] = field(default_factory=dict)
    version: str = ""
    digest: str = ""  # meta.json's own SHA-256 (set when loaded): identifies the prepared data

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def select(self, modalities: list[str]) -> DatasetMeta:
        return replace(self, modalities={m: self.modalities[m] for m in modalities})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "builder": self.builder, "mmbench_version": self.version,
                "classes": list(self.classes), "num_classes": self.num_classes,
                "modalities": [s.to_dict() for s in self.modalities.values()],
                "splits": self.splits, "info": self.info, "checksums": self.checksums}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetMeta:
        mods = [ModalitySpec.from_dict(m) for m in d["modalities"]]
        return cls(d["name"], d["builder"], tuple(d["classes"]), {m.name: m for m in mods},
                   dict(d["splits"]), d.get("info", {}), d.get("checksums", {}), d.get("mmbench_version", ""))


@dataclass
class MultimodalData:
    """``inputs``: modality -> tensor ``[N, ...]``; ``labels``: ``[N]`` int64. Batches are the same type;
    a batch from :meth:`batches` also carries ``ids``, its samples' positions in the split."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    meta: DatasetMeta
    ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def modalities(self) -> list[str]:
        return list(self.inputs)

    def index(self, idx: torch.Tensor | slice) -> MultimodalData:
        return MultimodalData({m: x[idx] for m, x in self.inputs.items()}, self.labels[idx], self.meta)

    def with_inputs(self, inputs: dict[str, torch.Tensor]) -> MultimodalData:
        return MultimodalData(inputs, self.labels, self.meta)

    def select(self, modalities: list[str]) -> MultimodalData:
        return MultimodalData({m: self.inputs[m] for m in modalities}, self.labels, self.meta.select(modalities))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultimodalData:
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=non_blocking)

        ids = None if self.ids is None else move(self.ids)
        return MultimodalData({m: move(x) for m, x in self.inputs.items()}, move(self.labels), self.meta, ids)

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[MultimodalData]:
        """Contiguous slices, or slices of one random permutation; the last batch is kept."""
        n = len(self)
        device = self.labels.device
        order = torch.randperm(n, generator=generator).to(device) if shuffle else None
        for start in range(0, n, batch_size):
            if order is not None:
                ids = order[start:start + batch_size]
                batch = self.index(ids)
            else:
                batch = self.index(slice(start, start + batch_size))
                ids = torch.arange(start, start + len(batch), device=device)
            batch.ids = ids
            yield batch


def stratified_subset(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted positions of a random subset of about ``size`` of ``labels``, each class in its share
    (rounded, at least one sample of every class present), drawn with ``generator``."""
    n = labels.numel()
    perm = torch.randperm(n, generator=generator, device=generator.device).to(labels.device)
    order = torch.argsort(labels[perm], stable=True)  # by class, random within a class
    idx, by_class = perm[order], labels[perm][order]
    counts = torch.bincount(labels)
    quota = torch.minimum((counts * (size / max(n, 1))).round().clamp(min=1).long(), counts)
    rank = torch.arange(n, device=labels.device) - (torch.cumsum(counts, 0) - counts)[by_class]
    return idx[rank < quota[by_class]].sort().values
