"""Load official (peer) code for differential tests: from ``$MMBENCH_REFERENCE_DIR/<repo>``, else skip."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest


def reference_dir(repo: str) -> Path:
    """The checkout of ``repo`` under ``$MMBENCH_REFERENCE_DIR``, or skip the test with the reason."""
    root = os.environ.get("MMBENCH_REFERENCE_DIR")
    if not root:
        pytest.skip("MMBENCH_REFERENCE_DIR is not set (official code for the differential test)")
    path = Path(root) / repo
    if not path.is_dir():
        pytest.skip(f"no {repo} checkout under {root}")
    return path


def load_module(repo: str, relpath: str, stubs: dict[str, types.ModuleType] | None = None) -> types.ModuleType:
    """Import one file of a peer repository as a module; ``stubs`` stand in for imports it cannot make."""
    path = reference_dir(repo) / relpath
    if not path.is_file():
        pytest.skip(f"{repo}/{relpath} not found")
    saved = {name: sys.modules.get(name) for name in stubs or {}}
    sys.modules.update(stubs or {})
    try:
        spec = importlib.util.spec_from_file_location(f"_reference_{repo}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module
