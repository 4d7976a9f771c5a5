"""The grid file: its schema, its expansion into runs, and every check that can run before a run starts.

A grid file (YAML, read with ``yaml.safe_load``)::

    datasets:                      # names, or mappings with modalities and per-dataset overrides
      - synthetic
      - {name: mfeat, modalities: [pix, mor], set: {optim.epochs: 20}}
      - {name: nyud2, recipe: _base/x, attack: [{protocol: qmf_rgbd}]}   # this dataset's recipe and attacks
    methods:                       # names, or mappings: every list-valued parameter is swept
      - joint
      - {name: ogm_ge, alpha: [0.5, 0.8]}          # 2 variants
      - {name: unimodal, modality: [pix, mor]}     # to pass a list as one value: [[a, b]]
      - {name: qmf, recipe: {nyud2: nyud2/qmf}}    # a recipe per (dataset, method) cell, or one for all
    seeds: 3                       # 0, 1, 2; or a list [0, 5, 7]
    recipe: recipes/base.yaml      # optional; a path relative to the grid file or a shipped recipe's name
    set: {optim.epochs: 10, model: {hidden_dim: 64}}   # shared overrides (fixed values)
    grid: {optim.lr: [0.01, 0.1]}  # shared overrides swept as a cartesian product
    attack:                        # optional: evaluate every run under noise after training
      - {noise: [gaussian], levels: [0, 0.5, 1], seeds: 2}
    resources: {num_cpus: 1, num_gpus: 0}          # per run, for --executor ray

Runs = datasets x method variants x grid values x seeds; each is resolved with
:func:`mmbench.config.resolve` (defaults < datasets.yaml < recipe < grid values < ``--set``) and
named by its run id, so the same run is never listed twice. A run's recipe is its cell's: the method
entry's (for its dataset, when ``recipe`` maps dataset names), else the dataset entry's, else the
grid's; a method's or dataset's recipe that names a dataset or method must name the cell's. Each
``attack:`` entry becomes an :class:`~mmbench.attacks.plan.AttackPlan`; a dataset's own ``attack:``
replaces the grid's for its runs.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmbench.attacks.plan import AttackPlan
from mmbench.config import RunConfig, load_recipe, load_yaml_file, locate_recipe, parse_set, resolve, short_repr
from mmbench.config import data_dir as default_data_dir
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS, unknown_name_message
from mmbench.results import RunFolder

GRID_KEYS = ("datasets", "methods", "seeds", "recipe", "set", "grid", "attack", "resources")
SECTIONS = ("data", "model", "method", "optim", "output")
#: keys that the grid's own sections choose; ``set``/``grid`` may not override them
IDENTITY_KEYS = {"data.dataset": "datasets", "data.modalities": "datasets[].modalities", "method.name": "methods",
                 "seed": "seeds"}


@dataclass
class DatasetEntry:
    """One ``datasets:`` entry: its name, modalities, overrides, recipe and attacks (None: the grid's)."""

    name: str
    modalities: list[str] | None
    set: dict[str, Any]
    where: str
    recipe: str | None = None
    attacks: list[AttackPlan] | None = None


@dataclass
class MethodVariant:
    """One variant of a ``methods:`` entry; ``recipe``: one file for every dataset, or dataset name -> file."""

    name: str
    params: dict[str, Any]
    set: dict[str, Any]
    where: str
    recipe: str | dict[str, str] | None = None


@dataclass
class Run:
    """One expanded run: plain data, so it travels to worker processes and Ray tasks."""

    run_id: str
    config: dict[str, Any]  # RunConfig.to_dict(), fully resolved
    label: str
    attacks: list[AttackPlan] = field(default_factory=list)
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def cfg(self) -> RunConfig:
        return RunConfig.from_dict(copy.deepcopy(self.config))

    def folder(self) -> RunFolder:
        return RunFolder.for_config(self.cfg())


@dataclass
class Grid:
    path: str
    runs: list[Run]
    duplicates: int = 0  # grid points that resolved to a run id already listed
    unprepared: list[str] = field(default_factory=list)  # datasets a dry run listed without their prepared data

    @property
    def digest(self) -> str:
        return hashlib.sha1(" ".join(r.run_id for r in self.runs).encode()).hexdigest()[:8]


def load_grid(path: str | os.PathLike) -> dict[str, Any]:
    """Read a grid file safely (``yaml.safe_load``: no Python objects) and check its top-level keys."""
    path = Path(path)
    d = load_yaml_file(path, "grid file", "pass an existing YAML file")
    if not isinstance(d, dict):
        raise MMBenchError(f"grid file {str(path)!r} must be a mapping with datasets, methods and seeds")
    for key in d:
        if key not in GRID_KEYS:
            raise MMBenchError(f"{path}: {unknown_name_message('grid key', str(key), list(GRID_KEYS))}")
    for key in ("datasets", "methods"):
        if not d.get(key):
            raise MMBenchError(f"{path}: '{key}' is missing or empty; list at least one")
    return d


def expand(path: str | os.PathLike, results_dir: str = "results", data_dir: str | None = None,
           sets: list[str] | None = None, device: str | None = None, prepare: bool = True) -> Grid:
    """Every run of the grid as a resolved config (unknown names and bad values are errors that
    name the grid entry). ``prepare``: prepare embedded datasets that are missing (else only check names)."""
    from mmbench.run import complete_config

    d = load_grid(path)
    where = str(path)
    folder = Path(path).parent
    recipe = _recipe_ref(d.get("recipe"), folder, f"{where}: recipe")
    shared = _flatten(d.get("set") or {}, f"{where}: set")
    swept = _flatten(d.get("grid") or {}, f"{where}: grid")
    for key, values in swept.items():
        if not isinstance(values, list) or not values:
            raise MMBenchError(f"{where}: grid.{key} must be a non-empty list of values to sweep")
    for key in [*shared, *swept, *(k for k, _ in map(parse_set, sets or []))]:
        if key in IDENTITY_KEYS or key.startswith("method."):
            owner = "methods" if key.startswith("method.") else IDENTITY_KEYS[key]
            raise MMBenchError(f"{where}: {key} is chosen by '{owner}' in the grid, not by set/grid; move it there")
        if key in ("output.results_dir", "output.data_dir"):
            raise MMBenchError(f"{where}: {key} is set by the sweep's --{key[7:].replace('_', '-')} option, not in the grid")
    datasets = [_dataset_entry(e, f"{where}: datasets[{i}]", folder)
                for i, e in enumerate(_as_list(d["datasets"], where, "datasets"))]
    names = [e.name for e in datasets]
    methods = [v for i, e in enumerate(_as_list(d["methods"], where, "methods"))
               for v in _method_variants(e, f"{where}: methods[{i}]", folder, names)]
    seeds = _seeds(d.get("seeds", 1), where)
    attacks = _attack_plans(d.get("attack"), where)
    resources = _resources(d.get("resources") or {}, where)
    results_dir = str(Path(results_dir).resolve())  # workers may run elsewhere (Ray: another cwd)
    data_root = str(default_data_dir(data_dir).resolve())

    metas = {e.name: _dataset_meta(e.name, data_root, prepare, e.where) for e in datasets}
    runs: dict[str, Run] = {}
    duplicates = 0
    checked: set = set()  # what was checked once: configs (seeds do not matter) and cell recipes
    combos = [dict(zip(swept, values)) for values in itertools.product(*swept.values())] or [{}]
    for ds, mv, combo, seed in itertools.product(datasets, methods, combos, seeds):
        flags = {**shared, **ds.set, **mv.set, **combo, "data.dataset": ds.name, "data.modalities": ds.modalities,
                 "method.name": mv.name, **{f"method.{k}": v for k, v in mv.params.items()}, "seed": seed,
                 "output.results_dir": results_dir, "output.data_dir": data_root, "device": device}
        context = f"{ds.where} x {mv.where}"
        own = (mv.recipe.get(ds.name) if isinstance(mv.recipe, dict) else mv.recipe) or ds.recipe  # the cell's
        try:
            if own and (own, ds.name, mv.name) not in checked:
                _check_cell_recipe(own, ds.name, mv.name)
                checked.add((own, ds.name, mv.name))
            cfg = resolve(own or recipe, flags, sets)
            cfg, method_obj = complete_config(cfg, metas[ds.name].digest if metas[ds.name] else "")
            key = json.dumps([asdict(cfg.data), asdict(cfg.model), asdict(cfg.method)], sort_keys=True, default=str)
            if key not in checked:  # seeds do not change what can go wrong
                _check_run(cfg, method_obj, metas[ds.name])
                checked.add(key)
        except MMBenchError as e:
            raise MMBenchError(f"{context}: {e}") from None
        run_id = cfg.run_id()
        if run_id in runs:
            duplicates += 1
            continue
        num_gpus = resources.get("num_gpus", 1.0 if cfg.device.startswith("cuda") else 0.0)
        runs[run_id] = Run(run_id, cfg.to_dict(), run_label(cfg, method_obj),
                           attacks if ds.attacks is None else ds.attacks, resources.get("num_cpus", 1.0), num_gpus)
    unprepared = [name for name, meta in metas.items() if meta is None and not DATASETS.get(name).embedded]
    return Grid(str(path), list(runs.values()), duplicates, unprepared)


def _recipe_ref(ref: Any, folder: Path, where: str) -> str | None:
    """A grid's recipe reference as a file path: relative to the grid file, else a shipped recipe by name."""
    if ref is None:
        return None
    if not isinstance(ref, str) or not ref:
        raise MMBenchError(f"{where} must be a recipe file path or a shipped recipe's name, got {short_repr(ref)}")
    found = locate_recipe(ref, folder)
    if found is None:
        raise MMBenchError(f"{where}: recipe {ref!r} not found, neither next to the grid file nor among the shipped "
                           "recipes (mmbench/recipes); fix the name")
    return str(found)


def _check_cell_recipe(path: str, dataset: str, method: str) -> None:
    """A method's or dataset's recipe that names a dataset or method names the cell's: else its settings
    (and published figures) would be taken for another cell's."""
    d = load_recipe(path)
    for key, section, want in (("dataset", "data", dataset), ("name", "method", method)):
        named = (d.get(section) or {}).get(key) if isinstance(d.get(section), dict) else None
        if named is not None and named != want:
            raise MMBenchError(f"recipe {path!r} is for {section}.{key} {named!r}, not {want!r}; "
                               "give this cell its own recipe")


def _attack_plans(value: Any, where: str) -> list[AttackPlan]:
    """An ``attack:`` list (the grid's or a dataset's) as plans."""
    return [AttackPlan.from_grid(a, f"{where}: attack[{i}]") for i, a in enumerate(_as_list(value or [], where, "attack"))]


def _as_list(value: Any, where: str, key: str) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, (str, dict)):
        return [value]
    raise MMBenchError(f"{where}: '{key}' must be a list, got {short_repr(value)}")


def _flatten(d: Any, where: str) -> dict[str, Any]:
    """``{optim.lr: 0.1, model: {hidden_dim: 8}}`` -> dotted keys (one level under a section name)."""
    if not isinstance(d, dict):
        raise MMBenchError(f"{where} must be a mapping of config keys to values")
    out = {}
    for key, value in d.items():
        key = str(key)
        if key in SECTIONS and isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


DATASET_KEYS = ("name", "modalities", "set", "recipe", "attack")


def _dataset_entry(entry: Any, where: str, folder: Path) -> DatasetEntry:
    if isinstance(entry, str):
        return DatasetEntry(entry, None, {}, f"{where} ({entry})")
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise MMBenchError(f"{where} must be a dataset name or a mapping with 'name' (and {', '.join(DATASET_KEYS[1:])})")
    unknown = set(entry) - set(DATASET_KEYS)
    if unknown:
        raise MMBenchError(f"{where}: unknown key {short_repr(sorted(unknown, key=str)[0])}; a dataset entry has "
                           f"{', '.join(DATASET_KEYS)}")
    modalities = entry.get("modalities")
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    if modalities is not None and (not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities)):
        raise MMBenchError(f"{where}: modalities must be a list of names, got {short_repr(modalities)}")
    dataset_set = _flatten(entry.get("set") or {}, f"{where}: set")
    if "data.modalities" in dataset_set or "data.dataset" in dataset_set:
        raise MMBenchError(f"{where}: give the dataset's name and modalities as 'name' and 'modalities', not in set")
    where = f"{where} ({entry['name']})"
    attacks = _attack_plans(entry["attack"], where) if "attack" in entry else None
    return DatasetEntry(entry["name"], modalities, dataset_set, where,
                        _recipe_ref(entry.get("recipe"), folder, f"{where}: recipe"), attacks)


def _method_variants(entry: Any, where: str, folder: Path, datasets: list[str]) -> list[MethodVariant]:
    if isinstance(entry, str):
        return [MethodVariant(entry, {}, {}, f"{where} ({entry})")]
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise MMBenchError(f"{where} must be a method name or a mapping with 'name' and its parameters")
    name = entry["name"]
    method_set = _flatten(entry.get("set") or {}, f"{where}: set")
    if any(k.startswith("method.") or k in IDENTITY_KEYS for k in method_set):
        raise MMBenchError(f"{where}: give method parameters directly in the method entry, not in its set")
    recipe = entry.get("recipe")
    if isinstance(recipe, dict):
        for dataset in recipe:
            if dataset not in datasets:
                raise MMBenchError(f"{where} ({name}): recipe names dataset {short_repr(dataset)}, which the grid "
                                   f"does not list; list it under datasets or use one of {', '.join(datasets)}")
        recipe = {ds: _recipe_ref(ref, folder, f"{where} ({name}): recipe.{ds}") for ds, ref in recipe.items()}
    else:
        recipe = _recipe_ref(recipe, folder, f"{where} ({name}): recipe")
    params = {k: v for k, v in entry.items() if k not in ("name", "set", "recipe")}
    keys = list(params)
    lists = [params[k] if isinstance(params[k], list) else [params[k]] for k in keys]
    if any(not v for v in lists):
        raise MMBenchError(f"{where}: parameter {keys[[len(v) for v in lists].index(0)]!r} has an empty list")
    variants = []
    for values in itertools.product(*lists):
        chosen = dict(zip(keys, values))
        text = ", ".join(f"{k}={v}" for k, v in chosen.items())
        variants.append(MethodVariant(name, chosen, method_set, f"{where} ({name}{f'({text})' if text else ''})",
                                      recipe))
    return variants


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, bool):
        raise MMBenchError(f"{where}: seeds must be a count or a list of integers, got {short_repr(value)}")
    if isinstance(value, int):
        if value < 1:
            raise MMBenchError(f"{where}: seeds must be at least 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        return list(dict.fromkeys(value))
    raise MMBenchError(f"{where}: seeds must be a count or a list of integers, got {short_repr(value)}")


def _resources(d: Any, where: str) -> dict[str, float]:
    if not isinstance(d, dict) or set(d) - {"num_cpus", "num_gpus"}:
        raise MMBenchError(f"{where}: resources must be a mapping with num_cpus and/or num_gpus")
    for k, v in d.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (k == "num_cpus" and v == 0):
            raise MMBenchError(f"{where}: resources.{k} must be a positive number, got {short_repr(v)}")
    return {k: float(v) for k, v in d.items()}


def _dataset_meta(name: str, data_root: str, prepare: bool, where: str):
    from mmbench.data.store import load_meta, prepared_path

    try:
        if not (prepared_path(name, data_root) / "meta.json").exists() and not prepare and name in DATASETS:
            return None  # a dry run lists it; embedded data is prepared when the sweep runs
        return load_meta(name, data_root, auto_prepare=prepare)
    except MMBenchError as e:
        raise MMBenchError(f"{where}: {e}") from None


def _check_run(cfg: RunConfig, method, meta) -> None:
    """Catch what a user can get wrong before anything runs: modalities, encoders, the method's needs."""
    from mmbench.models.multimodal import ModelSpec

    if meta is None:
        return
    chosen = cfg.data.modalities or list(meta.modalities)
    for m in chosen:
        if m not in meta.modalities:
            raise MMBenchError(unknown_name_message(f"modality of {meta.name!r}", m, list(meta.modalities)))
    selected = meta.select(chosen)
    spec = ModelSpec(selected.modalities, selected.num_classes, cfg.model)
    unknown = [m for m in cfg.model.encoders if m not in selected.modalities]
    if unknown:
        raise MMBenchError(unknown_name_message("modality in model.encoders", unknown[0], chosen))
    method.check_spec(spec)
    try:
        method.build_model(spec)
    except MMBenchError:
        raise
    except Exception:  # noqa: BLE001 - not a user error: the run itself will record it
        pass


def verify_datasets(grid: Grid) -> None:
    """Check every prepared array the grid uses against ``meta.json``'s SHA-256 (stamped, see
    :func:`mmbench.data.store.verify_files`), once, before any run."""
    from mmbench.data.store import SPLITS, load_meta, verify_files

    seen = set()
    for run in grid.runs:
        data = run.config["data"]
        root = run.config["output"]["data_dir"]
        key = (data["dataset"], root, tuple(data["modalities"] or ()))
        if key in seen:
            continue
        seen.add(key)
        meta = load_meta(data["dataset"], root)
        folder = Path(root) / data["dataset"]
        verify_files(folder, [f"{split}/{name}.npy" for split in SPLITS
                              for name in [*(data["modalities"] or meta.modalities), "labels"]], meta)


def run_label(cfg: RunConfig, method: Any) -> str:
    """``dataset[modalities] method(changed parameters) sSEED``, as the report labels the run."""
    from mmbench.methods.base import method_label
    from mmbench.report.labels import dataset_label

    name = method_label(cfg.method.name, cfg.method.params, list(method.reconstructed))
    return f"{dataset_label(cfg.data.dataset, cfg.data.modalities)} {name} s{cfg.seed}"
