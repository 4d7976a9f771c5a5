"""RGB-D scene recognition in the QMF / TMC layout: NYUD2 (10 classes) and SUN RGB-D (19 classes).

Raw layout (QMF's ``nyud2_trainvaltest`` and ``sun_rgbd`` archives, both read by its
``AlignedConcDataset``; ``train_QMF_nyud2.py`` / ``train_QMF_sun.py``):
``ROOT/{train,val,test}/<class>/*.png``, each image holding the RGB view on its left half and the
depth view on its right half. Classes are the sorted class folders of ``train``.
``val`` is used when present, else a stratified validation split is carved from train (QMF
trains on train and selects on test; mmbench never selects on test). ``prepare`` stores

- ``rgb``: uint8 ``[3, S, S]`` (kind ``image``), the left half resized to ``S x S``;
- ``depth``: uint8 ``[1, S, S]`` (kind ``image``), the right half converted to one channel (ITU-R 601
  luma, identical to the value for grey depth renderings); ``-o depth_channels=3`` keeps three
  channels (e.g. HHA encodings).

QMF evaluates at Resize((224, 224)) with no crop (the default; ``--preset cpu`` stores 32 x 32 for CPU
work); its training crops and flips are not stored. A missing or unreadable image stops the
preparation (``on_error=error``, the default) or is skipped and recorded (``on_error=skip``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
from mmbench.data.media import IMAGE_SUFFIXES, load_image_halves
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS

RGBD_LAYOUT = "ROOT/{train,val,test}/<class>/*.png, each image = RGB (left half) | depth (right half); val optional"


class AlignedRgbdDataset(DatasetBuilder):
    """RGB | depth halves of one PNG per sample, in class folders per split (QMF's ``AlignedConcDataset``)."""

    source: str = ""
    citation: str = ""

    @dataclass
    class Options:
        image_size: int = 224  # each view resized to image_size x image_size (QMF's evaluation size)
        depth_channels: int = 1  # 1: one channel; 3: keep the stored three channels (e.g. HHA)
        num_classes: int = 0  # 0 = accept any count
        val_fraction: float = 0.1  # only without a val folder
        seed: int = 0
        on_error: str = "error"  # error or skip (and record) on a missing / unreadable image

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        o, name = self.options, self.registry_name
        mods = select_modalities(self.registry_name, modalities, ("rgb", "depth"))
        check_choice("on_error", o.on_error, ("error", "skip"))
        check_choice("depth_channels", o.depth_channels, (1, 3))
        if o.image_size < 8:
            raise MMBenchError("option image_size must be at least 8")
        for split in ("train", "test"):
            if not (root / split).is_dir():
                raise MMBenchError(f"{name}: {root / split} not found; expected layout: {RGBD_LAYOUT}")
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        check_class_count(name, classes, o.num_classes)
        samples = {s: _list(name, root / s, classes) for s in ("train", "val", "test") if (root / s).is_dir()}
        source = "train / val / test folders" if "val" in samples else "train / test folders; val carved from train"
        split_record = {**ensure_val_samples(samples, o.val_fraction, o.seed), "source_splits": source}
        size = o.image_size
        layout = {"rgb": ((3, size, size), "uint8"), "depth": ((o.depth_channels, size, size), "uint8")}
        layout = {m: layout[m] for m in mods}

        half = {"rgb": "left", "depth": "right"}
        mode = {"rgb": "RGB", "depth": "L" if o.depth_channels == 1 else "RGB"}

        def load(sample: RawSample) -> dict[str, np.ndarray]:
            arrays = load_image_halves(sample.source["path"], size, {half[m]: mode[m] for m in layout})
            return {m: arrays[half[m]] for m in layout}

        info = {"source": self.source, "citation": self.citation, "split": split_record, "layout": RGBD_LAYOUT, "on_error": o.on_error,
                "preprocessing": {m: {"size": [size, size], "resize": "stretch to size x size, bilinear (QMF eval)",
                                      "half": half[m],
                                      "channels": 3 if m == "rgb" else o.depth_channels, "dtype": "uint8, 0-255",
                                      "normalisation": "inside the model: (x - train mean) / train std"}
                                  for m in mods}}
        return Prepared({s: stream(samples[s], load) for s in ("train", "val", "test")}, classes,
                        {m: "image" for m in mods}, info, layout, skip_unreadable=o.on_error == "skip")


@DATASETS.register("nyud2")
class Nyud2Dataset(AlignedRgbdDataset):
    """NYUD2: RGB + depth scene images, 10 classes, QMF/TMC train/val/test folders (needs --root)."""

    source = ("https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html (data); prepared split: the "
              "nyud2_trainvaltest archive linked from https://github.com/QingyangZhang/QMF")
    citation = ("Silberman, N., Hoiem, D., Kohli, P. & Fergus, R. (2012). Indoor Segmentation and Support Inference "
                "from RGBD Images. ECCV.")

    @dataclass
    class Options(AlignedRgbdDataset.Options):
        num_classes: int = 10  # 0 = accept any count


@DATASETS.register("sun_rgbd")
class SunRgbdDataset(AlignedRgbdDataset):
    """SUN RGB-D: RGB + depth scene images, 19 classes, QMF/TMC train/test folders (needs --root)."""

    source = ("https://rgbd.cs.princeton.edu (data); prepared split: the sun_rgbd archive linked from "
              "https://github.com/QingyangZhang/QMF (RGBD-scene-recognition/train_QMF_sun.py, --n_classes 19)")
    citation = ("Song, S., Lichtenberg, S. P. & Xiao, J. (2015). SUN RGB-D: A RGB-D Scene Understanding Benchmark "
                "Suite. CVPR.")

    @dataclass
    class Options(AlignedRgbdDataset.Options):
        num_classes: int = 19  # 0 = accept any count


def _list(name: str, folder: Path, classes: list[str]) -> list[RawSample]:
    samples = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if d.name not in classes:
            raise MMBenchError(f"{name}: class folder {d} is not a train class ({', '.join(classes)})")
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            samples.append(RawSample(f"{folder.name}/{d.name}/{f.name}", classes.index(d.name), {"path": f}))
    if not samples:
        raise MMBenchError(f"{name}: no images in {folder}; expected layout: {RGBD_LAYOUT}")
    return samples
