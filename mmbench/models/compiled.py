"""Compiled encoders (``model.compile``): ``torch.compile`` on every encoder of a model, and the
activation-memory budget their backward graphs are partitioned under (``model.activation_memory_budget``).

Each encoder is compiled in place (:meth:`torch.nn.Module.compile`), so parameter names, state dicts,
checkpoints and hooks are those of the eager model, and a copy (``copy.deepcopy``) runs eagerly. The
fusion and the methods' own logic stay eager. On CPU, the fused kernels free intermediate buffers
early and a budget below 1 recomputes the cheapest activations in the backward pass instead of
keeping them: this is what brings the peak memory of a ResNet-18 step under plain PyTorch's (figures in
``docs/paper_scale.md``). Results equal the eager model's up to float rounding. The first batches of
each shape pay the compilation (95 s for two ResNet-18s at batch 64 on 2 CPU cores with an empty
cache, 16 s once torch's compile cache holds them). torch compiles the ``forward`` of an encoder class
of its own, as mmbench's are; it leaves a bare ``torch.nn`` module (an ``nn.Sequential``) eager.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mmbench.errors import MMBenchError

if TYPE_CHECKING:
    import torch

    from mmbench.config import ModelConfig
    from mmbench.models.multimodal import MultimodalModel


def check_compile(model: ModelConfig, device: torch.device) -> None:
    """Refuse, before anything is created, settings ``compiled_encoders`` cannot honour."""
    if model.activation_memory_budget < 1 and not model.compile:
        raise MMBenchError(f"model.activation_memory_budget={model.activation_memory_budget} applies to compiled "
                           "encoders only; add --set model.compile=true or leave the budget at 1")
    if model.compile and device.type == "cpu" and _cpp_compiler() is None:
        raise MMBenchError("model.compile=true on CPU needs a C++ compiler for torch.compile's kernels (g++ or "
                           "clang++ on PATH, or $CXX); install one or leave model.compile off")


def _cpp_compiler() -> str | None:
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((path for name in names if (path := shutil.which(name))), None)


@contextlib.contextmanager
def compiled_encoders(model: MultimodalModel, memory_budget: float = 1.0) -> Iterator[MultimodalModel]:
    """Compile every encoder of ``model`` in place; within the block, graphs compile under
    ``memory_budget`` (the share of the activations the backward pass keeps; 1 keeps them all).
    The encoders stay compiled after the block; torch's in-process compile caches are reset on entry."""
    import torch._dynamo
    import torch._functorch.config

    torch._dynamo.reset()  # graphs compiled earlier in this process under another budget are not reused
    for encoder in model.encoders.values():
        encoder.compile()
    with torch._functorch.config.patch(activation_memory_budget=memory_budget):
        yield model
