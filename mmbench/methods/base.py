"""The method contract: a hyper-parameter dataclass plus optional hooks the Trainer calls.

| hook | when |
|---|---|
| ``build_model(spec)`` | once; default: the configured encoders and fusion |
| ``forward(model, batch, state) -> ModelOutput`` | every training step; default ``model(batch)`` |
| ``loss(model, batch, out, state) -> (loss, logs)`` | every step (required) |
| ``after_backward(model, batch, out, state)`` | between backward and the optimizer step |
| ``on_epoch_start(state)`` / ``on_epoch_end(state)`` | each epoch |
| ``steps_per_batch(model) -> int`` | optimizer steps per batch (default 1; ``state.substep`` counts them) |
| ``predict(model, batch) -> ModelOutput`` | evaluation |
| ``holdout_fraction() -> float`` | once, before training: the share of ``train`` kept out of the loop |

Methods never write a training loop: a method that trains auxiliary copies of the model hands
them to ``state.fit_copy`` (the trainer's loop, see :meth:`mmbench.training.Trainer.fit_copy`). Whatever a method measures it returns in ``logs``
(per step; the trainer records epoch means) so it lands in ``metrics.csv``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from mmbench.config import MethodConfig, ModelConfig, RunConfig, check_domains, coerce, dataset_defaults
from mmbench.errors import MMBenchError
from mmbench.models.multimodal import ModelOutput, ModelSpec, MultimodalModel, build_model
from mmbench.registry import METHODS


@dataclass
class TrainState:
    """What hooks may read: progress, a seeded generator for any randomness, the model and data.

    ``train`` and ``val`` are the splits on the training device (``val`` may be used for
    monitoring, never to select anything on ``test``); ``holdout`` is the part of the training
    split kept out of ``train`` for the method (:meth:`Method.holdout_fraction`), else None;
    ``history`` holds the finished epochs' ``metrics.csv`` rows. ``on_epoch_end`` may add
    entries to ``epoch_logs``. ``fit_copy(model, loss_fn, data, epochs)`` trains a method's own
    copy of a model with the run's optimizer settings.
    """

    epoch: int = 0
    step: int = 0  # optimizer steps taken so far
    substep: int = 0  # which of the ``steps_per_batch`` steps on the current batch
    num_epochs: int = 1
    generator: torch.Generator = field(default_factory=torch.Generator)
    epoch_logs: dict[str, float] = field(default_factory=dict)
    model: MultimodalModel | None = None
    train: Any = None  # MultimodalData
    val: Any = None  # MultimodalData
    holdout: Any = None  # MultimodalData or None
    fit_copy: Callable[..., None] | None = None
    batch_size: int = 64
    history: list[dict[str, Any]] = field(default_factory=list)
    #: per-sample true-class probability of each modality's head in the last finished epoch,
    #: ``[N_train, M]`` in ``train.modalities`` order (NaN where a modality has no head)
    true_class_prob: torch.Tensor | None = None
    #: arrays the method wants kept in the run folder (saved as ``artifacts.npz``)
    artifacts: dict[str, Any] = field(default_factory=dict)
    #: set in ``on_epoch_start`` to restart the optimizer's state (momentum, moments) as a fresh one would
    reset_optimizer: bool = False


class Method:
    """Base class. Subclasses define ``Params`` (defaults = published values) and ``loss``."""

    @dataclass(frozen=True)
    class Params:
        pass

    #: whether the method's loss trains the per-modality heads itself (else the trainer
    #: trains separate heads on detached features, see ``MultimodalModel.monitor_loss``)
    trains_unimodal_heads: ClassVar[bool] = False
    #: the most modalities the method's rule is defined for (None: any number)
    max_modalities: ClassVar[int | None] = None
    #: parts of the default behaviour that mmbench reconstructed, or that depart from the official
    #: code or paper in a way that changes results (one short phrase each, documented in
    #: ``docs/methods/``); non-empty gives the method the mark ``‡`` in every report
    reconstructed: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def check_spec(self, spec: ModelSpec) -> None:
        """Raise a clear error when the data does not fit the method (called before ``build_model``)."""
        if self.max_modalities is not None and len(spec.modalities) > self.max_modalities:
            raise MMBenchError(f"method {self.registry_name!r} is defined for at most {self.max_modalities} "
                               f"modalities, the data has {len(spec.modalities)}; choose some with --modalities")

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        return build_model(spec)

    def forward(self, model: MultimodalModel, batch, state: TrainState) -> ModelOutput:
        return model(batch)

    def loss(self, model: MultimodalModel, batch, out: ModelOutput, state: TrainState) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def after_backward(self, model: MultimodalModel, batch, out: ModelOutput, state: TrainState) -> dict:
        return {}

    def on_epoch_start(self, state: TrainState) -> None:
        pass

    def steps_per_batch(self, model: nn.Module) -> int:
        """How many optimizer steps the trainer takes on each batch (forward, loss, backward, update each)."""
        return 1

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def predict(self, model: MultimodalModel, batch) -> ModelOutput:
        return model(batch)

    def holdout_fraction(self) -> float:
        """Share of the training split the trainer keeps out of training for the method (stratified,
        seeded by the run's seed; ``state.holdout``); 0: none."""
        return 0.0

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The method's internal state for per-epoch checkpoints (resume = uninterrupted run).

        Generic default, so methods need no code: every instance attribute except ``params``,
        made of tensors, numbers, strings, ``None``, lists, tuples and dicts (also numpy
        arrays and scalars, ``nn.Module`` / optimizer attributes by their ``state_dict()``,
        ``torch.Generator`` by its state). Anything else (e.g. a fitted scikit-learn object)
        raises :class:`mmbench.checkpoint.NotCheckpointable`; then the run trains without
        checkpoints (a resume restarts it). Override both methods to store such state yourself.
        """
        from mmbench.checkpoint import encode

        return {k: encode(v, f"{type(self).__name__}.{k}") for k, v in vars(self).items() if k != "params"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (modules and generators are loaded in place)."""
        from mmbench.checkpoint import decode

        for k, v in state.items():
            setattr(self, k, decode(v, getattr(self, k, None)))


def check_choices(params: Any, **allowed: tuple[str, ...]) -> None:
    """For ``Params.__post_init__``: a ``ValueError`` naming the first field whose value is not among its choices."""
    for name, choices in allowed.items():
        value = getattr(params, name)
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def build_method(cfg: MethodConfig) -> Method:
    """Instantiate the method named in ``cfg`` with validated parameters (unknown keys are errors)."""
    return METHODS.get(cfg.name)(method_params(cfg))


def method_params(cfg: MethodConfig):
    """The method's ``Params``: ``cfg``'s values, validated and coerced, its defaults for the rest."""
    cls = METHODS.get(cfg.name)
    hints = typing.get_type_hints(cls.Params)
    kwargs = {}
    for key, value in cfg.params.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join('method.' + c for c in close)}? " if close else ""
            valid = ", ".join("method." + k for k in hints) or "none"
            raise MMBenchError(f"unknown parameter 'method.{key}' for method {cfg.name!r}; {hint}valid: {valid}")
        kwargs[key] = coerce(value, hints[key], f"method.{key}")
    try:
        params = cls.Params(**kwargs)
    except (TypeError, ValueError) as e:
        raise MMBenchError(f"method {cfg.name!r}: {e}") from None
    check_domains(params, "method.")
    return params


def method_params_dict(method: Method) -> dict[str, Any]:
    return dataclasses.asdict(method.params)


def _as_saved(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as ``summary.json`` reads them back (tuples as lists), so both sides compare alike."""
    return json.loads(json.dumps(params, default=str))


def variant_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that differ from the method's defaults (every one for a plugin that is gone).

    ``reconstructed`` was a parameter in runs older than the class attribute: not a changed setting."""
    try:
        defaults = _as_saved(dataclasses.asdict(METHODS.get(name).Params()))
    except Exception:  # noqa: BLE001 - a plugin that is gone: show every parameter
        defaults = {}
    return {k: v for k, v in _as_saved(params).items()
            if k != "reconstructed" and (k not in defaults or defaults[k] != v)}


def method_label(name: str, params: dict[str, Any], reconstructed: list[str] | None = None) -> str:
    """``name``, plus the parameters that differ from the method's defaults: ``unimodal(modality=image)``;
    a method with parts mmbench reconstructed (``reconstructed``: the list a run's ``summary.json``
    records; None: the method class's) gets the mark ``‡``."""
    from mmbench.report.labels import format_method_label

    if reconstructed is None:
        try:
            reconstructed = list(METHODS.get(name).reconstructed)
        except Exception:  # noqa: BLE001 - a plugin that is gone
            reconstructed = []
    return format_method_label(name, variant_params(name, params), bool(reconstructed))


def run_label(cfg: RunConfig) -> dict[str, Any]:
    """What the report needs to name a run without importing its method, recorded in ``summary.json``:
    ``{"method": label, "reconstructed": bool, "variant": {parameter: value}}``.

    The variant is the parameters that differ from the method's defaults plus, for a method that
    uses the configured fusion (no ``build_model`` of its own), a fusion other than its dataset's
    default: ``joint(fusion=late)``, ``ogm_ge(alpha=0.1, fusion=gated)``."""
    from mmbench.report.labels import format_method_label

    cls = METHODS.get(cfg.method.name)
    variant = variant_params(cfg.method.name, cfg.method.params)
    default_fusion = (dataset_defaults(cfg.data.dataset).get("model") or {}).get("fusion", ModelConfig.fusion)
    if cls.build_model is Method.build_model and cfg.model.fusion != str(default_fusion):
        variant["fusion"] = cfg.model.fusion
    reconstructed = bool(cls.reconstructed)
    return {"method": format_method_label(cfg.method.name, variant, reconstructed), "reconstructed": reconstructed,
            "variant": variant}
