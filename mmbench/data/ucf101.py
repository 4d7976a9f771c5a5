"""UCF-101 as a two-stream dataset: RGB frames + TV-L1 optical flow (BalanceMM's layout), official splits.

Raw layout: the official split files ``ucfTrainTestlist/classInd.txt`` (``<index> <Class>``),
``trainlist0S.txt`` (``<Class>/<video>.avi <index>``) and ``testlist0S.txt`` (``<Class>/<video>.avi``)
for split ``S`` (1 by default, as BalanceMM), extracted RGB frames ``rgb/<video>/*.jpg`` and the
horizontal / vertical flow ``flow/u/<video>/*.jpg`` / ``flow/v/<video>/*.jpg`` (greyscale, as in the
widely used TV-L1 release). ``prepare`` stores

- ``visual``: ``frames`` RGB frames ``[frames, 3, S, S]`` uint8 (kind ``video``);
- ``flow``: ``frames`` flow frames ``[frames, 2, S, S]`` uint8 (u and v as two channels, kind ``video``),

each picked evenly over the clip's files and resized to ``S = image_size`` (224 in BalanceMM; 64 by
default for CPU work). Classes are the class names sorted, as BalanceMM orders them. A listed video
whose RGB or flow folder is missing is skipped and recorded (BalanceMM drops it silently).
"""

from __future__ import annotations

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
    stream,
)
from mmbench.data.media import list_frames, load_frames, load_image, pick_frames
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS

MODALITIES = ("visual", "flow")
UCF_LAYOUT = ("ROOT/ucfTrainTestlist/{classInd.txt, trainlist01.txt, testlist01.txt} (the official split files), "
              "ROOT/rgb/<video>/*.jpg (RGB frames), ROOT/flow/u/<video>/*.jpg + ROOT/flow/v/<video>/*.jpg "
              "(TV-L1 flow, greyscale); <video> = the list entry's file name without .avi")


@DATASETS.register("ucf101")
class Ucf101Dataset(DatasetBuilder):
    """UCF-101 actions: RGB frames + optical flow, 101 classes, official split 1 (needs --root)."""

    source = "https://www.crcv.ucf.edu/data/UCF101.php"
    citation = ("Soomro, K., Zamir, A. R. & Shah, M. (2012). UCF101: A Dataset of 101 Human Actions Classes From "
                "Videos in The Wild. CRCV-TR-12-01, arXiv:1212.0402.")

    @dataclass
    class Options:
        split: int = 1  # official train/test split 1, 2 or 3 (BalanceMM: 1)
        num_classes: int = 101  # 0 = accept any count
        image_size: int = 64  # frames resized to image_size x image_size (224: BalanceMM)
        frames: int = 3  # RGB and flow frames per video, picked evenly (BalanceMM: 3 each)
        lists_dir: str = "ucfTrainTestlist"
        rgb_dir: str = "rgb"
        flow_u_dir: str = "flow/u"
        flow_v_dir: str = "flow/v"
        val_fraction: float = 0.1  # validation carved (stratified) from train: the release has none
        seed: int = 0
        on_error: str = "skip"  # skip (and record) or error on a video without frames

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        o = self.options
        mods = select_modalities("ucf101", modalities, MODALITIES)
        check_choice("on_error", o.on_error, ("skip", "error"))
        check_choice("split", o.split, (1, 2, 3))
        if o.image_size < 8 or o.frames < 1:
            raise MMBenchError("options need image_size >= 8 and frames >= 1")
        lists = root / o.lists_dir
        files = {"classes": lists / "classInd.txt", "train": lists / f"trainlist0{o.split}.txt",
                 "test": lists / f"testlist0{o.split}.txt"}
        for path in files.values():
            if not path.is_file():
                raise MMBenchError(f"ucf101: {path} not found; expected layout: {UCF_LAYOUT}")
        classes = sorted(_read_classes(files["classes"]))
        check_class_count("ucf101", classes, o.num_classes)
        dirs = {"rgb": root / o.rgb_dir, "u": root / o.flow_u_dir, "v": root / o.flow_v_dir}
        for d in dirs.values():
            if not d.is_dir():
                raise MMBenchError(f"ucf101: {d} not found; expected layout: {UCF_LAYOUT}")
        index = {c: i for i, c in enumerate(classes)}
        splits = {s: [RawSample(video, index[c], {k: d / video for k, d in dirs.items()})
                      for c, video in _read_list(files[s], index)] for s in ("train", "test")}
        record = {**ensure_val_samples(splits, o.val_fraction, o.seed),
                  "source_splits": f"{files['train'].name} / {files['test'].name} (official split {o.split})"}
        size, count = o.image_size, o.frames
        layout: dict[str, tuple[tuple[int, ...], str]] = {}
        if "visual" in mods:
            layout["visual"] = ((count, 3, size, size), "uint8")
        if "flow" in mods:
            layout["flow"] = ((count, 2, size, size), "uint8")

        def load(sample: RawSample) -> dict[str, np.ndarray]:
            out = {}
            if "visual" in layout:
                out["visual"] = load_frames(sample.source["rgb"], count, size)
            if "flow" in layout:
                u = list_frames(sample.source["u"])
                picked = [u[i] for i in pick_frames(len(u), count)]
                out["flow"] = np.stack([np.concatenate([load_image(p, size, "L"),
                                                        load_image(sample.source["v"] / p.name, size, "L")])
                                        for p in picked])
            return out

        frames = {"frames": count, "pick": "even", "size": [size, size], "resize": "stretch, bilinear",
                  "augmentation": "none stored (BalanceMM's train-time flips are not applied)"}
        info: dict[str, Any] = {
            "source": self.source, "citation": self.citation, "layout": UCF_LAYOUT, "split": record,
            "preprocessing": {**({"visual": {**frames, "dtype": "uint8 RGB"}} if "visual" in mods else {}),
                              **({"flow": {**frames, "dtype": "uint8, channels u, v (same file name)"}}
                                 if "flow" in mods else {})},
            "on_error": o.on_error}
        return Prepared({s: stream(rows, load) for s, rows in splits.items()}, classes,
                        {m: "video" for m in mods}, info, layout, skip_unreadable=o.on_error == "skip")


def _read_classes(path: Path) -> list[str]:
    names = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise MMBenchError(f"{path}:{line_no}: expected '<index> <ClassName>', got {line!r}")
        names.append(fields[1])
    if not names:
        raise MMBenchError(f"{path} lists no classes")
    return names


def _read_list(path: Path, index: dict[str, int]) -> list[tuple[str, str]]:
    """``(class, video)`` per line ``<Class>/<video>.avi [label]``; the class must be in classInd.txt."""
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        entry = line.split()[0]
        if entry.count("/") != 1:
            raise MMBenchError(f"{path}:{line_no}: expected '<Class>/<video>.avi', got {line!r}")
        cls, video = entry.split("/")
        if cls not in index:
            raise MMBenchError(f"{path}:{line_no}: class {cls!r} is not in classInd.txt")
        rows.append((cls, video.split(".")[0]))
    if not rows:
        raise MMBenchError(f"{path} lists no videos")
    return rows
