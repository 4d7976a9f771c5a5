"""Audio-visual datasets whose audio comes as precomputed spectrograms: VGGSound and BalancedAV.

BalanceMM reads both from per-clip spectrogram files (VGGSound: ``<clip>.npy``; BalancedAV: a pickled
array ``<clip>.pkl``) and per-clip frames (VGGSound: a folder of JPEGs; BalancedAV: an HDF5 file whose
``video`` dataset holds one encoded JPEG per frame). ``prepare`` stores

- ``audio``: the spectrogram as released, ``[1, F, T]`` float32 (kind ``image``); every clip must have
  the shape of the first readable training clip (a clip with another shape is an unreadable sample);
- ``visual``: ``frames`` RGB frames ``[frames, 3, S, S]`` uint8 (kind ``video``), picked evenly over the
  clip's frames and resized to ``S = image_size`` (224 in BalanceMM; 64 by default for CPU work).

A listed clip whose files are missing or unreadable is skipped and recorded in ``meta.json``
(``-o on_error=error`` stops instead); BalanceMM drops such clips silently.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.base import (
    DatasetBuilder,
    Prepared,
    RawSample,
    UnreadableSample,
    check_choice,
    check_class_count,
    ensure_val_samples,
    select_modalities,
    stream,
)
from mmbench.data.media import list_frames, load_frames, load_image_bytes, pick_frames, read_pickled_arrays
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS

MODALITIES = ("audio", "visual")


@dataclass
class PrecomputedAVOptions:
    num_classes: int = 0  # the class count the annotations must hold; 0 = any
    image_size: int = 64  # frames resized to image_size x image_size (224: BalanceMM)
    frames: int = 3  # frames per clip, picked evenly (BalanceMM: 3)
    val_fraction: float = 0.1  # validation carved (stratified) from train when the source has none
    seed: int = 0
    on_error: str = "skip"  # skip (and record) or error on a missing / unreadable clip


class PrecomputedAVDataset(DatasetBuilder):
    """Shared pipeline; subclasses list the clips and read one spectrogram and one clip's frames."""

    source = ""
    citation = ""
    layout = ""
    Options = PrecomputedAVOptions

    def index(self, root: Path) -> tuple[dict[str, list[RawSample]], list[str], dict[str, Any]]:
        raise NotImplementedError

    def read_spectrogram(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def read_frames(self, source: Path, count: int, size: int) -> np.ndarray:
        raise NotImplementedError

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        o = self.options
        name = self.registry_name
        mods = select_modalities(name, modalities, MODALITIES)
        check_choice("on_error", o.on_error, ("skip", "error"))
        if o.image_size < 8 or o.frames < 1:
            raise MMBenchError("options need image_size >= 8 and frames >= 1")
        splits, classes, info = self.index(root)
        check_class_count(name, classes, o.num_classes)
        info["split"] = {**info.get("split", {}), **ensure_val_samples(splits, o.val_fraction, o.seed)}
        layout: dict[str, tuple[tuple[int, ...], str]] = {}
        preprocessing: dict[str, Any] = {}
        if "audio" in mods:
            shape = self._spectrogram_shape(splits["train"])
            layout["audio"] = ((1, *shape), "float32")
            preprocessing["audio"] = {"from": "the released spectrogram files, values as stored",
                                      "shape": [1, *shape], "shape_of": "the first readable training clip"}
        if "visual" in mods:
            layout["visual"] = ((o.frames, 3, o.image_size, o.image_size), "uint8")
            preprocessing["visual"] = {"frames": o.frames, "pick": "even", "size": [o.image_size, o.image_size],
                                       "resize": "stretch, bilinear", "dtype": "uint8 RGB",
                                       "augmentation": "none stored (BalanceMM's train-time crops and flips "
                                                       "are not applied)"}

        def load(sample: RawSample) -> dict[str, np.ndarray]:
            out = {}
            if "audio" in layout:
                x = self.read_spectrogram(sample.source["audio"])
                if (1, *x.shape) != layout["audio"][0]:
                    raise UnreadableSample(f"{sample.source['audio']}: spectrogram of shape {list(x.shape)}, the "
                                           f"first training clip's is {list(layout['audio'][0][1:])}")
                out["audio"] = x[None].astype(np.float32)
            if "visual" in layout:
                out["visual"] = self.read_frames(sample.source["visual"], o.frames, o.image_size)
            return out

        info = {"source": self.source, "citation": self.citation, "layout": self.layout, **info,
                "preprocessing": preprocessing, "on_error": o.on_error}
        return Prepared({s: stream(rows, load) for s, rows in splits.items()}, classes,
                        {m: {"audio": "image", "visual": "video"}[m] for m in mods}, info, layout,
                        skip_unreadable=o.on_error == "skip")

    def _spectrogram_shape(self, train: list[RawSample]) -> tuple[int, ...]:
        for sample in train:
            try:
                return self.read_spectrogram(sample.source["audio"]).shape
            except UnreadableSample:
                continue
        raise MMBenchError(f"{self.registry_name}: no training clip has a readable spectrogram; expected layout: "
                           f"{self.layout}")


def _spectrogram(x: Any, path: Path) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or not x.size:
        raise UnreadableSample(f"{path}: expected a 2-D spectrogram [F, T], got {getattr(x, 'shape', type(x).__name__)}")
    if not np.isfinite(x).all():
        raise UnreadableSample(f"{path}: the spectrogram holds non-finite values")
    return x


# ---------------------------------------------------------------------------------------
# VGGSound
# ---------------------------------------------------------------------------------------

VGG_LAYOUT = ("ROOT/vggsound.csv ('<YouTube id>,<start s>,<label>,<train|test>' per line, the release's csv); "
              "ROOT/video_train/<id>_<start>/*.jpg and ROOT/video_test/... (frames), ROOT/audio_train/<id>_<start>.npy "
              "and ROOT/audio_test/... (spectrograms [F, T]); folder names set by the options, as BalanceMM's "
              "csv_root, video_train_root, video_test_root, audio_train_root, audio_test_root")


@DATASETS.register("vggsound")
class VggSoundDataset(PrecomputedAVDataset):
    """VGGSound: audio spectrograms + frames, 309 classes, the release's csv split (needs --root)."""

    source = "https://www.robots.ox.ac.uk/~vgg/data/vggsound/"
    citation = ("Chen, H., Xie, W., Vedaldi, A. & Zisserman, A. (2020). VGGSound: A Large-scale Audio-Visual "
                "Dataset. ICASSP.")
    layout = VGG_LAYOUT

    @dataclass
    class Options(PrecomputedAVOptions):
        num_classes: int = 309  # BalanceMM's count; 0 = any
        csv: str = "vggsound.csv"
        video_train_root: str = "video_train"
        video_test_root: str = "video_test"
        audio_train_root: str = "audio_train"
        audio_test_root: str = "audio_test"
        min_frames: int = 4  # a clip needs this many frame files (BalanceMM: more than 3)

    def index(self, root: Path) -> tuple[dict[str, list[RawSample]], list[str], dict[str, Any]]:
        o = self.options
        path = root / o.csv
        if not path.is_file():
            raise MMBenchError(f"vggsound: {path} not found; expected layout: {VGG_LAYOUT}")
        rows = _read_vgg_csv(path)
        classes = sorted({label for _, label, _ in rows})
        index = {c: i for i, c in enumerate(classes)}
        roots = {"train": (root / o.video_train_root, root / o.audio_train_root),
                 "test": (root / o.video_test_root, root / o.audio_test_root)}
        splits: dict[str, list[RawSample]] = {"train": [], "test": []}
        for clip, label, split in rows:
            video, audio = roots[split]
            splits[split].append(RawSample(clip, index[label], {"visual": video / clip, "audio": audio / f"{clip}.npy"}))
        for split, samples in splits.items():
            if not samples:
                raise MMBenchError(f"vggsound: {path} lists no {split} clips")
        return splits, classes, {"split": {"source_splits": f"{o.csv} (train / test column)"},
                                 "classes_order": "label names sorted"}

    def read_spectrogram(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise UnreadableSample(f"missing spectrogram {path}")
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise UnreadableSample(f"{path} is not a readable .npy array ({e})") from None
        return _spectrogram(x, path)

    def read_frames(self, source: Path, count: int, size: int) -> np.ndarray:
        found = len(list_frames(source))
        if found < self.options.min_frames:
            raise UnreadableSample(f"{source} holds {found} frames, fewer than min_frames={self.options.min_frames}")
        return load_frames(source, count, size)


def _read_vgg_csv(path: Path) -> list[tuple[str, str, str]]:
    """``(clip, label, split)`` per row ``<id>,<start>,<label>,<train|test>``; clip = ``<id>_<start>``."""
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 4 or row[3].strip() not in ("train", "test") or not row[0] or not row[2].strip():
                raise MMBenchError(f"{path}:{line_no}: expected '<YouTube id>,<start>,<label>,<train|test>', "
                                   f"got {','.join(row)!r}")
            rows.append((f"{row[0]}_{row[1].strip()}", row[2].strip(), row[3].strip()))
    if not rows:
        raise MMBenchError(f"{path} lists no clips")
    return rows


# ---------------------------------------------------------------------------------------
# BalancedAV
# ---------------------------------------------------------------------------------------

BALANCED_LAYOUT = ("ROOT/annotations.json ({\"labels\": [class names], \"database\": {<clip>: {\"subset\": "
                   "\"training\" | \"validation\" | \"testing\", \"label\": <name>}}}); ROOT/visual/<clip>.hdf5 "
                   "(dataset 'video': one encoded JPEG per frame); ROOT/audio/<clip>.pkl (a pickled spectrogram "
                   "[F, T]); names set by the options, as BalanceMM's csv_path, visual_path, audio_path")
SUBSETS = {"training": "train", "validation": "val", "testing": "test"}


@DATASETS.register("balanced_av")
class BalancedAVDataset(PrecomputedAVDataset):
    """BalancedAV: BalanceMM's balanced audio-visual set, spectrograms + HDF5 frames, 30 classes (needs --root, h5py)."""

    source = "https://github.com/GeWu-Lab/BalanceBenchmark (BalanceMM's Balance dataset reader)"
    citation = "Xia, W. et al. (2023). Balanced Audiovisual Dataset for Imbalance Analysis. arXiv:2302.10912."
    layout = BALANCED_LAYOUT

    @dataclass
    class Options(PrecomputedAVOptions):
        num_classes: int = 30  # BalanceMM's count; 0 = any
        annotations: str = "annotations.json"
        visual_dir: str = "visual"
        audio_dir: str = "audio"

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        if "visual" in (modalities or MODALITIES):
            _h5py()  # before anything is read or written
        return super().build(root, modalities)

    def index(self, root: Path) -> tuple[dict[str, list[RawSample]], list[str], dict[str, Any]]:
        o = self.options
        path = root / o.annotations
        if not path.is_file():
            raise MMBenchError(f"balanced_av: {path} not found; expected layout: {BALANCED_LAYOUT}")
        try:
            annotation = json.loads(path.read_text(encoding="utf-8-sig"))
            classes, database = list(annotation["labels"]), dict(annotation["database"])
        except (ValueError, KeyError, TypeError) as e:
            raise MMBenchError(f"{path}: not the annotation file ({e!r}); expected layout: {BALANCED_LAYOUT}") from None
        index = {str(c): i for i, c in enumerate(classes)}
        splits: dict[str, list[RawSample]] = {}
        for clip, entry in database.items():
            subset, label = (entry.get("subset"), entry.get("label")) if isinstance(entry, dict) else (None, None)
            if subset not in SUBSETS or label not in index:
                raise MMBenchError(f"{path}: clip {clip!r} needs a subset in {', '.join(SUBSETS)} and a label "
                                   f"from 'labels', got {entry!r}")
            splits.setdefault(SUBSETS[subset], []).append(
                RawSample(clip, index[label], {"visual": root / o.visual_dir / f"{clip}.hdf5",
                                               "audio": root / o.audio_dir / f"{clip}.pkl"}))
        for split in ("train", "test"):
            if split not in splits:
                raise MMBenchError(f"balanced_av: {path} has no clip in subset "
                                   f"{'training' if split == 'train' else 'testing'}")
        used = " / ".join(s for s in SUBSETS if SUBSETS[s] in splits)
        return splits, [str(c) for c in classes], {"split": {"source_splits": f"{o.annotations} subsets {used}"}}

    def read_spectrogram(self, path: Path) -> np.ndarray:
        return _spectrogram(read_pickled_arrays(path), path)

    def read_frames(self, source: Path, count: int, size: int) -> np.ndarray:
        h5py = _h5py()
        if not source.is_file():
            raise UnreadableSample(f"missing frames file {source}")
        try:
            with h5py.File(source, "r") as f:
                video = f["video"]
                if not len(video):
                    raise UnreadableSample(f"{source} holds no frames")
                return np.stack([load_image_bytes(video[i], size, "RGB", f"frame {i} of {source}")
                                 for i in pick_frames(len(video), count)])
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise UnreadableSample(f"{source} is not a readable HDF5 video ({e})") from None


def _h5py():
    try:
        import h5py
    except ImportError:
        raise MMBenchError("balanced_av reads its frames from HDF5 files: pip install h5py "
                           "(or pip install 'mmbench[balanced_av]')") from None
    return h5py
