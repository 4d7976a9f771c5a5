"""Per-epoch training checkpoints: a safe encoding of training state and a self-checking file.

``checkpoint.pt`` in a run folder holds a :meth:`mmbench.training.Trainer.state_dict`: everything
needed to continue a run after its last finished epoch so that the result is identical to an
uninterrupted run (model, optimizer and scheduler state, every RNG, the history, the best state so
far, the trainer's running state and the method's state, :meth:`mmbench.methods.base.Method.state_dict`).

Only plain data is stored — tensors, numbers, strings, lists, tuples and dicts — so the file
loads with ``torch.load(..., weights_only=True)``: loading it can never run code. Numpy arrays
and scalars are stored as tagged ``.npy`` bytes; ``nn.Module``, optimizer and scheduler
attributes by their ``state_dict()``; ``torch.Generator`` by its state. Anything else cannot be
saved and raises :class:`NotCheckpointable` (the run then trains without checkpoints).

The file is a header line ``MMBENCH-CHECKPOINT <format> <sha256>`` followed by the
``torch.save`` bytes of the state; the SHA-256 of those bytes is checked before they are loaded,
so a damaged or edited file is a clear error, never silently used. It is written to a temporary
name and renamed.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import torch
from torch import nn

from mmbench.checksums import read_bounded
from mmbench.errors import MMBenchError

FORMAT = 1
MAX_BYTES = 1 << 40  # a checkpoint is read whole; only a regular file of at most this size is read
MAGIC = b"MMBENCH-CHECKPOINT"
TAG = "__mmbench_state__"
_STATEFUL = (nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)


class NotCheckpointable(TypeError):
    """A value that cannot be stored as plain data (the message names it)."""


def encode(value: Any, where: str = "value") -> Any:
    """``value`` as plain data that ``torch.load(weights_only=True)`` accepts."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, torch.Generator):
        return {TAG: "generator", "state": value.get_state()}
    if isinstance(value, _STATEFUL):
        return {TAG: "stateful", "state": value.state_dict()}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise NotCheckpointable(f"{where} is a numpy array of Python objects")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return {TAG: "ndarray", "npy": buf.getvalue()}
    if isinstance(value, np.generic):
        return {TAG: "npscalar", "dtype": value.dtype.str, "value": value.item()}
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, (str, int, float, bool, type(None)))]
        if bad:
            raise NotCheckpointable(f"{where} has a key of type {type(bad[0]).__name__}")
        return {k: encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(encode(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise NotCheckpointable(f"{where} is a {type(value).__module__}.{type(value).__qualname__}")


def decode(saved: Any, current: Any = None) -> Any:
    """Inverse of :func:`encode`. Modules, optimizers, schedulers and generators are restored in
    ``current`` (the live object); dicts keep ``current``'s type (e.g. ``defaultdict``)."""
    if isinstance(saved, dict) and TAG in saved:
        kind = saved[TAG]
        if kind == "generator":
            if not isinstance(current, torch.Generator):
                raise MMBenchError("checkpoint holds a generator where the live object has none")
            current.set_state(saved["state"])
            return current
        if kind == "stateful":
            if not isinstance(current, _STATEFUL):
                raise MMBenchError("checkpoint holds a module/optimizer state where the live object has none")
            current.load_state_dict(saved["state"])
            return current
        if kind == "ndarray":
            return np.load(io.BytesIO(saved["npy"]), allow_pickle=False)
        if kind == "npscalar":
            return np.dtype(saved["dtype"]).type(saved["value"])
        raise MMBenchError(f"checkpoint has an unknown entry kind {kind!r}")
    if isinstance(saved, dict):
        live = current if isinstance(current, dict) else {}
        items = {k: decode(v, live.get(k)) for k, v in saved.items()}
        if isinstance(current, dict):
            current.clear()
            current.update(items)
            return current
        return items
    if isinstance(saved, (list, tuple)):
        live = current if isinstance(current, (list, tuple)) and len(current) == len(saved) else [None] * len(saved)
        items = [decode(v, c) for v, c in zip(saved, live)]
        return items if isinstance(saved, list) else tuple(items)
    if isinstance(saved, torch.Tensor) and isinstance(current, torch.Tensor):
        return saved.to(current.device)
    return saved


def to_bytes(state: dict[str, Any]) -> bytes:
    """The checkpoint file's bytes: a header with the payload's SHA-256, then the payload."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return b"%s %d %s\n" % (MAGIC, FORMAT, hashlib.sha256(payload).hexdigest().encode()) + payload


def from_file(path) -> dict[str, Any]:
    """Load and verify a checkpoint file (checksum first, then a weights-only load)."""
    fix = f"delete {path} to train the run from the start"
    where = None if torch.cuda.is_available() else "cpu"  # tensors go back to the device they were saved from
    try:
        data = read_bounded(path, MAX_BYTES)
    except OSError as e:
        raise MMBenchError(f"checkpoint {path} cannot be read ({e.strerror}); {fix}") from None
    header, _, payload = data.partition(b"\n")
    parts = header.split(b" ")
    if len(parts) != 3 or parts[0] != MAGIC:
        raise MMBenchError(f"checkpoint {path} is not an mmbench checkpoint; {fix}")
    if parts[1] != str(FORMAT).encode():
        raise MMBenchError(f"checkpoint {path} has format {parts[1].decode(errors='replace')}, expected {FORMAT}; {fix}")
    if hashlib.sha256(payload).hexdigest().encode() != parts[2]:
        raise MMBenchError(f"checksum mismatch for checkpoint {path}: the file is damaged or was edited; {fix}")
    try:
        return torch.load(io.BytesIO(payload), map_location=where, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise MMBenchError(f"checkpoint {path} cannot be loaded safely ({type(e).__name__}); {fix}") from None


def rng_state() -> dict[str, Any]:
    """The global RNGs (torch, CUDA, numpy, Python) as plain data."""
    import random

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
