"""Multi-view data as one CSV per view and split: the layout multi-omics benchmarks publish.

Expected files in ``--root``: ``{view}_tr.csv`` and ``{view}_te.csv`` (numbers only, no
header, one row per sample) for each view, plus ``labels_tr.csv`` and ``labels_te.csv``
(one integer class per row). View names come from ``--modalities``, else
from an optional ``views.txt`` (one name per line, or ``file_stem,name`` to rename files
such as MOGONET's ``1_tr.csv``), else from the ``*_tr.csv`` files found. Class names come
from an optional ``classes.txt`` (labels index it from 0); without it the classes are the label
values found, numbered in order (``{1, 5, 9}`` -> 0, 1, 2; recorded in ``meta.json``). The test
split is the ``_te`` files; validation is carved from ``_tr`` (stratified, recorded seed). Views
are standardised with training statistics. A value that is not a finite float32 (NaN, inf,
1e300) is an error naming its file, row and column, unless ``-o on_nonfinite=mean`` replaces
it by the training mean of its column.
"""

from __future__ import annotations

import logging
import warnings
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
        on_nonfinite: str = "error"  # error | mean (the column's mean over the finite training values)

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        if self.options.on_nonfinite not in ("error", "mean"):
            raise MMBenchError(f"-o on_nonfinite must be error or mean, got {self.options.on_nonfinite!r}")
        files = self.view_files(root, modalities)
        splits = {}
        for split, suffix in (("train", "tr"), ("test", "te")):
            labels = _labels(root / f"labels_{suffix}.csv")
            inputs = {name: _read(root / f"{stem}_{suffix}.csv") for name, stem in files.items()}
            for name, x in inputs.items():
                if x.ndim != 2 or len(x) != len(labels):
                    raise MMBenchError(f"{root / f'{files[name]}_{suffix}.csv'} has {len(x)} rows but "
                                       f"labels_{suffix}.csv has {len(labels)}; each row is one sample")
            splits[split] = (inputs, labels)
        widths = {n: x.shape[1] for n, x in splits["train"][0].items()}
        for n, x in splits["test"][0].items():
            if x.shape[1] != widths[n]:
                raise MMBenchError(f"view {n!r} has {widths[n]} columns in _tr but {x.shape[1]} in _te")
        o = self.options
        info = {"source": f"csv views in {root}", "files": files, **self.info()}
        replaced = _finite(splits, {n: {s: root / f"{stem}_{x}.csv" for s, x in (("train", "tr"), ("test", "te"))}
                                    for n, stem in files.items()}, o.on_nonfinite == "mean")
        if replaced:
            info["nonfinite"] = {"replaced": replaced, "by": "the column's mean over the finite training values"}
        classes, values = self._classes(root, splits)
        if values is not None:
            info["label_values"] = values
        self.check(root, splits, classes)
        info["split"] = carve_val(splits, o.val_fraction, o.seed)
        if o.standardize:
            info["preprocessing"] = standardize(splits, list(files))
        return Prepared(splits, classes, {n: "vector" for n in files}, info)

    # presets of this layout (brca, rosmap) override these
    def view_files(self, root: Path, modalities: list[str] | None) -> dict[str, str]:
        """View name -> file stem."""
        return _view_files(root, modalities)

    def class_names(self, root: Path, num_classes: int) -> list[str] | None:
        """Names of classes ``0..`` when the files give them (``classes.txt``), else None: the classes are
        then the label values found. ``num_classes``: the largest label + 1."""
        classes_file = root / "classes.txt"
        if not classes_file.exists():
            return None
        names = classes_file.read_text().split()
        if num_classes > len(names):
            raise MMBenchError(f"labels must lie in [0, {len(names)}) for the {len(names)} classes {classes_file} "
                               f"names, found labels up to {num_classes - 1}; add the missing names or fix the labels")
        return names

    def _classes(self, root: Path, splits: dict) -> tuple[list[str], list[int] | None]:
        """The class names, with the labels renumbered in place when they are the values found (then
        also returned, in class order, when they were not already 0, 1, ...)."""
        labels = np.concatenate([splits["train"][1], splits["test"][1]])
        names = self.class_names(root, int(labels.max()) + 1)
        if names is not None:
            return names, None
        values, codes = np.unique(labels, return_inverse=True)
        splits["train"] = (splits["train"][0], codes[:len(splits["train"][1])])
        splits["test"] = (splits["test"][0], codes[len(splits["train"][1]):])
        if values[-1] == len(values) - 1:
            return [str(v) for v in values], None
        logging.getLogger("mmbench").warning(
            "labels %s are not 0..%d: classes numbered in order of their value (recorded in meta.json)",
            _few(values), len(values) - 1)
        return [str(v) for v in values], [int(v) for v in values]

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
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns about an empty file; it is an error here
            return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except UserWarning:
        raise MMBenchError(f"{path} is empty; it needs one row of numbers per sample") from None
    except ValueError as e:
        raise MMBenchError(f"{path} must hold numbers only, comma-separated, no header ({e})") from None


def _labels(path: Path) -> np.ndarray:
    """One non-negative integer label per row."""
    raw = _read(path)
    if raw.shape[1] != 1:
        raise MMBenchError(f"{path} has {raw.shape[1]} columns; it must hold one integer label per row")
    labels = raw[:, 0]
    if not (np.isfinite(labels).all() and np.array_equal(labels, np.round(labels))):
        raise MMBenchError(f"{path} must hold integer class labels")
    bad = labels[(labels < 0) | (labels >= 2**62)]
    if len(bad):
        raise MMBenchError(f"{path} holds the label {bad[0]:g}; labels must be non-negative integers below 2**62")
    return labels.astype(np.int64)


def _finite(splits: dict, paths: dict[str, dict[str, Path]], impute: bool) -> int:
    """Cast every view to float32 in place. A value that is not finite in float32 is an error naming
    file, row and column, or (``impute``) replaced by its column's mean over finite training values;
    returns how many were replaced."""
    limit = float(np.finfo(np.float32).max)
    replaced = 0
    for view in splits["train"][0]:
        means = None
        for split in ("train", "test"):
            x = splits[split][0][view]
            bad = ~(np.abs(x) <= limit)
            if bad.any() and not impute:
                row, col = np.argwhere(bad)[0]
                raise MMBenchError(f"{paths[view][split]}: row {row + 1}, column {col + 1} holds {x[row, col]:g}, "
                                   "not a finite float32; fix the file, or prepare with -o on_nonfinite=mean to "
                                   "replace such values by their column's training mean")
            if bad.any():
                if means is None:
                    train = splits["train"][0][view]
                    ok = np.abs(train) <= limit
                    if not ok.any(axis=0).all():
                        col = int(np.flatnonzero(~ok.any(axis=0))[0])
                        raise MMBenchError(f"{paths[view]['train']}: column {col + 1} has no finite value")
                    means = np.where(ok, train, 0).sum(0) / ok.sum(0)
                x = np.where(bad, means, x)
                replaced += int(bad.sum())
            splits[split][0][view] = x.astype(np.float32)
    return replaced


def _few(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:5])
    return "{" + shown + (", ..." if len(values) > 5 else "") + "}"
