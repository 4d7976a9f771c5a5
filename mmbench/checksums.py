"""SHA-256 of files and records: how prepared arrays, run files, checkpoints and the records that
describe them (``meta.json``, ``summary.json``) are checked on load.

Only regular files are read (a link to ``/dev/zero`` or a FIFO would never end), and never more
bytes than the file had when it was opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from mmbench.errors import MMBenchError
from mmbench.paths import UMASK


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


def files_sha256(folder: str | Path, names: list[str]) -> str:
    """Hex SHA-256 of the named files of ``folder`` together: of each name with its file's SHA-256, in sorted order."""
    return record_digest({name: file_sha256(Path(folder) / name) for name in sorted(names)})


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


RACY_NS = 2 * 10**9  # a stamp taken sooner than this after the file's modification time is not trusted


class Stamps:
    """What a folder's files were when last hashed in full: ``{name: [size, mtime_ns, sha256, stamped_ns]}`` in a
    JSON file beside them. :meth:`verified` trusts a file whose size and modification time still match
    its stamp and whose stamped digest is the one expected, so a large dataset is hashed once (at
    prepare, or at the first load after a change) instead of at every run start; ``full`` hashes anyway.
    A stamp file that cannot be read or written only costs the full hash.

    File times tick coarsely, so a file changed within a tick of being hashed could keep its stamped
    size and time: a stamp is trusted only when it was taken :data:`RACY_NS` after the file's
    modification time (git's "racy clean" rule); until then the file is hashed again.
    """

    def __init__(self, path: Path):
        self.path, self.changed = path, False
        try:
            stamps = json.loads(read_bounded(path, 16 << 20))
            self.stamps: dict[str, list] = stamps if isinstance(stamps, dict) else {}
        except (OSError, ValueError, MMBenchError):
            self.stamps = {}

    def record(self, name: str, digest: str) -> None:
        """Stamp the file ``name`` (relative to the stamp file's folder), just hashed to ``digest``; a file
        modified too recently for its stamp to be trusted gets none (no write that would not save a hash)."""
        st, now = os.stat(self.path.parent / name), time.time_ns()
        if now - st.st_mtime_ns >= RACY_NS:
            self.stamps[name], self.changed = [st.st_size, st.st_mtime_ns, digest, now], True
        elif self.stamps.pop(name, None) is not None:
            self.changed = True

    def verified(self, name: str, expected: str | None, full: bool = False) -> bool:
        """Whether the file ``name`` has the SHA-256 ``expected``."""
        st, stamp = os.stat(self.path.parent / name), self.stamps.get(name)
        if (not full and expected is not None and isinstance(stamp, list) and len(stamp) == 4
                and stamp[:3] == [st.st_size, st.st_mtime_ns, expected] and stamp[3] - st.st_mtime_ns >= RACY_NS):
            return True
        digest = file_sha256(self.path.parent / name)
        if digest == expected:
            self.record(name, digest)
        return digest == expected

    def save(self) -> None:
        """Write the stamps atomically when they changed; a folder that is not writable keeps its old ones."""
        if not self.changed:
            return
        with contextlib.suppress(OSError):
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(self.stamps, f, sort_keys=True)
                os.chmod(tmp, 0o666 & ~UMASK)
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
