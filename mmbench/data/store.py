"""The prepared format: ``<data_dir>/<name>/meta.json`` plus ``<split>/<modality>.npy`` and ``<split>/labels.npy``.

Arrays are plain ``.npy`` (memory-mappable, no pickles). ``meta.json`` records modalities
with shapes, dtypes and training statistics, classes, split sizes, how splits were made,
preprocessing, and a SHA-256 of every array, verified on load; its own ``digest`` (a SHA-256 of
the rest of the record) is verified too, and identifies the prepared data in run ids. A prepared
folder carries mmbench's marker (:mod:`mmbench.paths`): only such a folder is ever replaced.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import glob
import json
import logging
import math
import os
import shutil
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench import __version__
from mmbench.checksums import Stamps, file_sha256, read_bounded, record_digest
from mmbench.config import coerce, dataset_defaults
from mmbench.config import data_dir as default_data_dir
from mmbench.data.base import DatasetBuilder, Prepared, SampleStream, UnreadableSample
from mmbench.data.mapped import MappedData
from mmbench.data.types import MODALITY_KINDS, DatasetMeta, ModalitySpec, MultimodalData
from mmbench.errors import MMBenchError
from mmbench.paths import MARKER, UMASK, is_own, mark_own, safe_name
from mmbench.registry import DATASETS, unknown_name_message

SPLITS = ("train", "val", "test")
KIND = "prepared dataset"  # the marker's text in a prepared folder
MAX_META = 256 << 20  # bytes: a meta.json larger than this is not one mmbench wrote
STAMPS = "verified.json"  # size, modification time and SHA-256 of each file when last hashed in full


def prepare(dataset: str, root: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
            name: str | None = None, modalities: list[str] | None = None,
            options: dict[str, Any] | None = None, force: bool = False, workers: int | None = None) -> Path:
    """Build ``dataset`` from ``root`` (or its embedded source) and write it as ``name``.

    ``workers``: threads reading raw files ahead for datasets prepared sample by sample (see :func:`write`).
    """
    builder_cls: type[DatasetBuilder] = DATASETS.get(dataset)
    name = name or dataset
    target = prepared_path(name, data_dir)
    if name != dataset and (name in DATASETS or dataset_defaults(name)):
        raise MMBenchError(f"--name {name!r} is a built-in dataset with its own defaults; give the {dataset} "
                           "data another name")
    if (target / "meta.json").exists() and not force:
        return target
    _check_replaceable(target)
    if root is None and not builder_cls.embedded:
        raise MMBenchError(f"dataset {dataset!r} needs its raw files: mmbench prepare {dataset} --root RAW_DIR; "
                           f"mmbench info {dataset} says where to get them and the layout --root must have")
    if root is not None and not Path(root).exists():
        raise MMBenchError(f"--root {str(root)!r} does not exist; point it at the raw {dataset} files")
    builder = builder_cls(_options(builder_cls, options or {}, dataset))
    prepared = builder.build(Path(root) if root is not None else None, modalities)
    prepared.info.setdefault("options", dataclasses.asdict(builder.options))
    if root is not None:
        prepared.info.setdefault("root", str(Path(root).resolve()))
    write(target, name, dataset, prepared, workers=workers)
    return target


def prepared_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the prepared dataset ``name`` lives (``name`` checked by :func:`mmbench.paths.safe_name`)."""
    return default_data_dir(data_dir) / safe_name(name, "dataset name")


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


def write(target: Path, name: str, builder: str, prepared: Prepared, progress: bool | None = None,
          workers: int | None = None) -> None:
    """Write all arrays and meta.json into a temporary folder, then move it into place.

    In-memory splits are saved as they are. Streamed splits (:class:`SampleStream`) are appended one
    sample at a time to their ``.npy`` files, so preparing needs memory for a few samples, not for
    the dataset; a sample whose raw files are unreadable is skipped and recorded in
    ``info["skipped"]`` when ``prepared.skip_unreadable``, else it stops the preparation with its name.
    ``progress``: show a progress bar for streamed splits (default: when stderr is a terminal).
    ``workers``: threads that read and transform samples ahead (default: up to 4, one per CPU); the
    written arrays do not depend on it.
    """
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    _validate(prepared, builder)
    _check_replaceable(target)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(target, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp creates 0700: a shared data directory stays readable
        mark_own(tmp, f"preparing {socket.gethostname()} {os.getpid()}")
        _write(tmp, target, name, builder, prepared, progress, workers)
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT, None)  # None: a short write (numpy), the disk is full
        raise MMBenchError(f"cannot write the prepared dataset {target} ({e.strerror or e}); "
                           f"{'free some space' if full else 'make it writable'} or choose another --data-dir; "
                           "nothing was changed") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(target: Path) -> None:
    if os.path.lexists(target) and not is_own(target, KIND, legacy="meta.json"):
        raise MMBenchError(f"{target} exists and is not a dataset prepared by mmbench; choose another --name or "
                           "--data-dir (nothing was changed)")


def _clean_stale(target: Path, name: str) -> None:
    """Remove what a killed ``prepare`` of ``name`` left: temporary folders of processes of this host
    that no longer run, and the previous version set aside while being replaced (restored when the new
    one never arrived)."""
    old = target.with_name(f".{name}.old")
    if is_own(old, KIND, legacy="meta.json"):
        if os.path.lexists(target):
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(target)
    for tmp in target.parent.glob(f".{glob.escape(name)}.*"):
        try:
            kind, host, pid = (tmp / MARKER).read_text().split()
        except (OSError, ValueError):
            continue
        if kind == "preparing" and host == socket.gethostname() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _write(tmp: Path, target: Path, name: str, builder: str, prepared: Prepared, progress: bool | None,
           workers: int) -> None:
    """:func:`write`'s work: the arrays and meta.json into ``tmp``, then ``tmp`` swapped in for ``target``."""
    checksums: dict[str, str] = {}
    stats: dict[str, tuple[tuple[int, ...], str, float, float]] = {}
    sizes: dict[str, int] = {}
    skipped: list[dict[str, str]] = []
    streamed = sum(len(d) for d in prepared.splits.values() if isinstance(d, SampleStream))
    with _progress(builder, streamed, progress) as advance:
        for split in SPLITS:
            data = prepared.splits[split]
            (tmp / split).mkdir()
            if isinstance(data, SampleStream):
                sizes[split], split_stats, split_skipped = _write_stream(tmp, split, data, prepared, builder,
                                                                          advance, workers, split == "train")
                skipped += split_skipped
            else:
                inputs, labels = data
                for key, arr in {**inputs, "labels": labels}.items():
                    np.save(tmp / f"{split}/{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
                sizes[split] = int(len(labels))
                split_stats = {m: (tuple(x.shape[1:]), str(x.dtype), *_moments(x))
                               for m, x in inputs.items()} if split == "train" else {}
            if split == "train":  # the modality specs' shapes, dtypes and standardisation statistics
                stats = split_stats
    for file_name, content in prepared.files.items():
        (tmp / file_name).parent.mkdir(exist_ok=True)
        (tmp / file_name).write_bytes(content if isinstance(content, bytes) else content.encode())
    stamps = Stamps(tmp / STAMPS)
    for path in sorted([*tmp.rglob("*.npy"), *(tmp / f for f in prepared.files)]):
        rel = path.relative_to(tmp).as_posix()
        checksums[rel] = file_sha256(path)
        stamps.record(rel, checksums[rel])
    stamps.save()
    for split, n in sizes.items():
        if n == 0:
            raise MMBenchError(f"{builder}: the {split} split is empty" + (
                f" after skipping {len(skipped)} unreadable samples" if skipped else "") + "; check the raw files")
    info = dict(prepared.info)
    if skipped or any(isinstance(d, SampleStream) for d in prepared.splits.values()):
        info["skipped"] = {"count": len(skipped),
                           "by_split": {s: sum(r["split"] == s for r in skipped) for s in SPLITS},
                           "samples": skipped}
    aux = [k for k in prepared.layout if k not in prepared.kinds]
    if aux:
        info["aux_arrays"] = aux
    specs = {}
    for m, (shape, dtype, mean, std) in stats.items():
        specs[m] = ModalitySpec(m, prepared.kinds[m], shape, dtype, mean, std or 1.0,
                                prepared.vocab_sizes.get(m), prepared.tokens.get(m))
    record = json.loads(json.dumps(DatasetMeta(name, builder, tuple(prepared.classes), specs, sizes, info,
                                               checksums, __version__).to_dict()))
    (tmp / "meta.json").write_text(json.dumps({**record, "digest": record_digest(record)}, indent=2))
    mark_own(tmp, KIND)
    if os.path.lexists(target):
        old = target.with_name(f".{name}.old")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        tmp.rename(target)


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of all entries of an in-memory array (float64)."""
    x64 = np.asarray(x, dtype=np.float64)
    return float(x64.mean()), float(x64.std())


class _RunningMoments:
    """Mean and variance of all entries over samples added one at a time (Chan et al.'s pairwise update)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, value: np.ndarray) -> None:
        v = np.asarray(value, dtype=np.float64)
        n = v.size
        if not n:
            return
        mean = float(v.mean())
        m2 = float(np.square(v - mean).sum())
        delta = mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0


def _write_stream(tmp: Path, split: str, stream: SampleStream, prepared: Prepared, builder: str, advance,
                  workers: int, measure: bool) -> tuple[int, dict[str, tuple[tuple[int, ...], str, float, float]],
                                                       list[dict[str, str]]]:
    """Append every sample of ``stream`` to its ``.npy`` files; returns (kept count, stats when ``measure``, skipped)."""
    n = len(stream)
    layout = prepared.layout
    writers = {key: _RowWriter(tmp / f"{split}/{key}.npy", dtype, shape, n) for key, (shape, dtype) in layout.items()}
    labels = np.empty(n, dtype=np.int64)
    moments = {m: _RunningMoments() for m in prepared.kinds} if measure else {}
    skipped, kept = [], 0
    try:
        for i, sample in _load_all(stream, workers):
            if isinstance(sample, UnreadableSample):
                if not prepared.skip_unreadable:
                    raise MMBenchError(f"{builder}: {split} sample {stream.ids[i]!r}: {sample}; fix or remove it, or "
                                       "prepare with -o on_error=skip to skip unreadable samples (recorded in "
                                       "meta.json)") from None
                skipped.append({"split": split, "id": stream.ids[i], "reason": str(sample)})
                advance()
                continue
            for key, writer in writers.items():
                value = np.asarray(sample[key])
                if value.shape != writer.row:
                    raise ValueError(f"{builder}: {split} sample {stream.ids[i]!r}: {key} has shape {value.shape}, "
                                     f"layout says {writer.row}")
                writer.append(value)
                if key in moments:
                    moments[key].add(value)
            labels[kept] = stream.labels[i]
            kept += 1
            advance()
    finally:
        for writer in writers.values():
            writer.close()
    np.save(tmp / f"{split}/labels.npy", labels[:kept], allow_pickle=False)
    stats = {m: (tuple(layout[m][0]), str(np.dtype(layout[m][1])), r.mean, r.std) for m, r in moments.items()}
    return kept, stats, skipped


class _RowWriter:
    """A ``.npy`` file written one row at a time (plain appends: memory use does not grow with the file).

    The header announces ``n`` rows; when fewer are written (skipped samples) it is rewritten in
    place: numpy pads headers so that the row count can change without moving the data.
    """

    def __init__(self, path: Path, dtype: str, row: tuple[int, ...], n: int):
        self.dtype, self.row = np.dtype(dtype), tuple(row)
        self.file = open(path, "wb")
        self.rows = 0
        self._header(n)
        self.offset = self.file.tell()

    def _header(self, n: int) -> None:
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                         "fortran_order": False, "shape": (n, *self.row)})

    def append(self, value: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(value, dtype=self.dtype).tobytes())
        self.rows += 1

    def close(self) -> None:
        if self.file.closed:
            return
        end = self.file.tell()
        self.file.seek(0)
        self._header(self.rows)
        if self.file.tell() != self.offset:  # cannot happen with numpy's padded headers; never write a bad file
            self.file.close()
            raise RuntimeError(f"{self.file.name}: the .npy header changed length when its row count was updated")
        self.file.seek(end)
        self.file.close()


def _load_all(stream: SampleStream, workers: int):
    """``(i, arrays or the UnreadableSample raised)`` in order; ``workers`` threads load ahead (a bounded
    window, so at most a few samples wait in memory). Torch runs single-threaded meanwhile: per-sample
    transforms are small, and thread hand-offs would cost more than they gain."""

    def load(i: int):
        try:
            return stream.load(i)
        except UnreadableSample as e:
            return e

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers <= 1:
            for i in range(len(stream)):
                yield i, load(i)
            return
        with ThreadPoolExecutor(workers) as pool:
            pending: collections.deque = collections.deque()
            for i in range(len(stream)):
                pending.append((i, pool.submit(load, i)))
                if len(pending) >= 4 * workers:
                    j, future = pending.popleft()
                    yield j, future.result()
            while pending:
                j, future = pending.popleft()
                yield j, future.result()
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _progress(builder: str, total: int, enabled: bool | None):
    """``advance()`` callback for streamed samples; a rich progress bar when enabled."""
    from mmbench.ui import console

    if enabled is None:
        enabled = console.is_terminal
    if not total or not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(f"preparing {builder}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(builder, total=total)
        yield lambda: bar.advance(task)


def _validate(prepared: Prepared, builder: str) -> None:
    if set(prepared.splits) != set(SPLITS):
        raise ValueError(f"{builder} must produce the splits {SPLITS}, got {sorted(prepared.splits)}")
    k = len(prepared.classes)
    if k < 2:
        raise MMBenchError(f"{builder}: the data has {k} class{'es' * (k != 1)}; a classification benchmark "
                           "needs at least two")
    for m, kind in prepared.kinds.items():
        if kind not in MODALITY_KINDS:
            raise ValueError(f"{builder}: modality {m!r} needs a kind in {MODALITY_KINDS}")
    for split, data in prepared.splits.items():
        if isinstance(data, SampleStream):
            labels = np.asarray(data.labels)
            missing = [m for m in prepared.kinds if m not in prepared.layout]
            if missing:
                raise ValueError(f"{builder}: streamed split {split} needs a layout for {missing}")
            if len(labels) != len(data.ids):
                raise ValueError(f"{builder}: {split} stream has {len(data.ids)} ids but {len(labels)} labels")
            inputs = {}
        else:
            inputs, labels = data
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
    train = prepared.splits["train"]
    counts = np.bincount(np.asarray(train.labels if isinstance(train, SampleStream) else train[1]), minlength=k)
    absent = [str(prepared.classes[c]) for c in np.flatnonzero(counts == 0)]
    if absent:
        logging.getLogger("mmbench").warning(
            "%s: %d class(es) have no training sample (%s%s); models cannot learn them", builder, len(absent),
            ", ".join(absent[:5]), ", ..." if len(absent) > 5 else "")


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def load_meta(name: str, data_dir: str | os.PathLike | None = None, auto_prepare: bool = True) -> DatasetMeta:
    """Read and verify ``meta.json``; an embedded dataset that is not prepared yet is prepared first."""
    folder = prepared_path(name, data_dir)
    if not (folder / "meta.json").exists():
        if name in DATASETS and DATASETS.get(name).embedded and auto_prepare:
            prepare(name, data_dir=data_dir)
        elif name in DATASETS:
            raise MMBenchError(f"dataset {name!r} is not prepared in {folder.parent}; "
                               f"run: mmbench prepare {name} --root RAW_DIR")
        else:
            prepared = sorted(p.parent.name for p in default_data_dir(data_dir).glob("*/meta.json"))
            raise MMBenchError(unknown_name_message("dataset", name, sorted(set(DATASETS.names()) | set(prepared))))
    path = folder / "meta.json"
    fix = "prepare the dataset again with --force"
    try:
        record = json.loads(read_bounded(path, MAX_META))
        digest = record.pop("digest", None) if isinstance(record, dict) else None
        if digest is None:
            raise MMBenchError(f"{path} has no digest (prepared by an older mmbench, or edited); {fix}")
        if digest != record_digest(record):
            raise MMBenchError(f"{path} changed after prepare (its digest does not match); {fix}")
        return dataclasses.replace(DatasetMeta.from_dict(record), digest=digest)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MMBenchError(f"{path} is corrupt ({type(e).__name__}: {e}); {fix}") from None


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None,
               modalities: list[str] | None = None, verify: bool = True, mmap: bool = False) -> MultimodalData:
    """One split as tensors, with its checksums, shapes and label range checked: in memory, or (``mmap``)
    left on disk as a :class:`MappedData` that reads the rows each batch needs."""
    inputs, labels, meta = _split_arrays(name, split, data_dir, modalities, verify, mmap)
    if mmap:
        return MappedData.from_arrays(inputs, labels, meta)
    return MultimodalData({m: torch.from_numpy(x) for m, x in inputs.items()}, torch.from_numpy(labels).long(), meta)


def _split_arrays(name: str, split: str, data_dir: str | os.PathLike | None, modalities: list[str] | None,
                  verify: bool, mmap: bool) -> tuple[dict[str, np.ndarray], np.ndarray, DatasetMeta]:
    meta = load_meta(name, data_dir)
    folder = default_data_dir(data_dir) / name
    modalities = modalities or list(meta.modalities)
    missing = [m for m in modalities if m not in meta.modalities]
    if missing:
        raise MMBenchError(unknown_name_message(f"modality of {name!r}", missing[0], list(meta.modalities)))
    names = {m: f"{split}/{m}.npy" for m in [*modalities, "labels"]}
    verify_files(folder, list(names.values()), meta, checksum=verify)
    inputs = {m: _load_array(folder / names[m], mmap) for m in modalities}
    labels = _load_array(folder / names["labels"], mmap=False)
    for m, x in inputs.items():
        if tuple(x.shape[1:]) != meta.modalities[m].shape or len(x) != len(labels):
            raise MMBenchError(f"{folder}/{split}/{m}.npy has shape {tuple(x.shape)}, meta.json says "
                               f"[{len(labels)}, {', '.join(map(str, meta.modalities[m].shape))}]; "
                               "prepare the dataset again with --force")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= meta.num_classes):
        raise MMBenchError(f"{folder}/{split}/labels.npy has labels outside [0, {meta.num_classes}); "
                           "prepare the dataset again with --force")
    return inputs, labels, meta.select(modalities)


def load_aux(name: str, split: str, key: str, data_dir: str | os.PathLike | None = None,
             verify: bool = True) -> np.ndarray | None:
    """An auxiliary per-sample array of a split (e.g. ``text_raw``), or None when the dataset has none."""
    meta = load_meta(name, data_dir)
    if key not in meta.info.get("aux_arrays", []):
        return None
    folder, rel = default_data_dir(data_dir) / name, f"{split}/{key}.npy"
    verify_files(folder, [rel], meta, checksum=verify)
    return _load_array(folder / rel, mmap=False)


def read_file(name: str, file_name: str, data_dir: str | os.PathLike | None = None) -> str | None:
    """A text file written beside ``meta.json`` (e.g. ``text_vocab.txt``), checksum verified; None if absent."""
    meta = load_meta(name, data_dir)
    if file_name not in meta.checksums:
        return None
    folder = default_data_dir(data_dir) / name
    verify_files(folder, [file_name], meta)
    return (folder / file_name).read_text()


def stored_folder(name: str, sub: str, data_dir: str | os.PathLike | None = None) -> Path:
    """A folder of files written beside ``meta.json`` (e.g. ``text_tokenizer``), its files checksum verified."""
    meta = load_meta(name, data_dir)
    folder = default_data_dir(data_dir) / name
    verify_files(folder, [f for f in meta.checksums if f.startswith(f"{sub}/")], meta)
    return folder / sub


def verify_files(folder: Path, names: list[str], meta: DatasetMeta, checksum: bool = True, full: bool = False) -> None:
    """Prepared files exist and (``checksum``) match the SHA-256 ``meta.json`` recorded for them.

    A file is hashed in full once; later checks trust it while its size and modification time match
    the stamp in ``verified.json`` (:class:`mmbench.checksums.Stamps`). ``full``: hash every file anyway.
    """
    stamps = Stamps(folder / STAMPS)
    try:
        for rel in names:
            path = folder / rel
            if not path.exists():
                raise MMBenchError(f"{path} is missing; prepare the dataset again with --force")
            if not path.is_file():
                raise MMBenchError(f"{path} is not a regular file; prepare the dataset again with --force")
            if checksum and not stamps.verified(rel, meta.checksums.get(rel), full):
                raise MMBenchError(f"checksum mismatch for {path}: the file changed after prepare; "
                                   "prepare the dataset again with --force")
    finally:
        stamps.save()


def verify_prepared(name: str, data_dir: str | os.PathLike | None = None) -> tuple[int, int]:
    """Hash every file of the prepared dataset ``name`` in full against ``meta.json`` (and renew its
    stamps); returns the number of files and their bytes."""
    if not (prepared_path(name, data_dir) / "meta.json").exists():
        raise MMBenchError(f"dataset {name!r} is not prepared in {default_data_dir(data_dir)}; "
                           f"prepare it first: mmbench prepare {name}")
    meta = load_meta(name, data_dir)
    folder = prepared_path(name, data_dir)
    verify_files(folder, sorted(meta.checksums), meta, full=True)
    return len(meta.checksums), sum((folder / rel).stat().st_size for rel in meta.checksums)


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    """A verified ``.npy`` file in memory, or (``mmap``) as a copy-on-write memory map."""
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="c" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise MMBenchError(f"{path} is not a readable .npy file ({e}); prepare the dataset again with --force") from None
    return arr if mmap else np.ascontiguousarray(arr)
