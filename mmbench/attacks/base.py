"""The attack contract: a pure, seeded, vectorised function of one modality's batch.

``fn(x, level, generator, spec) -> x'`` where ``x`` is ``[N, ...]``, ``level`` the strength,
``generator`` the only source of randomness and ``spec`` the modality's
:class:`~mmbench.data.types.ModalitySpec` (kind, training statistics). Register with
``@register_attack("name", kinds=("vector", "image", "sequence"))``.
"""

from __future__ import annotations

from collections.abc import Callable

from mmbench.data.types import MODALITY_KINDS
from mmbench.registry import ATTACKS


def register_attack(name: str, kinds: tuple[str, ...] = MODALITY_KINDS) -> Callable:
    def decorator(fn: Callable) -> Callable:
        fn.kinds = kinds
        return ATTACKS.register(name)(fn)

    return decorator
