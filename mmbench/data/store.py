"""The prepared format: ``<data_dir>/<name>/meta.json`` plus ``<split>/<modality>.npy`` and ``<split>/labels.npy``.

Arrays are plain ``.npy`` (memory-mappable, no pickles). ``meta.json`` records modalities
with shapes, dtypes and training statistics, classes, split sizes, how splits were made,
preprocessing, and a SHA-256 of every array, verified on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench import __version__
from mmbench.config import coerce
from mmbench.config import data_dir as default_data_dir
from mmbench.data.base import DatasetBuilder, Prepared
from mmbench.data.types import MODALITY_KINDS, DatasetMeta, ModalitySpec, MultimodalData
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS, unknown_name_message

SPLITS = ("train", "val", "test")


def prepare(dataset: str, root: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
            name: str | None = None, modalities: list[str] | None = None,
            options: dict[str, Any] | None = None, force: bool = False) -> Path:
    """Build ``dataset`` from ``root`` (or its embedded source) and write it as ``name``."""
    builder_cls: type[DatasetBuilder] = DATASETS.get(dataset)
    name = name or dataset
    target = default_data_dir(data_dir) / name
    if (target / "meta.json").exists() and not force:
        return target
    if root is None and not builder_cls.embedded:
        raise MMBenchError(f"dataset {dataset!r} needs its raw files: mmbench prepare {dataset} --root RAW_DIR")
    if root is not None and not Path(root).exists():
        raise MMBenchError(f"--root {str(root)!r} does not exist; point it at the raw {dataset} files")
    builder = builder_cls(_options(builder_cls, options or {}, dataset))
    prepared = builder.build(Path(root) if root is not None else None, modalities)
    prepared.info.setdefault("options", dataclasses.asdict(builder.options))
    if root is not None:
        prepared.info.setdefault("root", str(Path(root).resolve()))
    write(target, name, dataset, prepared)
    return target


def _options(builder_cls: type[DatasetBuilder], options: dict[str, Any], dataset: str) -> Any:
    import difflib
    import typing

    hints = typing.get_type_hints(builder_cls.Options)
    kwargs = {}
    for key, value in options.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise MMBenchError(f"unknown option {key!r} for dataset {dataset!r}; {hint}"
                               f"valid options: {', '.join(hints) or 'none'}")
        kwargs[key] = coerce(value, hints[key], f"option {key}")
    return builder_cls.Options(**kwargs)


def write(target: Path, name: str, builder: str, prepared: Prepared) -> None:
    """Write all arrays and meta.json into a temporary folder, then move it into place."""
    _validate(prepared, builder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        checksums = {}
        for split, (inputs, labels) in prepared.splits.items():
            (tmp / split).mkdir()
            for key, arr in {**inputs, "labels": labels}.items():
                rel = f"{split}/{key}.npy"
                np.save(tmp / rel, np.ascontiguousarray(arr), allow_pickle=False)
                checksums[rel] = sha256(tmp / rel)
        train_inputs = prepared.splits["train"][0]
        specs = {}
        for m, x in train_inputs.items():
            x64 = np.asarray(x, dtype=np.float64)
            specs[m] = ModalitySpec(m, prepared.kinds[m], tuple(x.shape[1:]), str(x.dtype),
                                    float(x64.mean()), float(x64.std()) or 1.0)
        meta = DatasetMeta(name, builder, tuple(prepared.classes), specs,
                           {s: int(len(prepared.splits[s][1])) for s in SPLITS}, prepared.info, checksums,
                           __version__)
        (tmp / "meta.json").write_text(json.dumps(meta.to_dict(), indent=2))
        if target.exists():
            old = target.with_name(f".{name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _validate(prepared: Prepared, builder: str) -> None:
    if set(prepared.splits) != set(SPLITS):
        raise ValueError(f"{builder} must produce the splits {SPLITS}, got {sorted(prepared.splits)}")
    k = len(prepared.classes)
    for split, (inputs, labels) in prepared.splits.items():
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise MMBenchError(f"{builder}: {split} labels must be a 1-D integer array")
        if len(labels) and (labels.min() < 0 or labels.max() >= k):
            raise MMBenchError(f"{builder}: {split} labels must lie in [0, {k}) for {k} classes; "
                               f"found {labels.min()}..{labels.max()}")
        for m, x in inputs.items():
            if prepared.kinds.get(m) not in MODALITY_KINDS:
                raise ValueError(f"{builder}: modality {m!r} needs a kind in {MODALITY_KINDS}")
            if len(x) != len(labels):
                raise MMBenchError(f"{builder}: {split}/{m} has {len(x)} rows but {len(labels)} labels")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def load_meta(name: str, data_dir: str | os.PathLike | None = None, auto_prepare: bool = True) -> DatasetMeta:
    """Read ``meta.json``; an embedded dataset that is not prepared yet is prepared first."""
    folder = default_data_dir(data_dir) / name
    if not (folder / "meta.json").exists():
        if name in DATASETS and DATASETS.get(name).embedded and auto_prepare:
            prepare(name, data_dir=data_dir)
        elif name in DATASETS:
            raise MMBenchError(f"dataset {name!r} is not prepared in {folder.parent}; "
                               f"run: mmbench prepare {name} --root RAW_DIR")
        else:
            prepared = sorted(p.parent.name for p in default_data_dir(data_dir).glob("*/meta.json"))
            raise MMBenchError(unknown_name_message("dataset", name, sorted(set(DATASETS.names()) | set(prepared))))
    try:
        return DatasetMeta.from_dict(json.loads((folder / "meta.json").read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MMBenchError(f"{folder / 'meta.json'} is corrupt ({e}); prepare the dataset again with --force") from None


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None,
               modalities: list[str] | None = None, verify: bool = True) -> MultimodalData:
    """Load one split into memory as tensors, verifying checksums, shapes and label range."""
    meta = load_meta(name, data_dir)
    folder = default_data_dir(data_dir) / name
    modalities = modalities or list(meta.modalities)
    missing = [m for m in modalities if m not in meta.modalities]
    if missing:
        raise MMBenchError(unknown_name_message(f"modality of {name!r}", missing[0], list(meta.modalities)))
    inputs = {m: torch.from_numpy(_load_array(folder, f"{split}/{m}.npy", meta, verify)) for m in modalities}
    labels = torch.from_numpy(_load_array(folder, f"{split}/labels.npy", meta, verify)).long()
    for m, x in inputs.items():
        if tuple(x.shape[1:]) != meta.modalities[m].shape or len(x) != len(labels):
            raise MMBenchError(f"{folder}/{split}/{m}.npy has shape {tuple(x.shape)}, meta.json says "
                               f"[{len(labels)}, {', '.join(map(str, meta.modalities[m].shape))}]; "
                               "prepare the dataset again with --force")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= meta.num_classes):
        raise MMBenchError(f"{folder}/{split}/labels.npy has labels outside [0, {meta.num_classes}); "
                           "prepare the dataset again with --force")
    return MultimodalData(inputs, labels, meta.select(modalities))


def _load_array(folder: Path, rel: str, meta: DatasetMeta, verify: bool) -> np.ndarray:
    path = folder / rel
    if not path.exists():
        raise MMBenchError(f"{path} is missing; prepare the dataset again with --force")
    if verify and meta.checksums.get(rel) != sha256(path):
        raise MMBenchError(f"checksum mismatch for {path}: the file changed after prepare; "
                           "prepare the dataset again with --force")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise MMBenchError(f"{path} is not a readable .npy file ({e}); prepare the dataset again with --force") from None
    return np.ascontiguousarray(arr)
