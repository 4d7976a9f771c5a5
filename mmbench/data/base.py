"""What a dataset builder returns, and the split helpers every builder shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.model_selection import train_test_split

from mmbench.errors import MMBenchError
from mmbench.registry import unknown_name_message

Arrays = dict[str, np.ndarray]


class UnreadableSample(Exception):
    """A raw file of one sample is missing or corrupt. The store skips the sample (recording its name and
    the reason in ``meta.json``) or stops with a clear error, as the dataset's ``on_error`` option says."""


@dataclass
class SampleStream:
    """One split produced sample by sample, for datasets that need not fit in memory.

    ``load(i)`` returns sample ``i``'s arrays (every name in :attr:`Prepared.layout`) or raises
    :class:`UnreadableSample`. The store appends each array to its ``.npy`` file as it comes.
    """

    ids: list[str]  # sample names, in order (recorded when a sample is skipped)
    labels: np.ndarray  # [N] class index of every listed sample
    load: Callable[[int], dict[str, np.ndarray]]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Prepared:
    """Arrays per split (``train``, ``val``, ``test``), ready to be written by the store.

    A split is either in-memory ``(inputs, labels)`` or a :class:`SampleStream`; streamed splits need
    ``layout`` (array name -> per-sample shape and dtype). Layout names that are not modalities (not in
    ``kinds``) are auxiliary per-sample arrays, e.g. ``text_lengths``: written and checksummed, not loaded
    for training. ``files`` are small files written beside ``meta.json`` (e.g. a vocabulary; a name may hold one folder).
    """

    splits: dict[str, tuple[Arrays, np.ndarray] | SampleStream]
    classes: list[str]
    kinds: dict[str, str]  # modality -> one of MODALITY_KINDS
    info: dict[str, Any] = field(default_factory=dict)
    layout: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    vocab_sizes: dict[str, int] = field(default_factory=dict)  # text modality -> number of token ids
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # text modality -> special token ids
    files: dict[str, str | bytes] = field(default_factory=dict)  # file name -> text or bytes
    skip_unreadable: bool = False  # streamed samples raising UnreadableSample: skip and record, or stop


class DatasetBuilder:
    """Turns raw files (or nothing, when ``embedded``) into :class:`Prepared` arrays.

    Subclasses set ``Options`` (a dataclass of ``--option key=value`` settings) and ``build``.
    """

    embedded: ClassVar[bool] = False

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        raise NotImplementedError


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``range(len(labels))`` into (kept, carved) with ``fraction`` carved."""
    if len(labels) and labels.min() < 0:
        raise MMBenchError(f"labels must be 0-based class indices; found {labels.min()}")
    idx = np.arange(len(labels))
    try:
        kept, carved = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as e:
        counts = np.bincount(labels)
        raise MMBenchError(f"cannot carve a stratified {fraction:.0%} split from {len(labels)} samples "
                           f"(smallest class has {counts[counts > 0].min()}): {e}; use more data or "
                           "change the split fraction option") from None
    return np.sort(kept), np.sort(carved)


def take(inputs: Arrays, labels: np.ndarray, idx: np.ndarray) -> tuple[Arrays, np.ndarray]:
    return {m: x[idx] for m, x in inputs.items()}, labels[idx]


def three_way_split(inputs: Arrays, labels: np.ndarray, test_fraction: float, val_fraction: float,
                    seed: int) -> tuple[dict[str, tuple[Arrays, np.ndarray]], dict[str, Any]]:
    """Stratified train/val/test from a source with no split; returns the splits and their record."""
    rest, test = split_indices(labels, test_fraction, seed)
    train, val = split_indices(labels[rest], val_fraction / (1 - test_fraction), seed + 1)
    train, val = rest[train], rest[val]
    splits = {name: take(inputs, labels, idx) for name, idx in (("train", train), ("val", val), ("test", test))}
    record = {"method": "stratified", "seed": seed, "test_fraction": test_fraction,
              "val_fraction": val_fraction, "source_splits": "none"}
    return splits, record


def carve_val(splits: dict[str, tuple[Arrays, np.ndarray]], val_fraction: float, seed: int) -> dict[str, Any]:
    """Carve a stratified validation split out of ``train`` in place; returns its record."""
    inputs, labels = splits["train"]
    train, val = split_indices(labels, val_fraction, seed)
    splits["train"], splits["val"] = take(inputs, labels, train), take(inputs, labels, val)
    return {"method": "stratified", "seed": seed, "val_fraction": val_fraction, "val_from": "train"}


def standardize(splits: dict[str, tuple[Arrays, np.ndarray]], modalities: list[str]) -> dict[str, Any]:
    """Z-score each feature of the given modalities with training statistics (no test leakage)."""
    for m in modalities:
        x = splits["train"][0][m]
        mean = x.mean(axis=0, keepdims=True)
        std = x.std(axis=0, keepdims=True)
        std[std < 1e-8] = 1.0
        for inputs, _ in splits.values():
            inputs[m] = ((inputs[m] - mean) / std).astype(np.float32)
    return {"standardize": {"modalities": modalities, "statistics": "train split, per feature"}}


# ---------------------------------------------------------------------------------------
# Helpers for builders that read raw files sample by sample
# ---------------------------------------------------------------------------------------


@dataclass
class RawSample:
    """One listed sample of a raw dataset: its name, class index, and what its loader needs (paths, text)."""

    id: str
    label: int
    source: dict[str, Any] = field(default_factory=dict)


def stream(samples: list[RawSample], load: Callable[[RawSample], dict[str, np.ndarray]]) -> SampleStream:
    return SampleStream([r.id for r in samples], np.array([r.label for r in samples], dtype=np.int64),
                        lambda i: load(samples[i]))


def ensure_val_samples(samples: dict[str, list[RawSample]], val_fraction: float, seed: int) -> dict[str, Any]:
    """When the source has no ``val`` split, carve a stratified one out of ``train`` (in place); returns
    how it was made, for ``meta.json`` (empty when the source had one)."""
    if "val" in samples:
        return {}
    train = samples["train"]
    kept, carved = split_indices(np.array([r.label for r in train], dtype=np.int64), val_fraction, seed)
    samples["train"], samples["val"] = [train[i] for i in kept], [train[i] for i in carved]
    return {"method": "stratified", "seed": seed, "val_fraction": val_fraction, "val_from": "train"}


def select_modalities(dataset: str, requested: list[str] | None, available: Sequence[str]) -> list[str]:
    """``requested`` (all of ``available`` when empty), each checked; a typo is an error listing close matches."""
    for m in requested or ():
        if m not in available:
            raise MMBenchError(unknown_name_message(f"{dataset} modality", m, list(available)))
    return list(requested or available)


def check_choice(option: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise MMBenchError(f"option {option}={value!r} must be one of: {', '.join(map(str, choices))}")


def check_class_count(dataset: str, found: list[str], expected: int, variants: str = "") -> None:
    """``expected`` 0 accepts any count; otherwise a different count is a clear error, never silent."""
    if expected and len(found) != expected:
        hint = f" ({variants})" if variants else ""
        raise MMBenchError(f"{dataset}: the raw files hold {len(found)} classes, expected {expected}{hint}; "
                           f"check the download, or pass -o num_classes={len(found)} to accept them "
                           f"(-o num_classes=0 accepts any count)")
