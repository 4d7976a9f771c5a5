"""Audio-visual datasets from extracted audio and frames: CREMA-D, Kinetics-Sounds, AVE.

The raw layout is the one the OGM-GE line of work extracts from the videos (its ``pre-processing``
scripts): one WAV file per clip and one folder of JPEG frames per clip. ``prepare`` turns each clip
into

- ``audio``: a log spectrogram ``[1, F, T]`` float32 (kind ``image``), see :mod:`mmbench.data.media`;
- ``visual``: ``frames`` RGB frames ``[frames, 3, S, S]`` uint8 (kind ``video``), picked evenly over
  the clip's extracted frames and resized to ``S = image_size``.

The defaults are the published preprocessing of each dataset (sample rate, STFT, frame count),
except the frame resolution: 64 for CPU work; ``-o image_size=224`` gives the published 224x224.
No augmentation is stored: the papers' training crops and flips (RandomResizedCrop(224), flip)
are not applied, the evaluation transform (resize to S x S) is used for every split.
Every option is recorded in ``meta.json`` (``info.options``, ``info.preprocessing``).

A listed clip whose WAV file or frames are missing or unreadable is skipped (``on_error=skip``:
its name and the reason are recorded in ``meta.json`` under ``info.skipped``) or stops the
preparation with its name (``on_error=error``); the default is per dataset (see each builder).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.base import (
    DatasetBuilder,
    Prepared,
    RawSample,
    check_choice,
    check_class_count,
    ensure_val_samples,
    select_modalities,
    split_indices,
    stream,
)
from mmbench.data.media import LogSpectrogram, load_frames
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS

MODALITIES = ("audio", "visual")


@dataclass
class AVOptions:
    image_size: int = 64  # frames resized to image_size x image_size (224: the published setting)
    frames: int = 1  # frames per clip, picked evenly over the extracted frames
    frame_pick: str = "even"  # even | first (OGM-GE's CREMA-D loader in effect takes the first: issue #32)
    sample_rate: int = 22050
    duration: float = 3.0  # seconds; clips are repeated until this long, then cut
    n_fft: int = 512
    hop: int = 353
    n_mels: int = 0  # 0: log-magnitude STFT bins as OGM-GE/ARL; > 0: log-mel bands
    power: float = 1.0  # 1 = magnitude, 2 = power
    val_fraction: float = 0.1  # validation carved (stratified) from train when the source has none
    seed: int = 0
    on_error: str = "skip"  # skip (and record) or error on a missing / unreadable clip


class AudioVisualDataset(DatasetBuilder):
    """Shared pipeline; subclasses list the clips (``index``) of their raw layout."""

    source = ""
    citation = ""
    Options = AVOptions

    def index(self, root: Path) -> tuple[dict[str, list[RawSample]], list[str], dict[str, Any]]:
        """``({train, val, test} -> clips with source audio/frames paths, classes, info)``."""
        raise NotImplementedError

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        o = self.options
        mods = select_modalities(self.registry_name, modalities, MODALITIES)
        check_choice("on_error", o.on_error, ("skip", "error"))
        check_choice("frame_pick", o.frame_pick, ("even", "first"))
        if o.image_size < 8 or o.frames < 1 or o.hop < 1 or o.n_fft < 2 or o.duration <= 0 or o.sample_rate < 1:
            raise MMBenchError("options need image_size >= 8, frames >= 1, n_fft >= 2, hop >= 1, duration > 0 "
                               "and sample_rate >= 1")
        splits, classes, info = self.index(root)
        spectrogram = LogSpectrogram(o.sample_rate, o.duration, o.n_fft, o.hop, o.n_mels, o.power)
        layout: dict[str, tuple[tuple[int, ...], str]] = {}
        preprocessing: dict[str, Any] = {}
        if "audio" in mods:
            layout["audio"] = (spectrogram.shape, "float32")
            preprocessing["audio"] = spectrogram.record()
        if "visual" in mods:
            layout["visual"] = ((o.frames, 3, o.image_size, o.image_size), "uint8")
            preprocessing["visual"] = {
                "frames": o.frames, "pick": o.frame_pick, "size": [o.image_size, o.image_size],
                "resize": "stretch to size x size, bilinear", "dtype": "uint8, 0-255 RGB",
                "normalisation": "inside the model: (x - train mean) / train std",
                "augmentation": "none stored (the papers' train-time crops and flips are not applied)"}

        def load(sample: RawSample) -> dict[str, np.ndarray]:
            out = {}
            if "audio" in layout:
                out["audio"] = spectrogram.load(sample.source["audio"])
            if "visual" in layout:
                out["visual"] = load_frames(sample.source["frames"], o.frames, o.image_size, o.frame_pick)
            return out

        info = {"source": self.source, "citation": self.citation, **info, "preprocessing": preprocessing,
                "on_error": o.on_error}
        return Prepared({s: stream(rows, load) for s, rows in splits.items()}, classes,
                        {m: {"audio": "image", "visual": "video"}[m] for m in mods}, info, layout,
                        skip_unreadable=o.on_error == "skip")


def _require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise MMBenchError(f"{dataset}: {path} not found; expected layout: {layout}")
    return path


# ---------------------------------------------------------------------------------------
# CREMA-D
# ---------------------------------------------------------------------------------------

CREMAD_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # OGM-GE's class order
CREMAD_LAYOUT = ("ROOT/AudioWAV/<clip>.wav (the CREMA-D release), ROOT/Image-01-FPS/<clip>/*.jpg (frames at 1 fps, "
                 "OGM-GE's video_preprocessing.py), optional ROOT/train.csv + ROOT/test.csv (OGM-GE's split: "
                 "'<clip>,<EMOTION>' per line)")


@DATASETS.register("cremad")
class CremadDataset(AudioVisualDataset):
    """CREMA-D: speech emotion, audio + frames, 6 classes (needs --root; OGM-GE's extracted layout)."""

    source = "https://github.com/CheyneyComputerScience/CREMA-D"
    citation = ("Cao, H. et al. (2014). CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset. "
                "IEEE Transactions on Affective Computing 5(4), 377-390.")

    @dataclass
    class Options(AVOptions):
        frames_dir: str = "Image-01-FPS"  # folder of per-clip frame folders
        test_fraction: float = 0.1  # only without train.csv/test.csv: stratified test split (744 / 7442)

    def index(self, root: Path) -> tuple[dict[str, list[RawSample]], list[str], dict[str, Any]]:
        o = self.options
        audio_dir = _require_dir(root / "AudioWAV", "cremad", CREMAD_LAYOUT)
        frames_dir = _require_dir(root / o.frames_dir, "cremad", CREMAD_LAYOUT)
        files = [root / "train.csv", root / "test.csv"]
        if any(f.exists() for f in files):
            if not all(f.exists() for f in files):
                raise MMBenchError(f"cremad: found only {' '.join(f.name for f in files if f.exists())}; "
                                   "the official split needs both train.csv and test.csv (or neither)")
            listed = {split: _read_cremad_csv(f) for split, f in zip(("train", "test"), files)}
            both = set(c for c, _ in listed["train"]) & set(c for c, _ in listed["test"])
            if both:
                raise MMBenchError(f"cremad: {len(both)} clips are in both train.csv and test.csv "
                                   f"(e.g. {sorted(both)[0]}); the test split must not overlap train")
            split_record: dict[str, Any] = {"source_splits": "train.csv / test.csv (OGM-GE)"}
        else:
            clips = sorted(p.stem for p in audio_dir.glob("*.wav"))
            if not clips:
                raise MMBenchError(f"cremad: no .wav files in {audio_dir}; expected layout: {CREMAD_LAYOUT}")
            pairs = [(c, _cremad_label(c)) for c in clips]
            labels = np.array([CREMAD_CLASSES.index(e) for _, e in pairs])
            train_idx, test_idx = split_indices(labels, o.test_fraction, o.seed)
            listed = {"train": [pairs[i] for i in train_idx], "test": [pairs[i] for i in test_idx]}
            split_record = {"source_splits": "none (no train.csv/test.csv): stratified test split",
                            "test_fraction": o.test_fraction, "test_seed": o.seed}

        def sample(clip: str, emotion: str) -> RawSample:
            return RawSample(clip, CREMAD_CLASSES.index(emotion),
                             {"audio": audio_dir / f"{clip}.wav", "frames": frames_dir / clip})

        splits = {s: [sample(*p) for p in listed[s]] for s in ("train", "test")}
        record = ensure_val_samples(splits, o.val_fraction, o.seed)
        return splits, list(CREMAD_CLASSES), {"split": {**split_record, **record}, "layout": CREMAD_LAYOUT}


def _cremad_label(clip: str) -> str:
    parts = clip.split("_")
    if len(parts) < 3 or parts[2] not in CREMAD_CLASSES:
        raise MMBenchError(f"cremad: cannot read the emotion of clip {clip!r} (expected names like "
                           f"1001_DFA_ANG_XX with an emotion in {', '.join(CREMAD_CLASSES)})")
    return parts[2]


def _read_cremad_csv(path: Path) -> list[tuple[str, str]]:
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2 or row[1].strip() not in CREMAD_CLASSES:
                raise MMBenchError(f"{path}:{line_no}: expected '<clip>,<EMOTION>' with an emotion in "
                                   f"{', '.join(CREMAD_CLASSES)}, got {','.join(row)!r}")
            rows.append((row[0].strip(), row[1].strip()))
    if not rows:
        raise MMBenchError(f"{path} lists no clips")
    return rows


# ---------------------------------------------------------------------------------------
# Kinetics-Sounds
# ---------------------------------------------------------------------------------------

KS_LAYOUT = ("ROOT/my_train.txt + ROOT/my_test.txt (OGM-GE's lists: '<clip>,...,<label>' per line, label = class "
             "index or name), optional ROOT/classes.txt (class names, one per line, in index order); media either "
             "ROOT/{train,test}/<clip>/<clip>.wav + frames *.jpg in the same folder (OGM-GE's VGG&KS tree) or "
             "ROOT/audio/<clip>.wav + ROOT/visual/<clip>/*.jpg")
KS_VARIANTS = ("31 classes in OGM-GE's lists (also ARM, PMR, BalanceMM); 34 in the ARL code; 32 in other papers; "
               "ARL's processed release holds 33 (ARL issue #2)")


@DATASETS.register("kinetics_sounds")
class KineticsSoundsDataset(AudioVisualDataset):
    """Kinetics-Sounds: audio + frames from split lists; 31 / 32 / 34-class variants (needs --root)."""

    source = "https://github.com/cvdfoundation/kinetics-dataset (videos); split lists: OGM-GE data/KineticSound"
    citation = ("Arandjelovic, R. & Zisserman, A. (2017). Look, Listen and Learn. ICCV. Kinetics: Kay, W. et al. "
                "(2017). The Kinetics Human Action Video Dataset. arXiv:1705.06950.")

    @dataclass
    class Options(AVOptions):
        num_classes: int = 31  # the class-count variant the lists must hold: 31 (OGM-GE), 32, 34 (ARL); 0 = any
        sample_rate: int = 16000  # ARL's KS setting: 16 kHz, STFT 256 / 128, 3 frames
        duration: float = 10.0
        n_fft: int = 256
        hop: int = 128
        frames: int = 3
        train_list: str = "my_train.txt"
        test_list: str = "my_test.txt"
        val_list: str = ""  # a list for validation; empty: carve from train

    def index(self, root: Path) -> tuple[dict[str, list[RawSample]], list[str], dict[str, Any]]:
        o = self.options
        lists = {"train": o.train_list, "test": o.test_list, **({"val": o.val_list} if o.val_list else {})}
        rows = {}
        for split, name in lists.items():
            path = root / name
            if not path.is_file():
                raise MMBenchError(f"kinetics_sounds: {path} not found; expected layout: {KS_LAYOUT}")
            rows[split] = _read_list(path)
        classes, to_index = _classes(root, [label for r in rows.values() for _, label in r])
        check_class_count("kinetics_sounds", classes, o.num_classes, KS_VARIANTS)
        flat = (root / "audio").is_dir() and (root / "visual").is_dir()
        if not flat and not (root / "train").is_dir():
            raise MMBenchError(f"kinetics_sounds: no media folders in {root}; expected layout: {KS_LAYOUT}")

        def sample(split: str, clip: str, label: str) -> RawSample:
            if flat:
                paths = {"audio": root / "audio" / f"{clip}.wav", "frames": root / "visual" / clip}
            else:
                paths = {"audio": root / split / clip / f"{clip}.wav", "frames": root / split / clip}
            return RawSample(clip, to_index[label], paths)

        listed = {s: [sample(s, c, lab) for c, lab in r] for s, r in rows.items()}
        lists = [o.train_list, o.val_list, o.test_list] if "val" in listed else [o.train_list, o.test_list]
        record = {**ensure_val_samples(listed, o.val_fraction, o.seed), "source_splits": " / ".join(lists)}
        layout = "audio/ + visual/" if flat else "per-split folders (OGM-GE VGG&KS tree)"
        return listed, classes, {"split": record, "layout": f"{layout}; {KS_LAYOUT}", "class_variant": len(classes)}


def _read_list(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2 or not fields[0] or not fields[-1]:
            raise MMBenchError(f"{path}:{line_no}: expected '<clip>,...,<label>', got {line!r}")
        rows.append((fields[0], fields[-1]))
    if not rows:
        raise MMBenchError(f"{path} lists no clips")
    return rows


def _classes(root: Path, labels: list[str]) -> tuple[list[str], dict[str, int]]:
    """Class names and label -> index, from integer labels (named by classes.txt if present) or names."""
    names_file = root / "classes.txt"
    names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()] if names_file.exists() else None
    if all(label.lstrip("-").isdigit() for label in labels):
        values = sorted({int(label) for label in labels})
        if values[0] < 0:
            raise MMBenchError(f"kinetics_sounds: class indices must start at 0, found {values[0]}")
        count = values[-1] + 1
        if names is not None and len(names) < count:
            raise MMBenchError(f"{names_file} names {len(names)} classes but the lists use index {values[-1]}")
        classes = names if names is not None else [str(k) for k in range(count)]
        return classes, {label: int(label) for label in labels}
    classes = names if names is not None else sorted(set(labels))
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise MMBenchError(f"kinetics_sounds: labels {unknown[:3]} are not in {names_file}")
    return classes, {c: i for i, c in enumerate(classes)}


# ---------------------------------------------------------------------------------------
# AVE
# ---------------------------------------------------------------------------------------

AVE_LAYOUT = ("ROOT/trainSet.txt, ROOT/valSet.txt, ROOT/testSet.txt (the AVE release: "
              "'Category&VideoID&Quality&StartTime&EndTime' per line), ROOT/audio/<VideoID>.wav, "
              "ROOT/visual/<VideoID>/*.jpg (OGM-GE's AVE&CREMA-D extraction)")


@DATASETS.register("ave")
class AveDataset(AudioVisualDataset):
    """AVE: audio-visual events, 28 classes, official train/val/test annotation files (needs --root)."""

    source = "https://github.com/YapengTian/AVE-ECCV18"
    citation = ("Tian, Y., Shi, J., Li, B., Duan, Z. & Xu, C. (2018). Audio-Visual Event Localization in "
                "Unconstrained Videos. ECCV.")

    @dataclass
    class Options(AVOptions):
        num_classes: int = 28  # 0 = accept any count
        sample_rate: int = 16000  # ARL's AVE setting: 16 kHz, STFT 512 / 256, 3 frames
        duration: float = 10.0
        n_fft: int = 512
        hop: int = 256
        frames: int = 3
        duplicates: str = "keep"  # a video listed twice in one split file: keep both rows, or drop it (OGM-GE)
        on_error: str = "error"

    def index(self, root: Path) -> tuple[dict[str, list[RawSample]], list[str], dict[str, Any]]:
        o = self.options
        check_choice("duplicates", o.duplicates, ("keep", "drop"))
        files = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
        rows = {}
        for split, name in files.items():
            if not (root / name).is_file():
                raise MMBenchError(f"ave: {root / name} not found; expected layout: {AVE_LAYOUT}")
            rows[split] = _read_ave(root / name)
        classes = sorted({c for r in rows.values() for c, _ in r})
        check_class_count("ave", classes, o.num_classes)
        for d in ("audio", "visual"):
            _require_dir(root / d, "ave", AVE_LAYOUT)
        dropped: dict[str, list[str]] = {}
        splits = {}
        for split, r in rows.items():
            counts: dict[str, int] = {}
            for _, vid in r:
                counts[vid] = counts.get(vid, 0) + 1
            repeated = sorted(v for v, n in counts.items() if n > 1)
            if o.duplicates == "drop" and repeated:
                dropped[split] = repeated
                r = [(c, v) for c, v in r if counts[v] == 1]
            splits[split] = [RawSample(vid, classes.index(cat),
                                       {"audio": root / "audio" / f"{vid}.wav", "frames": root / "visual" / vid})
                             for cat, vid in r]
        ids = {s: {x.id for x in v} for s, v in splits.items()}
        overlap = {"train-test": len(ids["train"] & ids["test"]), "train-val": len(ids["train"] & ids["val"])}
        info = {"split": {"source_splits": "trainSet.txt / valSet.txt / testSet.txt (official)"},
                "layout": AVE_LAYOUT, "duplicates": {"policy": o.duplicates, "dropped": dropped},
                "videos_in_two_splits": overlap,
                "segments": "whole 10-s clip (the annotated event's start/end are not used), as OGM-GE/ARL"}
        return splits, classes, info


def _read_ave(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.strip().split("&")
        if line_no == 1 and fields[0] == "Category":
            continue  # header
        if len(fields) != 5 or not fields[0] or not fields[1]:
            raise MMBenchError(f"{path}:{line_no}: expected 'Category&VideoID&Quality&StartTime&EndTime', "
                               f"got {line!r}")
        rows.append((fields[0], fields[1]))
    if not rows:
        raise MMBenchError(f"{path} lists no videos")
    return rows
