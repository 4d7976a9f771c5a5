"""Refusing a model too large for memory before it is built.

The method builds its model once on PyTorch's ``meta`` device, which records shapes and allocates
nothing (and draws no random numbers), so the parameter count is exact for every method and
architecture. Training holds each parameter about :data:`COPIES` times: the weights, their
gradients, the optimizer's state (momentum; Adam keeps two) and the best checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmbench.errors import MMBenchError

COPIES = 5


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA: the device's free memory; CPU: ``MemAvailable``), None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def parameter_bytes(build) -> tuple[int, int] | None:
    """``(parameters, bytes)`` of the module ``build()`` returns, built on the meta device; None when
    the build does not support the meta device (then nothing is estimated)."""
    try:
        with torch.device("meta"):
            model = build()
    except Exception:  # noqa: BLE001 - an estimate only: a build the meta device cannot run is built for real
        return None
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def check_model_fits(build, device: torch.device, hint: str) -> None:
    """Raise a one-line :class:`MMBenchError` with the estimate when training the model ``build()``
    returns would need more memory than ``device`` has free; ``hint`` names the settings to lower."""
    counted, available = parameter_bytes(build), available_bytes(device)
    if counted is None or available is None:
        return
    count, size = counted
    if size * COPIES > available:
        raise MMBenchError(f"the model is too large: {count:,} parameters need about {_gib(size * COPIES)} to train "
                           f"(weights {_gib(size)}, gradients, optimizer state, best checkpoint) but {device} has "
                           f"{_gib(available)} free; {hint}")


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
