"""NYUD2 RGB-D scene recognition in the QMF / TMC layout.

Raw layout (QMF's ``nyud2_trainvaltest`` archive, read by its ``AlignedConcDataset``):
``ROOT/{train,val,test}/<class>/*.png``, each image holding the RGB view on its left half and the
depth view on its right half. Classes are the sorted class folders of ``train`` (10 scene classes).
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

NYUD2_LAYOUT = "ROOT/{train,val,test}/<class>/*.png, each image = RGB (left half) | depth (right half); val optional"


@DATASETS.register("nyud2")
class Nyud2Dataset(DatasetBuilder):
    """NYUD2: RGB + depth scene images, 10 classes, QMF/TMC train/val/test folders (needs --root)."""

    @dataclass
    class Options:
        image_size: int = 224  # each view resized to image_size x image_size (QMF's evaluation size)
        depth_channels: int = 1  # 1: one channel; 3: keep the stored three channels (e.g. HHA)
        num_classes: int = 10  # 0 = accept any count
        val_fraction: float = 0.1  # only without a val folder
        seed: int = 0
        on_error: str = "error"  # error or skip (and record) on a missing / unreadable image

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        o = self.options
        mods = select_modalities(self.registry_name, modalities, ("rgb", "depth"))
        check_choice("on_error", o.on_error, ("error", "skip"))
        check_choice("depth_channels", o.depth_channels, (1, 3))
        if o.image_size < 8:
            raise MMBenchError("option image_size must be at least 8")
        for split in ("train", "test"):
            if not (root / split).is_dir():
                raise MMBenchError(f"nyud2: {root / split} not found; expected layout: {NYUD2_LAYOUT}")
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        check_class_count("nyud2", classes, o.num_classes)
        samples = {s: _list(root / s, classes) for s in ("train", "val", "test") if (root / s).is_dir()}
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

        info = {"source": "https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html (data); prepared split: the "
                          "nyud2_trainvaltest archive linked from https://github.com/QingyangZhang/QMF",
                "citation": "Silberman, N., Hoiem, D., Kohli, P. & Fergus, R. (2012). Indoor Segmentation and "
                            "Support Inference from RGBD Images. ECCV.",
                "split": split_record, "layout": NYUD2_LAYOUT, "on_error": o.on_error,
                "preprocessing": {m: {"size": [size, size], "resize": "stretch to size x size, bilinear (QMF eval)",
                                      "half": half[m],
                                      "channels": 3 if m == "rgb" else o.depth_channels, "dtype": "uint8, 0-255",
                                      "normalisation": "inside the model: (x - train mean) / train std"}
                                  for m in mods}}
        return Prepared({s: stream(samples[s], load) for s in ("train", "val", "test")}, classes,
                        {m: "image" for m in mods}, info, layout, skip_unreadable=o.on_error == "skip")


def _list(folder: Path, classes: list[str]) -> list[RawSample]:
    samples = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if d.name not in classes:
            raise MMBenchError(f"nyud2: class folder {d} is not a train class ({', '.join(classes)})")
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            samples.append(RawSample(f"{folder.name}/{d.name}/{f.name}", classes.index(d.name), {"path": f}))
    if not samples:
        raise MMBenchError(f"nyud2: no images in {folder}; expected layout: {NYUD2_LAYOUT}")
    return samples
