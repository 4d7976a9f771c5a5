"""Run configuration: one dataclass tree, recipes, overrides and validation.

Precedence, lowest first: built-in defaults < ``datasets.yaml`` entry < recipe file <
command-line flags < ``--set key=value``. Unknown keys are errors that name close matches.
The method's own hyper-parameters live under ``method`` beside its ``name`` and are
validated against the method's parameter dataclass when the method is built.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from mmbench import yaml_io
from mmbench.errors import MMBenchError

# ---------------------------------------------------------------------------------------
# Domains: the values a field accepts beyond its type, declared with ``Annotated[type, Domain]``
# ---------------------------------------------------------------------------------------


class Domain:
    """The values a config field or method parameter accepts, beyond its type (``None`` always passes).

    Declared beside the field: ``lr: Annotated[float, Range(0, low_open=True)] = 0.01``. Checked by
    :func:`check_domains` when a config is resolved and when a method's parameters are built.
    """

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def outside(self) -> list[Any]:
        """Values just outside the domain (the bad-input tests feed them to every field)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Range(Domain):
    """A number between ``low`` and ``high`` (either may be open or absent)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def accepts(self, value: Any) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def __str__(self) -> str:
        low, high = _num(self.low), _num(self.high)
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {low}"
        hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {high}"
        if lo and hi:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        return lo or hi or "any number"

    def outside(self) -> list[Any]:
        step = 1 if isinstance(self.low if self.low is not None else self.high, int) else 0.5
        return ([self.low if self.low_open else self.low - step] if self.low is not None else []) + \
               ([self.high if self.high_open else self.high + step] if self.high is not None else [])


@dataclass(frozen=True)
class OneOf(Domain):
    """One of a fixed set of choices."""

    choices: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))

    def outside(self) -> list[Any]:
        return ["not_a_choice"]


def _num(x: float | None) -> str:
    return str(x) if isinstance(x, int) or x is None else f"{x:g}"


@dataclass(frozen=True)
class Device(Domain):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

    def accepts(self, value: Any) -> bool:
        kind, _, index = str(value).partition(":")
        return value in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit())

    def __str__(self) -> str:
        return "auto, cpu, cuda or cuda:N"

    def outside(self) -> list[Any]:
        return ["tpu", "cuda:x"]


@dataclass(frozen=True)
class Folder(Domain):
    """A path that is a folder, or does not exist yet (then it is created when needed)."""

    def accepts(self, value: Any) -> bool:
        return not Path(value).exists() or Path(value).is_dir()

    def __str__(self) -> str:
        return "a folder (or a path where one can be created), not a file"

    def outside(self) -> list[Any]:
        return [__file__]


@dataclass(frozen=True)
class SubsetOf(Domain):
    """A list of distinct choices from a fixed set (empty allowed)."""

    choices: tuple[str, ...]

    def accepts(self, value: Any) -> bool:
        return all(v in self.choices for v in value) and len(set(value)) == len(value)

    def __str__(self) -> str:
        return "a list of distinct names from " + ", ".join(self.choices)

    def outside(self) -> list[Any]:
        return [["not_a_choice"]]


@dataclass(frozen=True)
class Names(Domain):
    """A non-empty list of distinct, non-empty names."""

    def accepts(self, value: Any) -> bool:
        return bool(value) and all(str(v).strip() for v in value) and len(set(value)) == len(value)

    def __str__(self) -> str:
        return "a non-empty list of distinct names"

    def outside(self) -> list[Any]:
        return [[], ["a", "a"]]


#: seeds go to numpy and scikit-learn, whose seeds are unsigned 32-bit
SEED_RANGE = Range(0, 2**32 - 1)
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
UNIT = Range(0, 1)


def domains(cls: type) -> dict[str, Domain]:
    """The :class:`Domain` declared for each field of dataclass ``cls`` (fields without one are absent)."""
    out = {}
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        found = [m for m in getattr(tp, "__metadata__", ()) if isinstance(m, Domain)]
        if found:
            out[name] = found[0]
    return out


def check_domains(obj: Any, prefix: str = "") -> None:
    """Raise a one-line :class:`MMBenchError` naming the first field of dataclass ``obj`` (recursively)
    whose value is outside its declared domain: the key, the value and what is allowed."""
    declared = domains(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_domains(value, f"{prefix}{f.name}.")
        elif f.name in declared and value is not None and not declared[f.name].accepts(value):
            raise MMBenchError(f"config key '{prefix}{f.name}' must be {declared[f.name]}, got {short_repr(value)}")


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error message stays one short line."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxdict = r.maxtuple = 6
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------
# The config tree
# ---------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # name of a prepared dataset (an embedded one is prepared on demand)
    modalities: Annotated[list[str] | None, Names()] = None  # subset of the prepared modalities; None = all
    prepared: str | None = None  # digest of the prepared data (its meta.json), filled in when training: part of the run id
    # train-time augmentation of image/video modalities (mmbench.data.augment); "none" leaves the run id as before
    augment: Annotated[str, OneOf(("none", "crop_flip"))] = "none"
    # how training reads the splits: "memory" loads them; "mmap" leaves them on disk and reads each batch's
    # rows (mmbench.data.mapped), for data larger than RAM. Same batches, same results: not part of the run id
    load: Annotated[str, OneOf(("memory", "mmap"))] = "memory"


@dataclass
class ModelConfig:
    encoders: dict[str, str] = field(default_factory=dict)  # modality -> encoder; default by modality kind
    # modality -> "none", "imagenet" (the encoder's published weights, from torch's local cache) or a weight file
    # (mmbench.models.pretrained); nothing is downloaded
    pretrained: dict[str, str] = field(default_factory=dict)
    freeze: list[str] = field(default_factory=list)  # modalities whose encoders are not trained
    fusion: str = "concat"
    hidden_dim: Annotated[int, AT_LEAST_ONE] = 128
    feature_dim: Annotated[int, AT_LEAST_ONE] = 64
    depth: Annotated[int, NON_NEGATIVE] = 2  # hidden layers (mlp) or conv stages (cnn, conv1d)
    dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.0
    # torch.compile every encoder (mmbench.models.compiled): less peak memory on CPU, same results up to float
    # rounding; the share of activations the compiled backward keeps (the rest is recomputed), 1 keeps all.
    # At their defaults (false, 1) both leave the run id as before
    compile: bool = False
    activation_memory_budget: Annotated[float, Range(0, 1, low_open=True)] = 1.0


@dataclass
class MethodConfig:
    name: str = "joint"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    optimizer: Annotated[str, OneOf(("sgd", "adam", "adamw"))] = "sgd"
    lr: Annotated[float, POSITIVE] = 0.01
    momentum: Annotated[float, Range(0, 1, high_open=True)] = 0.9
    weight_decay: Annotated[float, NON_NEGATIVE] = 1e-4
    schedule: Annotated[str, OneOf(("none", "step", "cosine"))] = "none"
    step_size: Annotated[int, AT_LEAST_ONE] = 30
    gamma: Annotated[float, POSITIVE] = 0.1
    epochs: Annotated[int, AT_LEAST_ONE] = 30
    batch_size: Annotated[int, AT_LEAST_ONE] = 64
    grad_clip: Annotated[float | None, POSITIVE] = None  # max gradient norm; None: no clipping
    # mixed precision: autocast to bf16 or fp16 (fp16 with gradient scaling); "none" leaves the run id as before
    amp: Annotated[str, OneOf(("none", "bf16", "fp16"))] = "none"


@dataclass
class OutputConfig:
    results_dir: Annotated[str, Folder()] = "results"
    data_dir: Annotated[str | None, Folder()] = None  # None: $MMBENCH_DATA, else ./data
    save_model: bool = True
    probe: bool = True  # linear-probe every encoder after training (summary.json: probe_<m>)
    # experiment trackers that also receive the metrics, config and summary (mmbench.loggers; optional extras)
    loggers: Annotated[list[str], SubsetOf(("tensorboard", "mlflow", "wandb"))] = field(default_factory=list)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: Annotated[int, SEED_RANGE] = 0
    device: Annotated[str, Device()] = "auto"
    # torch.use_deterministic_algorithms for the run (CUDA: also CUBLAS_WORKSPACE_CONFIG); False leaves the run id as before
    deterministic: bool = False
    output: OutputConfig = field(default_factory=OutputConfig)
    # what the source paper reports for this setting: [{metric, value, source, ...}]; not part of the run id
    published: list[dict[str, Any]] = field(default_factory=list)

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the method's parameters flattened beside its name, as in recipes."""
        d = dataclasses.asdict(self)
        d["method"] = {"name": self.method.name, **self.method.params}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return _build(cls, _split_method(d), "")

    def run_id(self) -> str:
        """Same resolved config and seed -> same id (output locations do not count). The method's
        defaults fill its unset parameters first, and the prepared data's digest ``data.prepared`` when
        the dataset is prepared, so the id before training is the run folder's."""
        from mmbench.methods.base import method_params

        d = self.to_dict()
        d["method"] = {"name": self.method.name, **dataclasses.asdict(method_params(self.method))}
        if d["data"]["prepared"] is None and (prepared := _prepared_digest(self)) is not None:
            d["data"]["prepared"] = prepared
        d.pop("output")
        d.pop("published")
        d["data"].pop("load")  # how the data is read: same batches, same results
        for section, key, default in (("data", "augment", "none"), ("optim", "amp", "none"),
                                      ("model", "pretrained", {}), ("model", "freeze", []),
                                      ("model", "compile", False), ("model", "activation_memory_budget", 1.0)):
            if d[section][key] == default:  # options added later leave older run ids unchanged at their default
                d[section].pop(key)
        if not d["deterministic"]:
            d.pop("deterministic")
        digest = hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"{self.data.dataset}-{self.method.name}-s{self.seed}-{digest}"


def _prepared_digest(cfg: RunConfig) -> str | None:
    """The digest of ``cfg``'s prepared dataset, or None when it is not prepared (yet)."""
    from mmbench.data.store import load_meta, prepared_path

    if not (prepared_path(cfg.data.dataset, cfg.output.data_dir) / "meta.json").exists():
        return None
    return load_meta(cfg.data.dataset, cfg.output.data_dir).digest


# ---------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$MMBENCH_DATA``, else ``./data``; a path that exists but is no folder is an error."""
    path = Path(explicit or os.environ.get("MMBENCH_DATA") or "data")
    if not Folder().accepts(path):
        raise MMBenchError(f"data folder {str(path)!r} is a file; give --data-dir a folder")
    return path


def catalog_path() -> Path:
    return Path(__file__).with_name("datasets.yaml")


def load_catalog() -> dict[str, Any]:
    """``datasets.yaml`` (a copy: callers may change it)."""
    return copy.deepcopy(_parsed_catalog())


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """The ``defaults`` of ``dataset`` in ``datasets.yaml`` (a copy; empty for a dataset not listed)."""
    return copy.deepcopy((_parsed_catalog().get(dataset) or {}).get("defaults") or {})


@functools.lru_cache(maxsize=1)
def _parsed_catalog() -> dict[str, Any]:  # parsed once per process: resolve() runs once per sweep run
    return yaml_io.parse(catalog_path().read_text()) or {}


# ---------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------


def resolve(
    recipe: str | os.PathLike | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> RunConfig:
    """Layer defaults < datasets.yaml < recipe < flags < --set into one validated config.

    ``flags`` uses dotted keys (``{"data.dataset": "mfeat", "seed": 1}``); ``None`` values
    are ignored so unset CLI options do not override anything.
    """
    recipe_d = load_recipe(recipe) if recipe else {}
    flag_d = _nest({k: v for k, v in (flags or {}).items() if v is not None})
    set_d = _nest(dict(parse_set(s) for s in sets or []))
    upper = [_split_method(d) for d in (recipe_d, flag_d, set_d)]

    dataset = DataConfig.dataset
    for layer in upper:
        section = layer.get("data")
        if isinstance(section, dict) and "dataset" in section:
            dataset = coerce(section["dataset"], str, "data.dataset")
    layers = [_split_method(dataset_defaults(dataset)), *upper]

    merged = _split_method(RunConfig().to_dict())
    for source, layer in zip(("datasets.yaml", "recipe", "flags", "--set"), layers):
        merged = _merge(merged, layer, RunConfig, source, "")
    cfg = _build(RunConfig, merged, "")
    check_domains(cfg)
    return cfg


def load_yaml_file(path: str | os.PathLike, what: str, missing_hint: str) -> Any:
    """A user's YAML file read safely and within bounds (:mod:`mmbench.yaml_io`); a missing, oversized
    or invalid file is a one-line :class:`MMBenchError` naming ``what`` it is and the problem."""
    return yaml_io.load_file(path, what, missing_hint)


RECIPES = Path(__file__).with_name("recipes")


def recipe_names() -> list[str]:
    """The recipes shipped with mmbench, as ``DATASET/METHOD`` (``_base/`` holds included parts, not recipes)."""
    return sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.glob("*/*.yaml")
                  if not p.parent.name.startswith("_"))


def find_recipe(ref: str | os.PathLike) -> Path:
    """A recipe file: an existing path, else a shipped recipe by name (``mfeat/ogm_ge``; a leading
    ``recipes/`` and a ``.yaml`` suffix are accepted, so the repository's paths work from anywhere)."""
    path = Path(ref)
    if path.is_file():
        return path
    name = str(ref).replace(os.sep, "/").removeprefix("recipes/").removesuffix(".yaml")
    if name in recipe_names():
        return RECIPES / f"{name}.yaml"
    if path.suffix in (".yaml", ".yml") or path.is_absolute():
        raise MMBenchError(f"recipe file {str(ref)!r} not found; pass an existing YAML file, or a shipped recipe "
                           "by name, e.g. --recipe mfeat/ogm_ge")
    from mmbench.registry import unknown_name_message

    raise MMBenchError(unknown_name_message("recipe", str(ref), recipe_names()) + "; or pass an existing YAML file")


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe with its ``include:`` files merged in (see :func:`_read_recipe`)."""
    return _read_recipe(find_recipe(path), ())


def _read_recipe(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """``include: REF`` (or a list of them; lm-evaluation-harness's task YAMLs) merges other recipes
    under this one: each REF is a path relative to this file or a shipped recipe by name
    (``_base/sgd_step70``); mappings merge deeply, later includes over earlier ones and this file
    over all. Missing files and cycles are one-line errors."""
    d = load_yaml_file(path, "recipe", "pass an existing YAML file to --recipe")
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise MMBenchError(f"recipe {str(path)!r} must be a mapping of config sections (data, model, ...)")
    refs = d.pop("include", [])
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise MMBenchError(f"recipe {str(path)!r}: include must be a recipe path or name, or a list of them")
    chain = (*chain, path.resolve())
    merged: dict[str, Any] = {}
    for ref in refs:
        included = _included(ref, path)
        if included.resolve() in chain:
            cycle = " -> ".join(p.name for p in (*chain, included))
            raise MMBenchError(f"recipe {str(path)!r}: include cycle {cycle}; remove one of the includes")
        merged = _deep_merge(merged, _read_recipe(included, chain))
    return _deep_merge(merged, d)


def locate_recipe(ref: str, folder: Path) -> Path | None:
    """``ref`` as a path relative to ``folder`` (or absolute), else a shipped recipe or part by name
    (``nyud2/qmf``, ``_base/sgd_step70``; a leading ``recipes/`` is accepted); None when neither exists."""
    name = ref.replace(os.sep, "/").removeprefix("recipes/").removesuffix(".yaml")
    for candidate in (folder / ref, RECIPES / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def _included(ref: str, including: Path) -> Path:
    found = locate_recipe(ref, including.parent)
    if found is not None:
        return found
    raise MMBenchError(f"recipe {str(including)!r}: include {ref!r} not found, neither next to it nor among "
                       "the shipped recipes; fix the include")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _deep_merge(base[key], value) if both else value
    return out


def parse_set(assignment: str) -> tuple[str, Any]:
    """``"optim.lr=0.1"`` -> ``("optim.lr", 0.1)``; values are parsed as YAML scalars/lists."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise MMBenchError(f"--set {short_repr(assignment)} must look like key=value, e.g. --set optim.lr=0.01")
    try:
        parsed = yaml_io.parse(value) if value.strip() else None
    except yaml_io.YAMLTooLarge as e:
        raise MMBenchError(f"--set {key.strip()}: the value is refused: {e}") from None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise MMBenchError(f"conflicting keys around {key!r}")
        node[leaf] = value
    return out


def _split_method(d: dict[str, Any]) -> dict[str, Any]:
    """Recipe form ``method: {name, **params}`` -> internal ``method: {name, params}``."""
    d = copy.deepcopy(d)
    method = d.get("method")
    if isinstance(method, str):
        d["method"] = {"name": method}
    elif isinstance(method, dict) and "params" not in method:
        params = {k: v for k, v in method.items() if k != "name"}
        d["method"] = {k: v for k, v in method.items() if k == "name"}
        if params:
            d["method"]["params"] = params
    return d


def _merge(base: dict, override: dict, cls: type, source: str, prefix: str) -> dict:
    if not isinstance(override, dict):
        raise MMBenchError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for key, value in override.items():
        if key not in hints:
            raise MMBenchError(_unknown_key(source, prefix + str(key), list(hints), prefix))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            out[key] = _merge(base.get(key, {}), value, tp, source, f"{prefix}{key}.")
        elif _origin(tp) is dict and isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = {**base[key], **value}
        else:
            out[key] = value
    return out


def _unknown_key(source: str, key: str, known: list[str], prefix: str) -> str:
    leaf = key[len(prefix):]
    close = difflib.get_close_matches(leaf, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(prefix + c for c in close)}? " if close else ""
    return f"{source}: unknown config key {short_repr(key)}; {hint}valid keys here: {', '.join(prefix + k for k in known)}"


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp)


def validate_published(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each entry names a metric, a number and where it was published."""
    for e in entries:
        missing = [k for k in ("metric", "value", "source") if k not in e]
        if missing or not isinstance(e.get("value"), (int, float)):
            raise MMBenchError(f"published entries need metric, a numeric value and source; got {short_repr(e)}")
    return entries


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        if key not in hints:
            raise MMBenchError(_unknown_key("config", prefix + key, list(hints), prefix))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(value, tp, prefix + key)
    validate_published(kwargs.get("published", []))
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the harmless cases (int -> float, "a,b" -> list)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except MMBenchError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise MMBenchError(f"config key {key!r} must be a list, got {short_repr(value)}")
        return [coerce(v, args[0] if args else Any, key) for v in value]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise MMBenchError(f"config key {key!r} must be a list, got {short_repr(value)}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise MMBenchError(f"config key {key!r} must be a mapping, got {short_repr(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, str):
            value = _number(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, str):
            value = _number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise MMBenchError(f"config key {key!r} must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a list item "8" that YAML read as a number
    else:
        return value
    raise MMBenchError(f"config key {key!r} must be {getattr(tp, '__name__', tp)}, got {short_repr(value)}")


def _number(text: str) -> Any:
    """``"4"`` -> 4, ``"0.5"`` -> 0.5; anything else unchanged (then rejected by the caller)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def dump_yaml(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
