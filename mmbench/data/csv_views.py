"""Multi-view data as one CSV per view and split: the layout multi-omics benchmarks publish.

Expected files in ``--root``: ``{view}_tr.csv`` and ``{view}_te.csv`` (numbers only, no
header, one row per sample) for each view, plus ``labels_tr.csv`` and ``labels_te.csv``
(one integer class per row, starting at 0). View names come from ``--modalities``, else
from an optional ``views.txt`` (one name per line, or ``file_stem,name`` to rename files
such as MOGONET's ``1_tr.csv``), else from the ``*_tr.csv`` files found. Class names come
from an optional ``classes.txt``. The test split is the ``_te`` files; validation is carved
from ``_tr`` (stratified, recorded seed). Views are standardised with training statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmbench.data.base import DatasetBuilder, Prepared, carve_val, standardize
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS


@DATASETS.register("csv_views")
class CsvViewsDataset(DatasetBuilder):
    """One CSV per view and split, the multi-omics layout (needs --root)."""

    @dataclass
    class Options:
        val_fraction: float = 0.15
        seed: int = 0
        standardize: bool = True

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        files = self.view_files(root, modalities)
        splits = {}
        for split, suffix in (("train", "tr"), ("test", "te")):
            labels = _read(root / f"labels_{suffix}.csv").reshape(-1)
            if not np.allclose(labels, np.round(labels)):
                raise MMBenchError(f"{root / f'labels_{suffix}.csv'} must hold integer class labels")
            inputs = {name: _read(root / f"{stem}_{suffix}.csv") for name, stem in files.items()}
            for name, x in inputs.items():
                if x.ndim != 2 or len(x) != len(labels):
                    raise MMBenchError(f"{root / f'{files[name]}_{suffix}.csv'} has {len(x)} rows but "
                                       f"labels_{suffix}.csv has {len(labels)}; each row is one sample")
            splits[split] = ({n: x.astype(np.float32) for n, x in inputs.items()}, labels.astype(np.int64))
        widths = {n: x.shape[1] for n, x in splits["train"][0].items()}
        for n, x in splits["test"][0].items():
            if x.shape[1] != widths[n]:
                raise MMBenchError(f"view {n!r} has {widths[n]} columns in _tr but {x.shape[1]} in _te")
        num_classes = int(max(splits["train"][1].max(), splits["test"][1].max())) + 1
        classes = self.class_names(root, num_classes)
        self.check(root, splits, classes)
        o = self.options
        info = {"source": f"csv views in {root}", "files": files, **self.info(),
                "split": carve_val(splits, o.val_fraction, o.seed)}
        if o.standardize:
            info["preprocessing"] = standardize(splits, list(files))
        return Prepared(splits, classes, {n: "vector" for n in files}, info)

    # presets of this layout (brca, rosmap) override these
    def view_files(self, root: Path, modalities: list[str] | None) -> dict[str, str]:
        """View name -> file stem."""
        return _view_files(root, modalities)

    def class_names(self, root: Path, num_classes: int) -> list[str]:
        classes_file = root / "classes.txt"
        return classes_file.read_text().split() if classes_file.exists() else [str(k) for k in range(num_classes)]

    def check(self, root: Path, splits: dict, classes: list[str]) -> None:
        """Extra checks of the read arrays (none for plain csv_views)."""

    def info(self) -> dict:
        return {}


def _view_files(root: Path, modalities: list[str] | None) -> dict[str, str]:
    """View name -> file stem."""
    views_file = root / "views.txt"
    mapping: dict[str, str] = {}
    if views_file.exists():
        for line in views_file.read_text().splitlines():
            if line.strip():
                stem, _, name = line.strip().partition(",")
                mapping[(name or stem).strip()] = stem.strip()
    else:
        mapping = {p.name[: -len("_tr.csv")]: p.name[: -len("_tr.csv")]
                   for p in sorted(root.glob("*_tr.csv")) if p.name != "labels_tr.csv"}
    if modalities:
        if len(modalities) == len(mapping) and set(modalities) != set(mapping) and not views_file.exists():
            mapping = dict(zip(modalities, mapping.values()))  # name the files' views in order
        else:
            missing = [m for m in modalities if m not in mapping]
            if missing:
                raise MMBenchError(f"views {missing} not found in {root}; available: {', '.join(mapping)}")
            mapping = {m: mapping[m] for m in modalities}
    if not mapping:
        raise MMBenchError(f"no view files in {root}: expected {{view}}_tr.csv, {{view}}_te.csv, "
                           "labels_tr.csv and labels_te.csv")
    return mapping


def _read(path: Path) -> np.ndarray:
    if not path.exists():
        raise MMBenchError(f"{path} is missing; csv_views needs {{view}}_tr.csv, {{view}}_te.csv, "
                           "labels_tr.csv and labels_te.csv in --root")
    try:
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise MMBenchError(f"{path} must hold numbers only, comma-separated, no header ({e})") from None
