"""Names that become paths, and the folders mmbench marks as its own.

A dataset name or run name given by a user becomes one folder name: :func:`safe_name` admits
one alphabet (letters, digits, ``_``, ``-``, ``+``, and ``.`` after the first character), so
no name is a path separator, ``.``, ``..`` or a hidden file, and no run id built from it
exceeds the file system's 255-byte limit. mmbench replaces or deletes a folder only when it
holds the :data:`MARKER` file mmbench wrote into it (:func:`mark_own`, :func:`is_own`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mmbench.errors import MMBenchError

MAX_NAME = 100  # bytes, for names users give; a run id adds the method name, the seed and a digest
MAX_FILE_NAME = 255  # bytes: the limit of common file systems
MARKER = ".mmbench"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")

UMASK = os.umask(0)
os.umask(UMASK)


def safe_name(name: str, what: str, limit: int = MAX_NAME) -> str:
    """``name`` unchanged when it is a safe single folder name of at most ``limit`` bytes; else a
    one-line :class:`MMBenchError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 40 else f"{str(name)[:40]}..."
        raise MMBenchError(f"{what} {shown!r} is not a valid name: use letters, digits, '_', '-', '+' and "
                           "'.' (not first), no path separators")
    if len(name.encode()) > limit:
        raise MMBenchError(f"{what} {name[:40]}... is {len(name)} characters long; use at most {limit}")
    return name


def mark_own(folder: Path, kind: str) -> None:
    """Write the marker saying ``folder`` (a ``kind``: prepared dataset, run) was created by mmbench."""
    (folder / MARKER).write_text(f"{kind}\n")


def is_own(folder: Path, kind: str, legacy: str | None = None) -> bool:
    """Whether ``folder`` is a real folder (not a link) that mmbench created as a ``kind``. ``legacy``:
    a file name whose presence also counts, for folders written before markers existed."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        return (folder / MARKER).read_text().strip() == kind
    except OSError:
        return legacy is not None and (folder / legacy).is_file()
