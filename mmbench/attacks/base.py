"""The attack contract: a pure, seeded, vectorised function of one modality's batch.

``fn(x, level, generator, spec, *, <options>) -> x'``

- ``x``: one modality's ``[N, ...]`` tensor; never modified in place. Its dtype is kept: ``uint8``
  images are corrupted in float, clipped to [0, 255] and cast back; token ids (``int64``) stay ids.
- ``level``: the strength, in the unit each attack documents; ``level = 0`` returns ``x`` unchanged.
- ``generator``: the only source of randomness (same seed, same output).
- ``spec``: the modality's :class:`~mmbench.data.types.ModalitySpec` (kind, dtype, training
  mean/std; for text the special token ids, see :func:`token_id`).
- ``options``: keyword-only parameters with defaults (``gaussian(..., unit="pixel")``); a
  protocol sets them per step. Unknown options are errors (:func:`check_options`).

Register with ``@register_attack("name", kinds=("vector", "image", "sequence"))``. Two kinds of
attack need more than a tensor, and declare it:

- ``needs_model=True`` (``fgsm``, ``pgd``): the function also receives ``ctx``, an
  :class:`AttackContext` with the model, the method, the other modalities and the labels of the
  samples being attacked; the runner passes it.
- ``output="mask"`` (``missing``): the function returns a boolean ``[N]``: which samples lose the
  modality. The runner evaluates those samples through the model's masking (``model(batch,
  mask=[...])``), never by feeding zeros.

- ``needs_text=True`` (``field_blank``, ``letter_typo``): text noise defined on words; the
  function also receives ``source``, a :class:`~mmbench.data.textimage.TextSource` with the
  vocabulary and the raw texts of the samples being attacked; the runner loads it from the store.
- ``needs_hits=True`` (``qmf_coupled_blank``): the function also receives ``hits``, modality ->
  boolean ``[N]`` of the samples the condition's earlier steps selected.

``stochastic=False`` marks an attack whose output does not depend on the generator (``fgsm``).

Draw random numbers through :func:`uniform` and :func:`normal`: the runner records them at the
first level of a curve and serves them again at the next levels (:class:`DrawLog`; the values
are the same as a fresh generator's). An attack that uses the generator directly still works --
the runner notices and draws afresh at every level.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mmbench.data.types import MODALITY_KINDS, ModalitySpec
from mmbench.errors import MMBenchError
from mmbench.registry import ATTACKS

OUTPUTS = ("tensor", "mask")
#: token-id defaults when neither the modality spec nor the options name them: padding 0 and
#: unknown 1, the ``<pad>=0, <unk>=1`` convention of most word vocabularies
DEFAULT_TOKEN_IDS = {"pad": 0, "unk": 1}


def register_attack(name: str, kinds: tuple[str, ...] = MODALITY_KINDS, *, needs_model: bool = False,
                    output: str = "tensor", stochastic: bool = True, needs_text: bool = False,
                    needs_hits: bool = False, aliases: tuple[str, ...] = (),
                    deprecated: tuple[str, ...] = ()) -> Callable:
    bad = [k for k in kinds if k not in MODALITY_KINDS]
    if bad or output not in OUTPUTS:
        raise ValueError(f"attack {name!r}: kinds must be among {MODALITY_KINDS} and output in {OUTPUTS}")

    def decorator(fn: Callable) -> Callable:
        fn.kinds = tuple(kinds)
        fn.needs_model = needs_model
        fn.needs_text = needs_text
        fn.needs_hits = needs_hits
        fn.output = output
        fn.stochastic = stochastic
        return ATTACKS.register(name, aliases=aliases, deprecated=deprecated)(fn)

    return decorator


def kinds_of(fn: Callable) -> tuple[str, ...]:
    return tuple(getattr(fn, "kinds", MODALITY_KINDS))


def attack_options(fn: Callable) -> dict[str, Any]:
    """The options an attack accepts (its keyword-only parameters) with their defaults."""
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("ctx", "source", "hits")}


def check_options(name: str, fn: Callable, options: dict[str, Any]) -> None:
    valid = attack_options(fn)
    unknown = [k for k in options if k not in valid]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(valid), n=2, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise MMBenchError(f"unknown option {unknown[0]!r} for attack {name!r}; {hint}"
                           f"valid: {', '.join(valid) or 'none'}")


@dataclass
class AttackContext:
    """What a gradient attack needs besides the tensor: the samples' other inputs and labels.

    ``inputs`` and ``labels`` hold exactly the samples passed as ``x`` (same order);
    ``inputs[modality]`` is the tensor being attacked.
    """

    model: torch.nn.Module
    method: Any  # mmbench.methods.base.Method
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    modality: str
    meta: Any = None  # DatasetMeta
    batch_size: int = 512


# -- helpers shared by the attack families ---------------------------------------------


class ReplayMiss(Exception):
    """A replayed attack asked for a draw its recording does not have (the runner draws afresh)."""


class DrawLog:
    """The draws one attack call made through :func:`uniform` / :func:`normal`, to serve again.

    The runner derives an attack's generator from the attack seed and a key, never from the
    level, so at every level of a curve the attack receives the same draw sequence; recording it
    at the first level and serving copies at the next saves the random-number generation (often
    the largest cost of a corruption) without changing a single value. A draw of another kind or
    shape than recorded raises :class:`ReplayMiss`; the runner then records afresh.
    """

    def __init__(self) -> None:
        self.draws: list[tuple[str, tuple[int, ...], torch.Tensor]] = []
        self.pos = 0
        self.recording = True

    def take(self, kind: str, shape: tuple[int, ...], make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.recording:
            t = make()
            self.draws.append((kind, shape, t.clone()))
            return t
        if self.pos < len(self.draws) and self.draws[self.pos][:2] == (kind, shape):
            self.pos += 1
            return self.draws[self.pos - 1][2].clone()  # a copy: an attack may write into its draws
        raise ReplayMiss(f"draw {self.pos}: {kind}{shape} was not recorded")


#: generator id -> the log its helper draws go through (set by the runner around one attack call)
ACTIVE_LOGS: dict[int, DrawLog] = {}


def _draw(kind: str, shape, generator: torch.Generator, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    log = ACTIVE_LOGS.get(id(generator)) if ACTIVE_LOGS else None
    return make() if log is None else log.take(kind, tuple(shape), make)


def uniform(shape: tuple[int, ...] | torch.Size, generator: torch.Generator) -> torch.Tensor:
    """U[0, 1) draws; attacks draw through this (or :func:`normal`) so the runner can replay them."""
    shape = tuple(shape)
    return _draw("uniform", shape, generator, lambda: torch.rand(shape, generator=generator, device=generator.device))


def normal(shape: tuple[int, ...] | torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Standard-normal draws (see :func:`uniform`)."""
    shape = tuple(shape)
    return _draw("normal", shape, generator, lambda: torch.randn(shape, generator=generator, device=generator.device))


def probability_level(level: float, name: str) -> float:
    """The level of an attack whose level is a probability (a share of samples, tokens, pixels)."""
    level = float(level)
    if not 0.0 <= level <= 1.0:
        raise MMBenchError(f"attack {name!r}: level is a probability in [0, 1], got {level:g}")
    return level


def per_sample(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``[N]`` mask viewed so that it broadcasts over ``x``'s sample dimension."""
    return mask.view(-1, *[1] * (x.dim() - 1)).to(x.device)


def is_uint8(x: torch.Tensor) -> bool:
    return x.dtype == torch.uint8


def work(x: torch.Tensor) -> torch.Tensor:
    """The float tensor an attack computes in (a new tensor for integer inputs, ``x`` itself otherwise)."""
    return x if x.is_floating_point() else x.float()


def restore(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Back to ``like``'s dtype: ``uint8`` rounded and clipped to [0, 255], other integers rounded."""
    if like.is_floating_point():
        return y.to(like.dtype)
    if like.dtype == torch.uint8:
        return y.round().clamp(0, 255).to(torch.uint8)
    return y.round().to(like.dtype)


def channel_shared_shape(x: torch.Tensor) -> tuple[int, ...]:
    """``x``'s shape with the channel dimension (``-3`` of ``[..., C, H, W]``) set to 1."""
    shape = list(x.shape)
    if x.dim() >= 4:
        shape[-3] = 1
    return tuple(shape)


def sigma_for(level: float, spec: ModalitySpec, x: torch.Tensor, unit: str, pixel_max: float = 1.0) -> float:
    """A noise scale in the data's units.

    ``std``: ``level`` x the modality's training std (the data's own scale; the default);
    ``absolute``: ``level`` in the data's units; ``pixel``: ``level`` on the 0–255 pixel scale,
    i.e. ``level`` for ``uint8`` data and ``level / 255 * pixel_max`` for float images stored
    in ``[0, pixel_max]`` (QMF's convention).
    """
    if unit == "std":
        return float(level) * float(spec.std)
    if unit == "absolute":
        return float(level)
    if unit == "pixel":
        return float(level) if is_uint8(x) else float(level) / 255.0 * float(pixel_max)
    raise MMBenchError(f"unit must be std, absolute or pixel, got {unit!r}")


def token_id(spec: ModalitySpec, which: str, override: int | str | None = None) -> int:
    """A special token id of a text modality: ``pad``, ``unk`` or ``blank``.

    Looked up, in order: an explicit integer ``override``; the spec's attribute ``<which>_id``
    (``blank_id``, ``unk_id``, ``pad_id``); the key in the spec's ``tokens``
    (:class:`~mmbench.data.types.ModalitySpec`'s ``{"pad": 0, "unk": 1, "blank": 2}``). ``blank`` falls back to ``unk`` (QMF
    replaces words by ``_``, which a fixed vocabulary usually maps to its unknown token), and the
    defaults are :data:`DEFAULT_TOKEN_IDS` (pad 0, unk 1).
    """
    if isinstance(override, int) and not isinstance(override, bool):
        return override
    if isinstance(override, str):
        which = override
    keys = [which] + (["unk"] if which == "blank" else [])
    tokens = getattr(spec, "tokens", None) or {}
    for key in keys:
        for value in (getattr(spec, f"{key}_id", None), tokens.get(key)):
            if isinstance(value, int):
                return value
    key = "unk" if which == "blank" else which
    if key not in DEFAULT_TOKEN_IDS:
        raise MMBenchError(f"unknown special token {which!r}; use pad, unk, blank or an integer id")
    return DEFAULT_TOKEN_IDS[key]
