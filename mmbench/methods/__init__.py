"""Training methods: each a registered :class:`~mmbench.methods.base.Method` with hooks."""

from mmbench.methods.base import Method, TrainState, build_method

__all__ = ["Method", "TrainState", "build_method"]
