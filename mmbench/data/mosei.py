"""CMU-MOSEI sentiment from the released feature pickles (the files BalanceMM and MultiBench read).

The raw file is one pickle, ``mosei_senti_data_noalign.pkl`` (unaligned, BalanceMM's default) or
``mosei_senti_data.pkl`` (word-aligned, ``-o aligned=true``): a dict with splits ``train``,
``valid``, ``test``, each a dict of arrays ``text`` ``[N, T, 300]`` (GloVe), ``audio`` ``[N, T, 74]``
(COVAREP), ``vision`` ``[N, T, 35]`` (Facet), ``labels`` ``[N, 1, 1]`` (sentiment in [-3, 3]) and
``id``. ``prepare`` stores each modality as a float32 ``sequence`` ``[features, T]`` (``visual`` is
the file's ``vision``), non-finite values (the released audio holds ``-inf``) replaced by 0 as
BalanceMM does for audio, and labels as BalanceMM scores them: class 0 ``negative`` for a sentiment
below 0, class 1 ``non-negative`` otherwise. The official ``valid`` split is the validation set.

The pickle is read with a restricted unpickler that builds only numpy arrays and plain containers,
so a file that is not one of these feature files cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.base import DatasetBuilder, Prepared, UnreadableSample, select_modalities
from mmbench.data.media import read_pickled_arrays
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS

FILE_KEYS = {"text": "text", "audio": "audio", "visual": "vision"}  # modality -> key in the pickle
SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}
CLASSES = ("negative", "non-negative")
MOSEI_LAYOUT = ("ROOT/mosei_senti_data_noalign.pkl (unaligned) or ROOT/mosei_senti_data.pkl (aligned): "
                "{train, valid, test} -> {text [N,T,300], audio [N,T,74], vision [N,T,35], labels [N,1,1], id}")


def _load(path: Path) -> Any:
    try:
        return read_pickled_arrays(path)
    except UnreadableSample as e:
        raise MMBenchError(f"cmu_mosei: {e}; expected layout: {MOSEI_LAYOUT}") from None


@DATASETS.register("cmu_mosei")
class CmuMoseiDataset(DatasetBuilder):
    """CMU-MOSEI sentiment: text, audio and visual feature sequences, 2 classes (needs --root)."""

    source = ("https://github.com/pliang279/MultiBench (README: processed mosei folder); original data: "
              "https://github.com/A2Zadeh/CMU-MultimodalSDK")
    citation = ("Zadeh, A., Liang, P. P., Poria, S., Cambria, E. & Morency, L.-P. (2018). Multimodal Language "
                "Analysis in the Wild: CMU-MOSEI Dataset and Interpretable Dynamic Fusion Graph. ACL.")

    @dataclass
    class Options:
        aligned: bool = False  # False: mosei_senti_data_noalign.pkl (BalanceMM's if_align: false); True: mosei_senti_data.pkl
        file: str = ""  # another file name under --root (same structure)
        drop_empty_text: bool = False  # drop samples whose text features are all zero (MultiBench's drop_entry)

    def build(self, root: Path | None, modalities: list[str] | None) -> Prepared:
        assert root is not None
        o = self.options
        mods = select_modalities("cmu_mosei", modalities, tuple(FILE_KEYS))
        name = o.file or ("mosei_senti_data.pkl" if o.aligned else "mosei_senti_data_noalign.pkl")
        path = root / name
        if not path.is_file():
            raise MMBenchError(f"cmu_mosei: {path} not found; expected layout: {MOSEI_LAYOUT}")
        data = _load(path)
        splits, replaced, dropped = {}, {}, {}
        for split, key in SPLIT_KEYS.items():
            part = _split(data, key, path)
            labels = _labels(part["labels"], f"{path} [{key!r}]['labels']")
            keep = np.ones(len(labels), bool)
            if o.drop_empty_text:
                keep = _features(part, "text", path, key).reshape(len(labels), -1).any(axis=1)
                dropped[split] = int((~keep).sum())
            inputs = {}
            for m in mods:
                x = _features(part, m, path, key)
                if len(x) != len(labels):
                    raise MMBenchError(f"{path} [{key!r}]: {FILE_KEYS[m]} has {len(x)} samples, labels {len(labels)}")
                bad = ~np.isfinite(x)
                replaced[f"{split}/{m}"] = int(bad.sum())
                x = np.where(bad, np.float32(0), x)[keep]
                inputs[m] = np.ascontiguousarray(x.transpose(0, 2, 1))  # [N, T, D] -> sequence [N, D, T]
            splits[split] = (inputs, labels[keep])
        info = {"source": self.source, "citation": self.citation, "layout": MOSEI_LAYOUT, "file": name,
                "split": {"source_splits": "train / valid / test of the feature file (official)"},
                "labels": "sentiment < 0 -> 0 negative, >= 0 -> 1 non-negative (BalanceMM's acc2)",
                "preprocessing": {m: {"from": FILE_KEYS[m], "layout": "[features, time] float32",
                                      "non_finite": "replaced by 0"} for m in mods},
                "non_finite_replaced": replaced, "dropped_empty_text": dropped if o.drop_empty_text else None}
        return Prepared(splits, list(CLASSES), {m: "sequence" for m in mods}, info)


def _split(data: Any, key: str, path: Path) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise MMBenchError(f"{path}: no split {key!r} (found {found}); expected layout: {MOSEI_LAYOUT}")
    return data[key]


def _features(part: dict, modality: str, path: Path, key: str) -> np.ndarray:
    x = part.get(FILE_KEYS[modality])
    if not isinstance(x, np.ndarray) or x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        shape = getattr(x, "shape", type(x).__name__)
        raise MMBenchError(f"{path} [{key!r}][{FILE_KEYS[modality]!r}]: expected a numeric array [N, T, D], "
                           f"got {shape}; expected layout: {MOSEI_LAYOUT}")
    return x.astype(np.float32, copy=False)


def _labels(y: Any, where: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.ndim < 1 or not len(y) or y.reshape(len(y), -1).shape[1] < 1:
        raise MMBenchError(f"{where}: expected sentiment scores [N, 1, 1], got {getattr(y, 'shape', type(y).__name__)}")
    score = y.reshape(len(y), -1)[:, 0].astype(np.float64)
    if not np.isfinite(score).all():
        raise MMBenchError(f"{where}: {int((~np.isfinite(score)).sum())} sentiment scores are not finite")
    return (score >= 0).astype(np.int64)
