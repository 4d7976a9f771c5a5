"""Loading the official implementations for the differential tests (``tests/test_reference_*.py``).

The official code is not part of mmbench: ``MMBENCH_REFERENCE_DIR`` names a folder holding the
checkouts by repository name (e.g. ``$MMBENCH_REFERENCE_DIR/OGM-GE_CVPR2022``); without it, or
without the checkout, the tests skip.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from torch import nn


def reference_dir(repo: str) -> Path:
    """The checkout of ``repo`` under ``$MMBENCH_REFERENCE_DIR``, or skip the test."""
    root = os.environ.get("MMBENCH_REFERENCE_DIR")
    if not root:
        pytest.skip("MMBENCH_REFERENCE_DIR is not set (folder of official checkouts)")
    path = Path(root) / repo
    if not path.is_dir():
        pytest.skip(f"no checkout of {repo} under MMBENCH_REFERENCE_DIR={root}")
    return path


class _Stub(types.ModuleType):
    """A module whose every attribute is a placeholder: for imports the loaded code does not use."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return self


def load_module(repo: str, relpath: str, stubs: Iterable[str] | Mapping[str, types.ModuleType] = (),
                root: str = "") -> types.ModuleType:
    """Import the checkout's file ``relpath`` (a path under ``root``, the folder its imports are relative
    to) with the modules named in ``stubs`` replaced by placeholders (or by the modules a mapping gives);
    ``sys.path`` and ``sys.modules`` are restored afterwards, so checkouts with the same package names (``models``, ``utils``) never mix."""
    base = reference_dir(repo) / root
    given = dict(stubs) if isinstance(stubs, Mapping) else {name: _Stub(name) for name in stubs}
    name = relpath.removesuffix(".py").replace("/", ".")
    tops = {name.split(".")[0], *(s.split(".")[0] for s in given)} - {"torch"}
    saved_path = list(sys.path)
    shadowed = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in tops}
    before = set(sys.modules)
    try:
        sys.modules.update(given)
        sys.path.insert(0, str(base))
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved_path
        for key in set(sys.modules) - before:
            file = getattr(sys.modules[key], "__file__", None) or ""
            if key in given or key.split(".")[0] in tops or file.startswith(str(base)):
                del sys.modules[key]
        sys.modules.update(shadowed)


class EncoderClf(nn.Module):
    """An encoder and a linear classifier, called as the text-image releases call their per-modality
    classifiers (``txtclf`` / ``imgclf``): ``(logits, features)`` with ``features=True`` (PDF's), else logits."""

    def __init__(self, encoder: nn.Module, head: nn.Module, features: bool = False):
        super().__init__()
        self.encoder, self.head, self.features = encoder, head, features

    def forward(self, x, *_):
        f = self.encoder(x)
        return (self.head(f), f) if self.features else self.head(f)
