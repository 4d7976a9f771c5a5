"""Runtime settings of a training or attack process: device, seeds, CPU threads, allocator.

Shared by the run pipeline (:mod:`mmbench.run`) and the sweep's workers. Torch and numpy are
imported when a setting is applied, so a worker sets its thread limits before they load.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random
from typing import TYPE_CHECKING, Any

from mmbench.errors import MMBenchError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]`` as a device; a clear error otherwise."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MMBenchError("device 'cuda' was asked for but CUDA is not available; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise MMBenchError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc <malloc.h>
_cpu_tuning: dict[str, Any] | None = None


def tune_cpu(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Keep large tensor buffers inside the process while training on CPU (glibc only; idempotent;
    nothing for other devices).

    glibc's ``malloc`` serves every block above its mmap threshold (32 MiB at most) with a fresh
    ``mmap`` and unmaps it on ``free``. A ResNet-18 step at 224x224, batch 64, allocates and frees
    gigabytes of such activation and gradient buffers, so every step the kernel maps them again and
    zero-fills them page by page: about 1.6 M minor page faults and 3 s of kernel CPU time per step,
    a fifth of the process's CPU time (``benchmarks/train_throughput.py``; the official OGM-GE code
    loses 50-75 s of a 133-s epoch this way). ``mallopt(M_MMAP_MAX, 0)`` serves large blocks from
    the heap and ``mallopt(M_TRIM_THRESHOLD, -1)`` keeps freed heap memory for the next step, as
    ``MALLOC_MMAP_MAX_=0`` and a huge ``MALLOC_TRIM_THRESHOLD_`` would at process start;
    ``mallopt(M_ARENA_MAX, 1)`` keeps the blocks of every thread that allocates after the call in one
    heap, so that the threads reuse one another's freed buffers instead of each holding its own peak
    (a training run calls this before it loads data, while only the main thread has allocated).
    Numerics are unchanged (same losses bit for bit); the cost is that the process keeps its peak
    heap, with some fragmentation on top of it, until it exits (``model.compile`` brings the peak
    under plain PyTorch's again, ``docs/paper_scale.md``).

    Process-wide. Set ``MMBENCH_CPU_TUNING=0`` to leave the allocator alone. Returns the settings
    applied (empty when none).
    """
    import torch

    global _cpu_tuning
    if torch.device(device).type != "cpu":
        return {}
    if _cpu_tuning is not None:
        return _cpu_tuning
    _cpu_tuning = {}
    if os.environ.get("MMBENCH_CPU_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return _cpu_tuning
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _cpu_tuning
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return _cpu_tuning
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1) and mallopt(_M_ARENA_MAX, 1):
        _cpu_tuning = {"malloc": "M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1, M_ARENA_MAX=1"}
    return _cpu_tuning


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators; cuDNN deterministic."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device | str = "cpu"):
    """Within the block, ``torch.use_deterministic_algorithms(True)`` when ``enabled`` (an op without a
    deterministic implementation then raises instead of running); on CUDA also ``CUBLAS_WORKSPACE_CONFIG``
    (cuBLAS needs it for reproducible matrix products) unless already set. Both restored afterwards."""
    import torch

    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if torch.device(device).type == "cuda" and workspace is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


_threads: list[int] = []  # the limit this worker process has set (once is enough)


def set_threads(n: int) -> None:
    """Every CPU thread pool of this worker at ``n`` threads — torch's, OpenMP's and the BLAS libraries
    of numpy and scipy (probes, GMMs and metrics run there) — so that the workers share the cores
    instead of each starting one thread per core."""
    if _threads == [n]:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)  # libraries loaded from now on
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    with contextlib.suppress(Exception):  # libraries already loaded (numpy's OpenBLAS with torch)
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    _threads[:] = [n]


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
