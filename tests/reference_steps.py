"""Training mmbench and an official implementation side by side, for the differential checks.

Package-aware imports from a checkout (:func:`import_module`: relative imports and same-named
packages of different repositories), the official code's intermediate values read back without
editing it (:func:`returned_locals`), identical float64 batches, per-encoder gradient norms at the
optimizer step and the largest differences (:class:`MaxDiff`). Checkouts are found by
:func:`tests.reference.reference_dir`, which skips without them.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import sys
import types
from collections.abc import Iterator

import torch

from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
from tests.reference import reference_dir


def stub(name: str, **attrs) -> types.ModuleType:
    """A stand-in module for an import the official file makes but the check does not use."""
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def import_module(repo: str, module: str, root: str = "", stubs: dict[str, types.ModuleType] | None = None
                  ) -> types.ModuleType:
    """Import ``module`` (dotted, relative to ``<checkout>/<root>``) from the official checkout.

    ``stubs`` answer the imports named in them; the repository's own modules resolve against the
    checkout (relative imports included). ``sys.modules`` and ``sys.path`` are restored afterwards,
    so two repositories with packages of the same name (``models``, ``utils``) do not meet.
    """
    path = str(reference_dir(repo) / root)
    stubs = stubs or {}
    top = module.split(".")[0]
    shadowed = {n: m for n, m in sys.modules.items() if n in stubs or n == top or n.startswith(top + ".")}
    for name in shadowed:
        del sys.modules[name]
    sys.modules.update(stubs)
    sys.path.insert(0, path)
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(path)
        for name, mod in list(sys.modules.items()):
            origin = getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", None) or []), "")
            if name in stubs or str(origin).startswith(path):
                del sys.modules[name]
        sys.modules.update(shadowed)


def source_of(repo: str, relpath: str, name: str) -> str:
    """The source text of the top-level function or class ``name`` in ``<checkout>/<relpath>``."""
    text = (reference_dir(repo) / relpath).read_text()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return ast.get_source_segment(text, node)
    raise LookupError(f"{name} not found in {repo}/{relpath}")


@contextlib.contextmanager
def cpu_for_cuda() -> Iterator[None]:
    """``Tensor.cuda()`` returns the tensor itself: official code that moves tensors to the GPU runs on CPU."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


@contextlib.contextmanager
def returned_locals(func) -> Iterator[list[dict]]:
    """Copies of ``func``'s local variables each time it returns: the official code's intermediate
    values (weights, coefficients), read without editing it."""
    code, calls = func.__code__, []

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is code:
            calls.append(dict(frame.f_locals))

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def two_modality_batches(steps: int, batch_size: int, dims: tuple[int, int], num_classes: int, seed: int = 0,
                         names: tuple[str, str] = ("audio", "visual")) -> tuple[MultimodalData, list[MultimodalData]]:
    """A float64 data set of ``steps * batch_size`` samples (values exact in float32, so an official cast to
    float32 loses nothing) and its batches in order, each with ``ids``; the second modality carries a weaker signal."""
    g = torch.Generator().manual_seed(seed)
    n = steps * batch_size
    labels = torch.randint(num_classes, (n,), generator=g)
    inputs = {}
    for m, d, signal in zip(names, dims, (1.5, 0.5)):
        centres = torch.randn(num_classes, d, generator=g)
        inputs[m] = (signal * centres[labels] + torch.randn(n, d, generator=g)).float().double()
    meta = DatasetMeta("reference", "synthetic", tuple(f"c{k}" for k in range(num_classes)),
                       {m: ModalitySpec(m, "vector", (d,)) for m, d in zip(names, dims)}, {"train": n})
    data = MultimodalData(inputs, labels, meta)
    return data, list(data.batches(batch_size))


class GradNorms:
    """Per step, the gradient norm of each named parameter group at the moment ``optimizer`` steps
    (after any scaling and clipping)."""

    def __init__(self, optimizer: torch.optim.Optimizer, groups: dict[str, list[torch.nn.Parameter]]):
        self.groups, self.steps = groups, []
        optimizer.register_step_pre_hook(self._record)

    def _record(self, optimizer, args, kwargs):
        self.steps.append({k: torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ps if p.grad is not None]))
                           .item() for k, ps in self.groups.items()})


class MaxDiff:
    """The largest ``|mmbench - official|`` of each compared quantity; every comparison asserts ``<= tol``."""

    def __init__(self, tol: float):
        self.tol, self.max = tol, {}

    def __call__(self, name: str, ours, theirs, where: str = "") -> None:
        ours = torch.as_tensor(ours, dtype=torch.float64).detach()
        theirs = torch.as_tensor(theirs, dtype=torch.float64).detach()
        assert ours.shape == theirs.shape, f"{name} {where}: shapes {tuple(ours.shape)} vs {tuple(theirs.shape)}"
        d = (ours - theirs).abs().max().item() if ours.numel() else 0.0
        self.max[name] = max(self.max.get(name, 0.0), d)
        assert d <= self.tol, f"{name} {where}: |mmbench - official| = {d:.3g} > {self.tol:g}"

    def summary(self, label: str) -> str:
        """One line for the docs' fidelity table (printed by the checks, shown with ``pytest -s``)."""
        return f"{label}: " + ", ".join(f"{k} {v:.1e}" for k, v in self.max.items()) + f" (tolerance {self.tol:g})"


def largest_change(model: torch.nn.Module, initial: dict[str, torch.Tensor]) -> float:
    """``max |p - p_0|`` over the parameters: a check that training moved them at all."""
    return max((p.detach() - initial[n]).abs().max().item() for n, p in model.named_parameters())
