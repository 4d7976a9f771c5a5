"""SHA-256 of files and records: how prepared arrays, run files, checkpoints and the records that
describe them (``meta.json``, ``summary.json``) are checked on load.

Only regular files are read (a link to ``/dev/zero`` or a FIFO would never end), and never more
bytes than the file had when it was opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from mmbench.errors import MMBenchError


def _open_regular(path: str | Path):
    """``path`` opened for reading, with its size; a file that is not regular is a one-line error."""
    f = open(path, "rb")
    size = os.fstat(f.fileno())
    if not stat.S_ISREG(size.st_mode):
        f.close()
        raise MMBenchError(f"{path} is not a regular file (a link to a device, a pipe or a folder); "
                           "mmbench does not read it: replace it with the file mmbench wrote")
    return f, size.st_size


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a regular file, read in 1 MiB chunks up to its size when opened."""
    h = hashlib.sha256()
    f, left = _open_regular(path)
    with f:
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (a larger one is an error)."""
    f, size = _open_regular(path)
    with f:
        if size > limit:
            raise MMBenchError(f"{path} is {size} bytes, more than the {limit} a file of its kind can be; "
                               "it is not one mmbench wrote")
        return f.read(size)


def record_digest(record: dict[str, Any]) -> str:
    """Hex SHA-256 of a JSON record in canonical form (sorted keys): stored beside the record's fields
    so that an edit of any of them is detected."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
