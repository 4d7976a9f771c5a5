"""Datasets: the prepared format (store), the in-memory type, and the dataset builders."""

from mmbench.data.store import load_meta, load_split, prepare
from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData

__all__ = ["DatasetMeta", "ModalitySpec", "MultimodalData", "load_meta", "load_split", "prepare"]
