"""Hugging Face ``transformers`` (the optional extra ``mmbench[hf]``): imported only when a tokenizer or
model is loaded, so ``mmbench`` itself starts without it. Only local folders are read (``save_pretrained``
output, ``local_files_only=True``); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from mmbench.errors import MMBenchError

INSTALL = "pip install 'mmbench[hf]'"


def transformers() -> ModuleType:
    """The ``transformers`` module; a one-line error saying how to install it when it is missing."""
    try:
        import transformers
    except ImportError:
        raise MMBenchError(f"Hugging Face tokenizers and models need the transformers package: {INSTALL}") from None
    return transformers


def local_folder(source: str, what: str, needs: str | None = None) -> Path:
    """The folder ``source`` names, holding the file ``needs``; a one-line error naming ``what`` otherwise."""
    path = Path(source).expanduser()
    if not path.is_dir():
        raise MMBenchError(f"{what} {source!r} is not a folder; give a folder written by save_pretrained "
                           "(nothing is downloaded)")
    if needs is not None and not (path / needs).is_file():
        raise MMBenchError(f"{what} {source!r} has no {needs}; give a folder written by save_pretrained")
    return path
