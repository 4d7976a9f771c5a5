"""Small raw datasets written in the exact layout of the real downloads, for tests and benchmarks.

No real dataset can be downloaded on our machines, so every ``prepare`` pipeline is exercised on
files generated here: WAV files (written with :mod:`wave`), JPEG/PNG frames (Pillow), jsonl and
CSV split files, with the real names and folder structure. Every class has its own signal (a tone
frequency, an image colour, a keyword, a feature offset), so a model can learn from the fixtures.

Each generator ``fn(root, **sizes) -> Manifest`` returns what it wrote: sample counts per split
(``val`` is None when the layout has no validation split and ``prepare`` carves one), the class
names, and the per-split sample names.
"""

from __future__ import annotations

import json
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Manifest:
    classes: list[str]
    counts: dict[str, int | None]  # train / val / test as listed in the raw files (val None: carved)
    ids: dict[str, list[str]] = field(default_factory=dict)
    files: int = 0  # media files written


# ---------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------


def write_wav(path: Path, x: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> None:
    """PCM WAV with the standard library; ``x`` in [-1, 1], mono (copied to every channel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    if width == 1:
        data = np.round(x * 127 + 128).astype(np.uint8)
    elif width == 2:
        data = np.round(x * 32767).astype("<i2")
    else:
        data = np.round(x * (2**31 - 1)).astype("<i4")
    data = np.repeat(data[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


def write_image(path: Path, pixels: np.ndarray, quality: int = 90) -> None:
    """``pixels`` [H, W, 3] or [H, W] uint8; the format follows the suffix (.jpg, .png)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=quality)
    else:
        image.save(path)


def tone(k: int, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``k``'s clip: a sine at 200 * (k + 1) Hz (folded into the band) plus a little noise."""
    t = np.arange(int(round(seconds * rate))) / rate
    freq = 200.0 * (k + 1) % (0.45 * rate) + 100.0
    return 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))


def picture(k: int, size: int, rng: np.random.Generator, classes: int) -> np.ndarray:
    """Class ``k``'s image: a class colour plus noise, with a white Γ in the upper left (so crops and
    flips are visible), [size, size, 3] uint8."""
    hue = (k + 0.5) / max(classes, 1)
    colour = np.array([255 * hue, 255 * (1 - hue), 128 + 100 * np.sin(6.28 * hue)])
    pixels = colour[None, None] + rng.normal(0, 20, (size, size, 3))
    start, end, width = size // 8, size // 2, max(1, size // 12)
    pixels[start:end, start:start + width] = pixels[start:start + width, start:end] = 255
    return np.clip(pixels, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Audio-visual layouts
# ---------------------------------------------------------------------------------------

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
_SENTENCES = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI")


def _clip(path_wav: Path, frames_dir: Path, k: int, classes: int, seconds: float, rate: int, frames: int,
          size: int, rng: np.random.Generator) -> int:
    write_wav(path_wav, tone(k, seconds, rate, rng), rate)
    for f in range(frames):
        write_image(frames_dir / f"{f:05d}.jpg", picture(k, size, rng, classes))
    return 1 + frames


def cremad(root: Path, train_per_class: int = 2, test_per_class: int = 1, seconds: float = 0.5, rate: int = 16000,
           frames: int = 2, size: int = 32, split_files: bool = True, seed: int = 0) -> Manifest:
    """``AudioWAV/<clip>.wav``, ``Image-01-FPS/<clip>/<frame>.jpg``, ``train.csv`` / ``test.csv`` (OGM-GE)."""
    root, rng = Path(root), np.random.default_rng(seed)
    rows: dict[str, list[str]] = {"train": [], "test": []}
    files = 0
    for k, emotion in enumerate(CREMAD_EMOTIONS):
        for j in range(train_per_class + test_per_class):
            clip = f"{1001 + j}_{_SENTENCES[(k + j) % len(_SENTENCES)]}_{emotion}_XX"
            files += _clip(root / "AudioWAV" / f"{clip}.wav", root / "Image-01-FPS" / clip, k, 6, seconds, rate,
                           frames, size, rng)
            rows["train" if j < train_per_class else "test"].append(clip)
    if split_files:
        for split, clips in rows.items():
            (root / f"{split}.csv").write_text("".join(f"{c},{c.split('_')[2]}\n" for c in clips))
    counts = {"train": len(rows["train"]), "val": None, "test": len(rows["test"])}
    return Manifest(list(CREMAD_EMOTIONS), counts, rows, files)


def kinetics_sounds(root: Path, num_classes: int = 31, train_per_class: int = 3, test_per_class: int = 1,
                    seconds: float = 0.5, rate: int = 16000, frames: int = 2, size: int = 32,
                    layout: str = "per_split", seed: int = 0) -> Manifest:
    """``my_train.txt`` / ``my_test.txt`` (``<clip>,10,<label>``) and ``{train,test}/<clip>/`` holding
    ``<clip>.wav`` and the frames (OGM-GE's VGG&KS tree), or ``audio/`` + ``visual/`` (``layout="flat"``)."""
    root, rng = Path(root), np.random.default_rng(seed)
    rows: dict[str, list[str]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    files = 0
    for k in range(num_classes):
        for j in range(train_per_class + test_per_class):
            split = "train" if j < train_per_class else "test"
            clip = f"yt{k:03d}x{j}_{10 * j}"
            if layout == "flat":
                wav, frame_dir = root / "audio" / f"{clip}.wav", root / "visual" / clip
            else:
                wav, frame_dir = root / split / clip / f"{clip}.wav", root / split / clip
            files += _clip(wav, frame_dir, k, num_classes, seconds, rate, frames, size, rng)
            rows[split].append(clip)
            lines[split].append(f"{clip},10,{k}\n")
    for split in rows:
        (root / f"my_{split}.txt").write_text("".join(lines[split]))
    counts = {"train": len(rows["train"]), "val": None, "test": len(rows["test"])}
    return Manifest([str(k) for k in range(num_classes)], counts, rows, files)


AVE_CATEGORIES = ("Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane",
                  "Race car, auto racing", "Female speech, woman speaking", "Helicopter", "Violin, fiddle", "Flute",
                  "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle", "Acoustic guitar", "Train horn",
                  "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus", "Chainsaw", "Cat", "Horse",
                  "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin")


def ave(root: Path, num_classes: int = 28, per_split: tuple[int, int, int] = (2, 1, 1), seconds: float = 0.5,
        rate: int = 16000, frames: int = 3, size: int = 32, seed: int = 0) -> Manifest:
    """``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt`` (``Category&VideoID&Quality&Start&End``, with
    the release's header line), ``audio/<VideoID>.wav``, ``visual/<VideoID>/<frame>.jpg``."""
    root, rng = Path(root), np.random.default_rng(seed)
    classes = list(AVE_CATEGORIES[:num_classes])
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    files = 0
    for k, category in enumerate(classes):
        for split, count in zip(rows, per_split):
            for j in range(count):
                vid = f"v{k:02d}{split[:2]}{j}AbCdEf"[:11]
                files += _clip(root / "audio" / f"{vid}.wav", root / "visual" / vid, k, num_classes, seconds, rate,
                               frames, size, rng)
                rows[split].append(f"{category}&{vid}&good&0&10")
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        (root / name).write_text("Category&VideoID&Quality&StartTime&EndTime\n" + "".join(f"{r}\n" for r in rows[split]))
    ids = {s: [r.split("&")[1] for r in v] for s, v in rows.items()}
    return Manifest(sorted(classes), {s: len(v) for s, v in rows.items()}, ids, files)


def spectrogram(k: int, bins: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Class ``k``'s precomputed log spectrogram ``[bins, steps]`` float32: one bright band at bin ``k``."""
    x = rng.normal(-4.0, 0.5, (bins, steps))
    x[k % bins] += 4.0
    return x.astype(np.float32)


def vggsound(root: Path, num_classes: int = 309, train_per_class: int = 2, test_per_class: int = 1, frames: int = 4,
             size: int = 32, bins: int = 16, steps: int = 20, seed: int = 0) -> Manifest:
    """``vggsound.csv`` (``<ytid>,<start>,<label>,<train|test>``, no header), frames in
    ``video_train/<ytid>_<start>/*.jpg`` and precomputed spectrograms ``audio_train/<ytid>_<start>.npy``
    (``[F, T]`` float32), the same under ``video_test`` / ``audio_test`` (BalanceMM's VGGSound reader)."""
    root, rng = Path(root), np.random.default_rng(seed)
    classes = [f"sound {k:03d}" for k in range(num_classes)]
    rows: dict[str, list[str]] = {"train": [], "test": []}
    lines, files = [], 0
    for k, label in enumerate(classes):
        for j in range(train_per_class + test_per_class):
            split = "train" if j < train_per_class else "test"
            ytid, start = f"-y{k:03d}x{j}Ab_c", 10 * j
            clip = f"{ytid}_{start}"
            np.save(_mkdir(root / f"audio_{split}") / f"{clip}.npy", spectrogram(k, bins, steps, rng))
            for f in range(frames):
                write_image(root / f"video_{split}" / clip / f"frame_{f:05d}.jpg", picture(k, size, rng, num_classes))
            files += 1 + frames
            rows[split].append(clip)
            lines.append(f'{ytid},{start},"{label}",{split}\n')
    (root / "vggsound.csv").write_text("".join(lines))
    return Manifest(sorted(classes), {"train": len(rows["train"]), "val": None, "test": len(rows["test"])}, rows, files)


def balanced_av(root: Path, num_classes: int = 30, per_split: tuple[int, int] = (2, 1), frames: int = 10,
                size: int = 32, bins: int = 16, steps: int = 20, seed: int = 0) -> Manifest:
    """``annotations.json`` (``{"labels": [...], "database": {key: {"subset": "training" | "testing",
    "label": name}}}``), ``visual/<key>.hdf5`` (dataset ``video``: one encoded JPEG per frame) and
    ``audio/<key>.pkl`` (a pickled ``[F, T]`` spectrogram), as BalanceMM's BalancedAV reader expects.
    Needs h5py."""
    import io
    import pickle

    import h5py
    from PIL import Image

    root, rng = Path(root), np.random.default_rng(seed)
    classes = [f"event {k:02d}" for k in range(num_classes)]
    database: dict[str, dict[str, str]] = {}
    ids: dict[str, list[str]] = {"train": [], "test": []}
    for k, label in enumerate(classes):
        for split, subset, count in (("train", "training", per_split[0]), ("test", "testing", per_split[1])):
            for j in range(count):
                key = f"v{k:02d}{split}{j}"
                with open(_mkdir(root / "audio") / f"{key}.pkl", "wb") as f:
                    pickle.dump(spectrogram(k, bins, steps, rng), f)
                encoded = []
                for _ in range(frames):
                    buf = io.BytesIO()
                    Image.fromarray(picture(k, size, rng, num_classes)).save(buf, format="JPEG", quality=90)
                    encoded.append(np.frombuffer(buf.getvalue(), np.uint8))
                with h5py.File(_mkdir(root / "visual") / f"{key}.hdf5", "w") as f:
                    f.create_dataset("video", (frames,), dtype=h5py.vlen_dtype(np.uint8))[:] = encoded
                database[key] = {"subset": subset, "label": label}
                ids[split].append(key)
    (root / "annotations.json").write_text(json.dumps({"labels": classes, "database": database}))
    return Manifest(classes, {"train": len(ids["train"]), "val": None, "test": len(ids["test"])}, ids,
                    2 * len(database))


UCF101_EXAMPLES = ("ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam")


def ucf101(root: Path, num_classes: int = 101, train_per_class: int = 2, test_per_class: int = 1, rgb_frames: int = 6,
           flow_frames: int = 6, size: int = 32, seed: int = 0) -> Manifest:
    """``ucfTrainTestlist/{classInd.txt, trainlist01.txt, testlist01.txt}`` (the official split files),
    RGB frames ``rgb/<video>/frame_0000K.jpg`` and TV-L1 flow ``flow/u/<video>/frame00000K.jpg`` +
    ``flow/v/<video>/...`` (greyscale), as BalanceMM's UCF-101 reader names them."""
    root, rng = Path(root), np.random.default_rng(seed)
    classes = [UCF101_EXAMPLES[k] if k < len(UCF101_EXAMPLES) else f"Action{k:03d}" for k in range(num_classes)]
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{k + 1} {c}\r\n" for k, c in enumerate(classes)))
    rows: dict[str, list[str]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    files = 0
    for k, name in enumerate(classes):
        for j in range(train_per_class + test_per_class):
            split = "train" if j < train_per_class else "test"
            video = f"v_{name}_g{j + 1:02d}_c01"
            for f in range(1, rgb_frames + 1):
                write_image(root / "rgb" / video / f"frame_{f:05d}.jpg", picture(k, size, rng, num_classes))
            ramp = np.linspace(0, 255, size)[None, :] * (k + 1) / num_classes
            for f in range(1, flow_frames + 1):
                for axis, image in (("u", ramp), ("v", ramp.T)):
                    grey = np.clip(image + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
                    write_image(root / "flow" / axis / video / f"frame{f:06d}.jpg", grey)
            files += rgb_frames + 2 * flow_frames
            rows[split].append(video)
            lines[split].append(f"{name}/{video}.avi" + (f" {k + 1}" if split == "train" else "") + "\r\n")
    (lists / "trainlist01.txt").write_text("".join(lines["train"]))
    (lists / "testlist01.txt").write_text("".join(lines["test"]))
    return Manifest(sorted(classes), {"train": len(rows["train"]), "val": None, "test": len(rows["test"])}, rows, files)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------
# Image + text (MMBT / QMF jsonl)
# ---------------------------------------------------------------------------------------

_WORDS = ("the", "a", "day", "love", "with", "my", "new", "photo", "today", "great", "time", "recipe", "home")


def _jsonl(root: Path, classes: list[str], per_split: dict[str, int], image_path: Callable[[str, str, str], str],
           size: int, seed: int) -> Manifest:
    rng = np.random.default_rng(seed)
    ids: dict[str, list[str]] = {s: [] for s in per_split}
    files, n = 0, 0
    for split, count in per_split.items():
        lines = []
        for k, label in enumerate(classes):
            for _ in range(count):
                n += 1
                sid = str(n)
                img = image_path(split, label, sid)
                write_image(root / img, picture(k, size, rng, len(classes)))
                files += 1
                words = list(rng.choice(_WORDS, size=int(rng.integers(3, 9))))
                words.insert(int(rng.integers(0, len(words))), label.replace("_", " "))
                text = " ".join(words) + rng.choice(["!", ".", " #tag", ""])
                lines.append(json.dumps({"id": sid, "label": label, "text": text, "img": img}) + "\n")
                ids[split].append(sid)
        (root / f"{split}.jsonl").write_text("".join(lines))
    counts = {"train": len(ids["train"]), "val": len(ids["dev"]) if "dev" in ids else None, "test": len(ids["test"])}
    ids["val"] = ids.pop("dev", [])
    return Manifest(sorted(classes), counts, ids, files)


def mvsa_single(root: Path, per_split: tuple[int, int, int] = (4, 1, 1), size: int = 32, seed: int = 0) -> Manifest:
    """``train.jsonl`` / ``dev.jsonl`` / ``test.jsonl`` with ``img: data/<id>.jpg`` (QMF's MVSA_Single)."""
    return _jsonl(Path(root), ["positive", "negative", "neutral"], dict(zip(("train", "dev", "test"), per_split)),
                  lambda split, label, sid: f"data/{sid}.jpg", size, seed)


FOOD101_EXAMPLES = ("apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "frozen_yogurt")


def food101(root: Path, num_classes: int = 101, per_split: tuple[int, int, int] = (2, 1, 1), size: int = 32,
            seed: int = 0) -> Manifest:
    """``train.jsonl`` / ``dev.jsonl`` / ``test.jsonl`` with ``img: images/<train|test>/<class>/<file>.jpg``."""
    classes = [FOOD101_EXAMPLES[k] if k < len(FOOD101_EXAMPLES) else f"food_{k:03d}" for k in range(num_classes)]
    return _jsonl(Path(root), classes, dict(zip(("train", "dev", "test"), per_split)),
                  lambda split, label, sid: f"images/{'test' if split == 'test' else 'train'}/{label}/{label}_{sid}.jpg",
                  size, seed)


# ---------------------------------------------------------------------------------------
# Feature files (CMU-MOSEI)
# ---------------------------------------------------------------------------------------

MOSEI_WIDTHS = {"text": 300, "audio": 74, "vision": 35}


def cmu_mosei(root: Path, per_split: tuple[int, int, int] = (16, 6, 6), steps: int = 8, aligned: bool = False,
              seed: int = 0) -> Manifest:
    """``mosei_senti_data_noalign.pkl`` (or ``mosei_senti_data.pkl`` when ``aligned``): ``{train, valid,
    test}`` -> ``{text [N,T,300], audio [N,T,74], vision [N,T,35], labels [N,1,1], id [N,3]}``, the
    released structure (here ``T = steps``); sentiment alternates negative / positive, and the audio holds
    ``-inf`` entries as the released features do."""
    import pickle

    root, rng = Path(root), np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data, ids = {}, {}
    for split, n in zip(("train", "valid", "test"), per_split):
        score = np.where(np.arange(n) % 2 == 0, -1.0, 1.0) * rng.uniform(0.2, 3.0, n)
        score[1] = 0.0  # a neutral score counts as non-negative
        part = {}
        for key, width in MOSEI_WIDTHS.items():
            x = rng.normal(size=(n, steps, width)) + 0.8 * np.sign(score + 1e-9)[:, None, None]
            part[key] = x.astype(np.float32)
        part["audio"][0, 0, :3] = -np.inf
        part["labels"] = score.reshape(n, 1, 1).astype(np.float32)
        part["id"] = np.array([[f"vid{split}{i}", "0.0", "1.0"] for i in range(n)])
        data[split] = part
        ids["val" if split == "valid" else split] = [f"vid{split}{i}" for i in range(n)]
    name = "mosei_senti_data.pkl" if aligned else "mosei_senti_data_noalign.pkl"
    with open(root / name, "wb") as f:
        pickle.dump(data, f)
    counts = dict(zip(("train", "val", "test"), per_split))
    return Manifest(["negative", "non-negative"], counts, ids, 1)


# ---------------------------------------------------------------------------------------
# RGB-D and multi-omics
# ---------------------------------------------------------------------------------------

NYUD2_CLASSES = ("bathroom", "bedroom", "bookstore", "classroom", "dining_room", "home_office", "kitchen",
                 "living_room", "office", "others")


# the 19 SUN RGB-D scene classes with at least 80 samples (Song et al., CVPR 2015), QMF's --n_classes 19
SUN_RGBD_CLASSES = ("bathroom", "bedroom", "classroom", "computer_room", "conference_room", "corridor",
                    "dining_area", "dining_room", "discussion_area", "furniture_store", "home_office", "kitchen",
                    "lab", "lecture_theatre", "library", "living_room", "office", "rest_space", "study_space")


def nyud2(root: Path, num_classes: int = 10, per_split: tuple[int, int, int] = (3, 1, 1), size: int = 32,
          with_val: bool = True, seed: int = 0, names: tuple[str, ...] = NYUD2_CLASSES) -> Manifest:
    """``{train,val,test}/<class>/<n>.png``, each image RGB (left) | grey depth (right), as QMF's archive."""
    root, rng = Path(root), np.random.default_rng(seed)
    classes = list(names[:num_classes])
    splits = ("train", "val", "test") if with_val else ("train", "test")
    counts = dict(zip(("train", "val", "test"), per_split))
    ids: dict[str, list[str]] = {s: [] for s in splits}
    files = 0
    for split in splits:
        for k, name in enumerate(classes):
            for j in range(counts[split]):
                rgb = picture(k, size, rng, num_classes)
                ramp = np.linspace(0, 255, size)[None, :] * (k + 1) / num_classes
                depth = np.clip(ramp + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
                both = np.concatenate([rgb, np.repeat(depth[..., None], 3, axis=2)], axis=1)
                write_image(root / split / name / f"{j:05d}.png", both)
                ids[split].append(f"{split}/{name}/{j:05d}.png")
                files += 1
    out = {s: len(v) for s, v in ids.items()}
    return Manifest(classes, {"train": out["train"], "val": out.get("val"), "test": out["test"]}, ids, files)


def sun_rgbd(root: Path, num_classes: int = 19, per_split: tuple[int, int, int] = (3, 0, 1), size: int = 32,
             with_val: bool = False, seed: int = 0) -> Manifest:
    """``{train,test}/<class>/<n>.png`` (QMF's ``sun_rgbd`` archive: no val folder), halves as :func:`nyud2`."""
    return nyud2(root, num_classes, per_split, size, with_val, seed, SUN_RGBD_CLASSES)


MOGONET_WIDTHS = {"brca": (1000, 1000, 503), "rosmap": (200, 200, 200)}
MOGONET_CLASSES = {"brca": 5, "rosmap": 2}


def mogonet(root: Path, dataset: str = "brca", train: int = 60, test: int = 20, widths: tuple[int, ...] | None = None,
            seed: int = 0) -> Manifest:
    """``{1,2,3}_tr.csv``, ``{1,2,3}_te.csv``, ``labels_tr.csv``, ``labels_te.csv``, ``{1,2,3}_featname.csv``:
    comma-separated floats, no header (MOGONET's BRCA/ and ROSMAP/ folders)."""
    root, rng = Path(root), np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    k = MOGONET_CLASSES[dataset]
    widths = widths or MOGONET_WIDTHS[dataset]
    labels = {"tr": np.arange(train) % k, "te": np.arange(test) % k}
    prefixes = ("ENSG", "cg", "hsa-mir-")
    for v, w in enumerate(widths, 1):
        for suffix, y in labels.items():
            x = rng.normal(size=(len(y), w)) + 0.5 * y[:, None] * (np.arange(w) % (k + 1) == 1)
            np.savetxt(root / f"{v}_{suffix}.csv", x, delimiter=",", fmt="%.5f")
        (root / f"{v}_featname.csv").write_text("".join(f"{prefixes[v - 1]}{i:05d}\n" for i in range(w)))
    for suffix, y in labels.items():
        np.savetxt(root / f"labels_{suffix}.csv", y.astype(float), fmt="%.1f")
    return Manifest([str(c) for c in range(k)], {"train": train, "val": None, "test": test}, {}, 0)


def csv_views(root: Path, train: int = 45, test: int = 15, widths: tuple[int, ...] = (6, 4), classes: int = 3,
              seed: int = 0) -> Manifest:
    """``{view}_tr.csv`` / ``{view}_te.csv`` for views ``v1, v2, ...`` plus ``labels_tr.csv`` / ``labels_te.csv``."""
    root, rng = Path(root), np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    labels = {"tr": np.arange(train) % classes, "te": np.arange(test) % classes}
    for v, w in enumerate(widths, 1):
        for suffix, y in labels.items():
            np.savetxt(root / f"v{v}_{suffix}.csv", rng.normal(size=(len(y), w)) + y[:, None], delimiter=",")
    for suffix, y in labels.items():
        np.savetxt(root / f"labels_{suffix}.csv", y, fmt="%d")
    return Manifest([str(c) for c in range(classes)], {"train": train, "val": None, "test": test}, {}, 0)


FIXTURES: dict[str, Callable[..., Manifest]] = {
    "cremad": cremad,
    "kinetics_sounds": kinetics_sounds,
    "ave": ave,
    "vggsound": vggsound,
    "balanced_av": balanced_av,
    "ucf101": ucf101,
    "cmu_mosei": cmu_mosei,
    "mvsa_single": mvsa_single,
    "food101": food101,
    "nyud2": nyud2,
    "sun_rgbd": sun_rgbd,
    "brca": lambda root, **kw: mogonet(root, "brca", **kw),
    "rosmap": lambda root, **kw: mogonet(root, "rosmap", **kw),
    "csv_views": csv_views,
}
