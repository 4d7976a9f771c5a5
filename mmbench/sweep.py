"""Sweeps: a grid file expanded into runs, executed inline, on a local process pool or on Ray.

A grid file (YAML, read with ``yaml.safe_load``)::

    datasets:                      # names, or mappings with modalities and per-dataset overrides
      - synthetic
      - {name: mfeat, modalities: [pix, mor], set: {optim.epochs: 20}}
    methods:                       # names, or mappings: every list-valued parameter is swept
      - joint
      - {name: ogm_ge, alpha: [0.5, 0.8]}          # 2 variants
      - {name: unimodal, modality: [pix, mor]}     # to pass a list as one value: [[a, b]]
    seeds: 3                       # 0, 1, 2; or a list [0, 5, 7]
    recipe: recipes/base.yaml      # optional; relative to the grid file
    set: {optim.epochs: 10, model: {hidden_dim: 64}}   # shared overrides (fixed values)
    grid: {optim.lr: [0.01, 0.1]}  # shared overrides swept as a cartesian product
    attack:                        # optional: evaluate every run under noise after training
      - {noise: [gaussian], levels: [0, 0.5, 1], seeds: 2}
    resources: {num_cpus: 1, num_gpus: 0}          # per run, for --executor ray

Runs = datasets x method variants x grid values x seeds; each is resolved with
:func:`mmbench.config.resolve` (defaults < datasets.yaml < recipe < grid values < ``--set``) and
named by its run id, so the same run is never trained twice: complete runs are skipped, partial
ones continue from their last epoch checkpoint (``--restart`` trains them from the start),
diverged ones are kept as they are (the same seed diverges again), failed ones are tried again.

Executors (registry ``EXECUTORS``): ``inline`` (this process), ``process`` (a local pool of
``--max-parallel`` worker processes, CPU threads split between them), ``ray`` (one Ray task
per run with ``num_cpus``/``num_gpus`` requests, on a local instance or ``--address``).
A failed run records ``status.json`` (status, error, traceback) in its folder and the sweep goes
on; ``--retries N`` tries a failed run again; an unwritable results directory stops the sweep
with a clear error.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmbench.config import RunConfig, load_yaml_file, parse_set, resolve, short_repr
from mmbench.config import data_dir as default_data_dir
from mmbench.errors import MMBenchError, ResultsNotWritable, TrainingDiverged
from mmbench.registry import DATASETS, EXECUTORS, unknown_name_message
from mmbench.results import RunFolder, atomic_write_bytes, atomic_write_text
from mmbench.runtime import set_threads

GRID_KEYS = ("datasets", "methods", "seeds", "recipe", "set", "grid", "attack", "resources")
SECTIONS = ("data", "model", "method", "optim", "output")
ATTACK_KEYS = ("noise", "levels", "seeds", "modalities", "fraction", "protocol", "protocol_version")
#: keys that the grid's own sections choose; ``set``/``grid`` may not override them
IDENTITY_KEYS = {"data.dataset": "datasets", "data.modalities": "datasets[].modalities", "method.name": "methods",
                 "seed": "seeds"}


# ---------------------------------------------------------------------------------------
# Grid file -> runs
# ---------------------------------------------------------------------------------------


@dataclass
class AttackPlan:
    """Ad hoc (``noise`` at ``levels``; ``protocol`` only labels the rows) or a registered protocol
    (``protocol`` without ``noise``: its conditions and levels, ``levels`` overrides them)."""

    noise: list[str] | None
    levels: list[float] | None
    seeds: list[int]
    modalities: list[str] | None = None
    fraction: float | None = None
    protocol: str = "custom"
    protocol_version: str = "1"
    rows_protocol: str = "custom"  # what attack.csv's protocol column says: the label, or the protocol's name


@dataclass
class Run:
    """One expanded run: plain data, so it travels to worker processes and Ray tasks."""

    run_id: str
    config: dict[str, Any]  # RunConfig.to_dict(), fully resolved
    label: str
    attacks: list[dict[str, Any]] = field(default_factory=list)
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
    recipe = d.get("recipe")
    if recipe is not None:
        if not isinstance(recipe, str):
            raise MMBenchError(f"{where}: 'recipe' must be a file path")
        recipe = str(Path(path).parent / recipe) if not Path(recipe).is_absolute() else recipe
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
    datasets = [_dataset_entry(e, f"{where}: datasets[{i}]") for i, e in enumerate(_as_list(d["datasets"], where, "datasets"))]
    methods = [v for i, e in enumerate(_as_list(d["methods"], where, "methods"))
               for v in _method_variants(e, f"{where}: methods[{i}]")]
    seeds = _seeds(d.get("seeds", 1), where)
    attacks = [_attack_plan(a, f"{where}: attack[{i}]") for i, a in enumerate(_as_list(d.get("attack") or [], where, "attack"))]
    resources = _resources(d.get("resources") or {}, where)
    results_dir = str(Path(results_dir).resolve())  # workers may run elsewhere (Ray: another cwd)
    data_root = str(default_data_dir(data_dir).resolve())

    metas = {name: _dataset_meta(name, data_root, prepare, entry_where) for name, _, _, entry_where in datasets}
    runs: dict[str, Run] = {}
    duplicates = 0
    checked: set[str] = set()
    combos = [dict(zip(swept, values)) for values in itertools.product(*swept.values())] or [{}]
    for (dataset, modalities, dataset_set, dwhere), (method, params, method_set, mwhere), combo, seed in \
            itertools.product(datasets, methods, combos, seeds):
        flags = {**shared, **dataset_set, **method_set, **combo, "data.dataset": dataset, "data.modalities": modalities,
                 "method.name": method, **{f"method.{k}": v for k, v in params.items()}, "seed": seed,
                 "output.results_dir": results_dir, "output.data_dir": data_root, "device": device}
        context = f"{dwhere} x {mwhere}"
        try:
            cfg = resolve(recipe, flags, sets)
            cfg, method_obj = complete_config(cfg, metas[dataset].digest if metas[dataset] else "")
            key = json.dumps([asdict(cfg.data), asdict(cfg.model), asdict(cfg.method)], sort_keys=True, default=str)
            if key not in checked:  # seeds do not change what can go wrong
                _check_run(cfg, method_obj, metas[dataset])
                checked.add(key)
        except MMBenchError as e:
            raise MMBenchError(f"{context}: {e}") from None
        run_id = cfg.run_id()
        if run_id in runs:
            duplicates += 1
            continue
        num_gpus = resources.get("num_gpus", 1.0 if cfg.device.startswith("cuda") else 0.0)
        runs[run_id] = Run(run_id, cfg.to_dict(), _label(cfg), [asdict(a) for a in attacks],
                           resources.get("num_cpus", 1.0), num_gpus)
    return Grid(str(path), list(runs.values()), duplicates)


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


def _dataset_entry(entry: Any, where: str) -> tuple[str, list[str] | None, dict[str, Any], str]:
    if isinstance(entry, str):
        return entry, None, {}, f"{where} ({entry})"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise MMBenchError(f"{where} must be a dataset name or a mapping with 'name' (and modalities, set)")
    unknown = set(entry) - {"name", "modalities", "set"}
    if unknown:
        raise MMBenchError(f"{where}: unknown key {short_repr(sorted(unknown, key=str)[0])}; a dataset entry has name, modalities, set")
    modalities = entry.get("modalities")
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    if modalities is not None and (not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities)):
        raise MMBenchError(f"{where}: modalities must be a list of names, got {short_repr(modalities)}")
    dataset_set = _flatten(entry.get("set") or {}, f"{where}: set")
    if "data.modalities" in dataset_set or "data.dataset" in dataset_set:
        raise MMBenchError(f"{where}: give the dataset's name and modalities as 'name' and 'modalities', not in set")
    return entry["name"], modalities, dataset_set, f"{where} ({entry['name']})"


def _method_variants(entry: Any, where: str) -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    if isinstance(entry, str):
        return [(entry, {}, {}, f"{where} ({entry})")]
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise MMBenchError(f"{where} must be a method name or a mapping with 'name' and its parameters")
    name = entry["name"]
    method_set = _flatten(entry.get("set") or {}, f"{where}: set")
    if any(k.startswith("method.") or k in IDENTITY_KEYS for k in method_set):
        raise MMBenchError(f"{where}: give method parameters directly in the method entry, not in its set")
    params = {k: v for k, v in entry.items() if k not in ("name", "set")}
    keys = list(params)
    lists = [params[k] if isinstance(params[k], list) else [params[k]] for k in keys]
    if any(not v for v in lists):
        raise MMBenchError(f"{where}: parameter {keys[[len(v) for v in lists].index(0)]!r} has an empty list")
    variants = []
    for values in itertools.product(*lists):
        chosen = dict(zip(keys, values))
        text = ", ".join(f"{k}={v}" for k, v in chosen.items())
        variants.append((name, chosen, method_set, f"{where} ({name}{f'({text})' if text else ''})"))
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


def _attack_plan(entry: Any, where: str) -> AttackPlan:
    from mmbench.attacks.runner import MAX_LEVEL
    from mmbench.registry import ATTACKS

    if not isinstance(entry, dict):
        raise MMBenchError(f"{where} must be a mapping with noise, levels and seeds")
    unknown = set(entry) - set(ATTACK_KEYS)
    if unknown:
        raise MMBenchError(f"{where}: unknown key {short_repr(sorted(unknown, key=str)[0])}; valid: {', '.join(ATTACK_KEYS)}")
    noise = entry.get("noise")
    noise = [noise] if isinstance(noise, str) else noise
    protocol = rows_protocol = str(entry.get("protocol", "custom"))
    if noise is None and protocol != "custom":
        try:
            from mmbench.attacks.protocols import resolve_protocol
        except ImportError:
            raise MMBenchError(f"{where}: this mmbench has no attack protocols; give noise and levels") from None
        try:
            rows_protocol = resolve_protocol(protocol).name
        except MMBenchError as e:
            raise MMBenchError(f"{where}: {e}") from None
    elif not noise or not all(isinstance(n, str) for n in noise):
        raise MMBenchError(f"{where}: name the noise to apply (noise: [gaussian]) or a protocol (protocol: NAME)")
    for n in noise or []:
        if n not in ATTACKS:
            raise MMBenchError(f"{where}: {unknown_name_message('attack', n, ATTACKS.names())}")
    levels = entry.get("levels", [0.0, 0.5, 1.0, 2.0] if noise else None)
    if levels is not None and (not isinstance(levels, list) or not levels or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= MAX_LEVEL for v in levels)):
        raise MMBenchError(f"{where}: levels must be a list of numbers in [0, {MAX_LEVEL:g}], got {short_repr(levels)}")
    seeds = entry.get("seeds", 1)
    seeds = list(range(seeds)) if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0 else seeds
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds) \
            or len(set(seeds)) < len(seeds):
        raise MMBenchError(f"{where}: seeds must be a positive count or a list of distinct integers >= 0, "
                           f"got {short_repr(entry.get('seeds'))}")
    fraction = entry.get("fraction", 1.0 if noise else None)
    if fraction is not None and (not isinstance(fraction, (int, float)) or not 0 < fraction <= 1):
        raise MMBenchError(f"{where}: fraction must be in (0, 1], got {short_repr(fraction)}")
    modalities = entry.get("modalities")
    if isinstance(modalities, str):
        modalities = [modalities]
    return AttackPlan(list(noise) if noise else None, [float(v) for v in levels] if levels is not None else None,
                      seeds, modalities, float(fraction) if fraction is not None else None, protocol,
                      str(entry.get("protocol_version", "1")), rows_protocol)


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
        if not (prepared_path(name, data_root) / "meta.json").exists() and not prepare:
            if name in DATASETS and DATASETS.get(name).embedded:
                return None  # prepared when the sweep runs
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
    """Check every prepared array the grid uses against ``meta.json``'s SHA-256, once, before any run."""
    from mmbench.data.store import SPLITS, load_meta, verify_array

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
        for split in SPLITS:
            for name in [*(data["modalities"] or meta.modalities), "labels"]:
                verify_array(folder, f"{split}/{name}.npy", meta)


def _label(cfg: RunConfig) -> str:
    from mmbench.methods.base import method_label
    from mmbench.report import dataset_label

    data = dataset_label(cfg.data.dataset, cfg.data.modalities)
    return f"{data} {method_label(cfg.method.name, cfg.method.params)} s{cfg.seed}"


# ---------------------------------------------------------------------------------------
# Run state
# ---------------------------------------------------------------------------------------


def attack_done(folder: RunFolder, plans: list[dict[str, Any]]) -> bool:
    """Whether ``attack.csv`` has rows for every plan: each attack x level x attack seed (ad hoc), or
    the protocol's rows for every attack seed (and level, when the plan names them)."""
    if not plans:
        return True
    try:
        rows = folder.read_attack()
    except Exception:  # noqa: BLE001 - unreadable: attack again (the write is atomic)
        return False
    if rows.empty or not {"attack", "level", "attack_seed", "protocol"} <= set(rows.columns):
        return False
    have = {(str(r.protocol), str(r.attack), float(r.level), int(r.attack_seed)) for r in rows.itertuples()}
    for p in plans:
        label = p["rows_protocol"]
        if p["noise"]:
            wanted = {(label, a, float(lv), int(s)) for a, lv, s in itertools.product(p["noise"], p["levels"], p["seeds"])}
            if not wanted <= have:
                return False
        else:
            mine = [h for h in have if h[0] == label]
            if not {int(s) for s in p["seeds"]} <= {h[3] for h in mine}:
                return False
            if p["levels"] and not {float(v) for v in p["levels"]} <= {h[2] for h in mine}:
                return False
    return True


def run_state(run: Run) -> str:
    """``done``, ``attack`` (trained, attack rows missing), ``diverged``, ``failed``, ``running``,
    ``partial`` (stopped mid-way, resumable) or ``pending``."""
    folder = run.folder()
    status = folder.status
    if status == "complete":
        return "done" if attack_done(folder, run.attacks) else "attack"
    return {"interrupted": "partial"}.get(status, status)


# ---------------------------------------------------------------------------------------
# Executing one run (in whichever process the executor chose)
# ---------------------------------------------------------------------------------------


@dataclass
class Task:
    run: Run
    attempt: int = 1
    resume: bool = True
    threads: int | None = None  # torch CPU threads in the worker (None: leave as is)
    shared_fs: bool = True  # False: train in a local temporary folder and return the files
    checkpoint: bytes | None = None  # no shared fs: the driver's checkpoint to resume from


@dataclass
class Result:
    run_id: str
    status: str  # complete | skipped | failed | diverged
    trained: bool = False
    error: str | None = None  # the traceback is in the run's status.json
    epoch: int | None = None
    seconds: float = 0.0
    fatal: bool = False  # the results directory cannot be written: stop the sweep
    acc: float | None = None
    worker: str = ""
    files: dict[str, bytes] | None = None  # no shared fs: the run folder's files


def execute(task: Task) -> Result:
    """Train (or resume) and attack one run; never raises for a run's own failure."""
    import tempfile

    if task.threads:
        set_threads(task.threads)
    run = task.run
    start = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    cfg = run.cfg()
    tmp = None
    if not task.shared_fs:
        tmp = tempfile.mkdtemp(prefix="mmbench-run-")
        cfg.output.results_dir = tmp
        if task.checkpoint is not None:
            RunFolder.for_config(cfg).save_checkpoint(task.checkpoint)
    folder = RunFolder.for_config(cfg)
    try:
        result = _execute(task, cfg, folder)
    finally:
        if tmp is not None:
            if (folder.path / "config.yaml").exists():
                _relocate(folder, run.cfg())
            files = {p.name: p.read_bytes() for p in folder.path.iterdir()
                     if p.is_file() and not p.name.startswith(".")} if folder.path.exists() else {}
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if tmp is not None:
        result.files = files
    result.seconds, result.worker = time.perf_counter() - start, worker
    return result


def _relocate(folder: RunFolder, cfg: RunConfig) -> None:
    """A run trained in a temporary folder: its config.yaml names the driver's results directory."""
    folder.write_config(cfg)
    if folder.complete:
        summary = folder.read_summary()
        if "config.yaml" in summary.get("sha256", {}):
            summary["sha256"].update(folder.checksums(["config.yaml"]))
            folder.write_summary(summary)


def _execute(task: Task, cfg: RunConfig, folder: RunFolder) -> Result:
    from mmbench.run import train_run

    run = task.run
    try:
        with folder.lock():  # waits while another process (e.g. one left from a killed sweep) trains it
            trained = False
            if not folder.complete:
                folder, trained = train_run(cfg, resume=task.resume)
            if not attack_done(folder, run.attacks):
                _attack(folder, cfg, run.attacks)
            acc = folder.read_summary().get("test", {}).get("acc")
            return Result(run.run_id, "complete" if trained else "skipped", trained=trained, acc=acc)
    except TrainingDiverged as e:
        return Result(run.run_id, "diverged", error=str(e), epoch=e.epoch)
    except ResultsNotWritable as e:
        return Result(run.run_id, "failed", error=str(e), fatal=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - a failed run is data; the sweep goes on
        with contextlib.suppress(Exception):
            if not (folder.path / "config.yaml").exists():
                folder.write_config(cfg)
            folder.write_failure(e, attempt=task.attempt)
        return Result(run.run_id, "failed", error=f"{type(e).__name__}: {e}",
                      epoch=(folder.read_status() or {}).get("epoch"))


def _attack(folder: RunFolder, cfg: RunConfig, plans: list[dict[str, Any]]) -> None:
    from mmbench.attacks.runner import attack_run

    for p in plans:
        attack_run(folder, attacks=p["noise"], levels=p["levels"], attack_seeds=p["seeds"], modalities=p["modalities"],
                   fraction=p["fraction"], protocol=p["protocol"], protocol_version=p["protocol_version"],
                   device=cfg.device)


def _worker_init(threads: int) -> None:
    """Process-pool worker: a fixed share of the CPU threads; die with the sweep (kill -9 included)."""
    import signal

    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the sweep died before prctl took effect
        os._exit(1)
    set_threads(threads)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------


class Executor:
    """Submits tasks and hands back ``concurrent.futures.Future`` objects of :class:`Result`."""

    #: how many runs may be in flight at once
    capacity: int = 1

    def submit(self, task: Task) -> Future:
        raise NotImplementedError

    def prepare(self, task: Task) -> Task:
        """Executor-specific fields of a task (threads, resources) before it is submitted."""
        return task

    def check_resources(self, runs: list[Run]) -> list[str]:
        """Warnings about runs this executor may never place; an :class:`MMBenchError` when it never can."""
        return []

    def finish(self, task: Task, result: Result) -> None:
        """Driver-side work after a run returns (e.g. writing its files when there is no shared filesystem)."""

    def recover(self) -> None:
        """After a worker crashed: make the executor usable again."""

    def close(self, cancel: bool = False) -> None:
        pass


@EXECUTORS.register("inline")
class InlineExecutor(Executor):
    """runs one after another in this process (debugging, tiny grids)"""

    def __init__(self, max_parallel: int | None = None, **_: Any):
        self.capacity = 1

    def submit(self, task: Task) -> Future:
        future: Future = Future()
        try:
            future.set_result(execute(task))
        except Exception as e:  # noqa: BLE001
            future.set_exception(e)
        return future


@EXECUTORS.register("process")
class ProcessExecutor(Executor):
    """a local pool of --max-parallel worker processes; CPU threads split between them"""

    def __init__(self, max_parallel: int | None = None, **_: Any):
        self.capacity = max_parallel or cpu_count()
        self.threads = max(1, cpu_count() // self.capacity)
        self.pool = self._pool()

    def _pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.capacity, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(self.threads,))

    def prepare(self, task: Task) -> Task:
        task.threads = self.threads
        return task

    def submit(self, task: Task) -> Future:
        return self.pool.submit(execute, task)

    def recover(self) -> None:
        if getattr(self.pool, "_broken", True):  # once per broken pool, not once per lost future
            self.close(cancel=True)
            self.pool = self._pool()

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for p in list(getattr(self.pool, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    p.kill()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """one Ray task per run (num_cpus/num_gpus requests) on a local instance or --address auto|ray://HOST:PORT"""

    def __init__(self, max_parallel: int | None = None, address: str | None = None, shared_fs: bool = True,
                 **_: Any):
        try:
            import ray
        except ImportError:
            raise MMBenchError("the ray executor needs Ray: pip install 'mmbench[ray]'") from None
        self.ray = ray
        self.shared_fs = shared_fs
        self.max_parallel = max_parallel
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = max_parallel or cpu_count()
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise MMBenchError(f"cannot connect to Ray at {address or 'a new local instance'} ({e}); "
                                   "start a cluster with `ray start --head` or drop --address") from None
            self.started = True
        cpus = ray.cluster_resources().get("CPU", 1.0)
        self.capacity = max_parallel or max(1, int(cpus))
        self._remote = ray.remote(execute)
        self._refs: dict[str, Any] = {}  # run id -> ObjectRef in flight

    def check_resources(self, runs: list[Run]) -> list[str]:
        """A request that no alive node meets waits forever on a fixed cluster: an error on the instance this
        executor started, a warning on a cluster it joined (whose autoscaler may add such a node)."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        largest = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in ("CPU", "GPU")}
        unmet = [r for r in runs if r.num_cpus > largest["CPU"] or r.num_gpus > largest["GPU"]]
        if not unmet:
            return []
        r = unmet[0]
        message = (f"{len(unmet)} run(s) ask for more than any Ray node has (e.g. {r.label}: num_cpus={r.num_cpus:g}, "
                   f"num_gpus={r.num_gpus:g}; the largest node has {largest['CPU']:g} CPUs, {largest['GPU']:g} GPUs)")
        if self.started:
            hint = " or raise --max-parallel (the local instance's CPU count)" if self.max_parallel else ""
            raise MMBenchError(f"{message}; lower `resources` in the grid{hint}")
        return [f"{message}; they wait until the cluster adds such a node"]

    def prepare(self, task: Task) -> Task:
        task.threads = max(1, int(task.run.num_cpus))
        task.shared_fs = self.shared_fs
        if not self.shared_fs:
            ckpt = task.run.folder().path / "checkpoint.pt"
            task.checkpoint = ckpt.read_bytes() if task.resume and ckpt.exists() else None
        return task

    def submit(self, task: Task) -> Future:
        ref = self._remote.options(num_cpus=task.run.num_cpus, num_gpus=task.run.num_gpus, max_retries=0,
                                   name=f"mmbench:{task.run.run_id}").remote(task)
        self._refs[task.run.run_id] = ref
        return ref.future()

    def finish(self, task: Task, result: Result) -> None:
        self._refs.pop(task.run.run_id, None)
        if result.files is not None:
            write_returned_files(task.run.folder(), result.files)
            result.files = None

    def close(self, cancel: bool = False) -> None:
        if cancel:  # on a shared cluster the tasks would otherwise go on after the sweep stopped
            for ref in self._refs.values():
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self.started:
            self.ray.shutdown()


def write_returned_files(folder: RunFolder, files: dict[str, bytes]) -> None:
    """Write a run's files returned by a remote worker: atomically, ``summary.json`` last."""
    with folder.lock(timeout=30):
        if "summary.json" in files:
            folder.drop_progress()
        for name in sorted(files, key=lambda n: n == "summary.json"):
            atomic_write_bytes(folder.path / name, files[name])


def make_executor(name: str, max_parallel: int | None = None, address: str | None = None,
                  shared_fs: bool = True) -> Executor:
    check_options(name, max_parallel, address, shared_fs)
    return EXECUTORS.get(name)(max_parallel=max_parallel, address=address, shared_fs=shared_fs)


def check_options(executor: str, max_parallel: int | None = None, address: str | None = None,
                  shared_fs: bool = True, retries: int = 0) -> None:
    """Options that contradict each other, each with one clear message."""
    if executor not in EXECUTORS:
        raise MMBenchError(unknown_name_message("executor", executor, EXECUTORS.names()))
    if max_parallel is not None and max_parallel < 1:
        raise MMBenchError(f"--max-parallel must be at least 1, got {max_parallel}")
    if executor == "inline" and max_parallel not in (None, 1):
        raise MMBenchError("--executor inline runs one run at a time; use --executor process for --max-parallel")
    if address is not None and executor != "ray":
        raise MMBenchError(f"--address is for --executor ray, not {executor}")
    if not shared_fs and executor != "ray":
        raise MMBenchError(f"--no-shared-fs is for --executor ray; {executor} always writes the results directory")
    if retries < 0:
        raise MMBenchError(f"--retries must be 0 or more, got {retries}")


# ---------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    total: int
    skipped: int = 0  # complete before the sweep started (or diverged earlier)
    complete: int = 0
    failed: int = 0
    diverged: int = 0
    retried: int = 0
    seconds: float = 0.0
    results: list[Result] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.skipped + self.complete


def dry_run(grid: Grid) -> list[tuple[Run, str]]:
    """Every run with its state (see :func:`run_state`)."""
    return [(run, run_state(run)) for run in grid.runs]


def write_manifest(grid: Grid, results_dir: str | os.PathLike, options: dict[str, Any]) -> Path:
    """``<results>/sweeps/<grid>-<digest>.json``: the grid's run ids; also proves the directory is writable."""
    path = Path(results_dir) / "sweeps" / f"{Path(grid.path).stem}-{grid.digest}.json"
    atomic_write_text(path, json.dumps({"grid": str(Path(grid.path).resolve()), "created": time.time(),
                                        "options": options, "run_ids": [r.run_id for r in grid.runs]}, indent=2))
    return path


def run_sweep(grid: Grid, executor: Executor, retries: int = 0, resume: bool = True,
              on_event: Callable[[str, Run, Result | None, SweepReport], None] | None = None) -> SweepReport:
    """Execute every run that is not done; failures are recorded and retried up to ``retries`` times.

    ``on_event(kind, run, result, report)`` with kind ``start``, ``skip``, ``finish``, ``retry``.
    Raises :class:`ResultsNotWritable` (after stopping the executor) when results cannot be written.
    """
    report = SweepReport(len(grid.runs))
    started = time.perf_counter()
    queue: deque[Task] = deque()
    emit = on_event or (lambda *a: None)
    for run in grid.runs:
        state = run_state(run)
        if state == "done":
            report.skipped += 1
        elif state == "diverged":
            report.diverged += 1
        else:
            queue.append(Task(run, resume=resume))
            continue
        emit("skip", run, None, report)
    in_flight: dict[Future, Task] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < executor.capacity:
                task = executor.prepare(queue.popleft())
                emit("start", task.run, None, report)
                in_flight[executor.submit(task)] = task
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in finished:
                task = in_flight.pop(future)
                result = _result(future, task, executor)
                executor.finish(task, result)
                if result.fatal:
                    raise ResultsNotWritable(result.error)
                if result.status == "failed" and task.attempt <= retries:
                    report.retried += 1
                    emit("retry", task.run, result, report)
                    queue.append(Task(task.run, attempt=task.attempt + 1, resume=True))
                    continue
                report.results.append(result)
                if result.status in ("complete", "skipped"):
                    report.complete += 1
                elif result.status == "diverged":
                    report.diverged += 1
                else:
                    report.failed += 1
                emit("finish", task.run, result, report)
    except BaseException:
        executor.close(cancel=True)
        raise
    executor.close()
    report.seconds = time.perf_counter() - started
    return report


def _result(future: Future, task: Task, executor: Executor) -> Result:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - the worker itself died (killed, out of memory, crashed)
        error = f"worker crashed: {type(e).__name__}: {e}"
        folder = task.run.folder()
        with contextlib.suppress(Exception):
            if task.shared_fs and (folder.path / "config.yaml").exists() and not folder.complete:
                folder.write_failure(RuntimeError(error), attempt=task.attempt)
        executor.recover()
        return Result(task.run.run_id, "failed", error=error)


# ---------------------------------------------------------------------------------------
# Progress display
# ---------------------------------------------------------------------------------------


class SweepProgress:
    """A live rich bar (done / running / failed, ETA) on a terminal; one line per finished run otherwise."""

    def __init__(self, total_to_run: int, live: bool):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from mmbench.ui import console

        self.console = console
        self.running: set[str] = set()
        self.live = live
        self.progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                 transient=False, disable=not live)
        self.task = self.progress.add_task("sweep", total=total_to_run, status="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, kind: str, run: Run, result: Result | None, report: SweepReport) -> None:
        from rich.markup import escape

        if kind == "start":
            self.running.add(run.run_id)
        elif kind in ("finish", "retry"):
            self.running.discard(run.run_id)
        if kind == "finish":
            self.progress.advance(self.task)
            line = _result_line(run, result)
            self.progress.console.print(escape(line), soft_wrap=True, highlight=False)
        elif kind == "retry":
            self.progress.console.print(escape(f"retry  {run.label}: {result.error}"), soft_wrap=True, highlight=False)
        status = (f"done {report.complete}  running {len(self.running)}  failed {report.failed}  "
                  f"diverged {report.diverged}")
        self.progress.update(self.task, status=status)


def _result_line(run: Run, result: Result) -> str:
    if result.status in ("complete", "skipped"):
        acc = f" test acc {result.acc:.3f}" if result.acc is not None else ""
        verb = "done  " if result.status == "complete" else "skip  "
        return f"{verb} {run.label}{acc} ({result.seconds:.1f}s) {run.run_id}"
    first = (result.error or "").splitlines()[0] if result.error else ""
    return f"{result.status:6s} {run.label}: {first} {run.run_id}"


def main(grid_path: str, executor: str = "inline", max_parallel: int | None = None, address: str | None = None,
         shared_fs: bool = True, retries: int = 0, resume: bool = True, dry: bool = False,
         sets: Iterable[str] | None = None, data_dir: str | None = None, results_dir: str = "results",
         device: str | None = None, live: bool | None = None) -> SweepReport | None:
    """What ``mmbench sweep`` does: check options, expand, list (dry run) or execute with progress."""
    from rich.markup import escape

    from mmbench.ui import console

    check_options(executor, max_parallel, address, shared_fs, retries)
    grid = expand(grid_path, results_dir, data_dir, list(sets or []), device, prepare=not dry)
    states = dry_run(grid)
    counts: dict[str, int] = {}
    for _, state in states:
        counts[state] = counts.get(state, 0) + 1
    dup = f" ({grid.duplicates} duplicate grid points dropped)" if grid.duplicates else ""
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: _STATE_ORDER.index(kv[0])))
    pending = [r for r, s in states if s not in ("done", "diverged")]
    if dry:
        import pandas as pd

        from mmbench.ui import rich_table

        table = pd.DataFrame([{"run_id": r.run_id, "run": r.label, "state": s} for r, s in states])
        console.print(rich_table(table, f"{len(grid.runs)} runs in {grid_path}"))
        console.print(f"{len(grid.runs)} runs{dup}: {summary}; "
                      f"{len(pending)} to run", highlight=False)
        return None
    verify_datasets(grid)
    write_manifest(grid, results_dir, {"executor": executor, "max_parallel": max_parallel, "address": address,
                                       "shared_fs": shared_fs, "retries": retries})
    ex = make_executor(executor, max_parallel, address, shared_fs)
    try:
        warnings = ex.check_resources(pending)
    except MMBenchError:
        ex.close()
        raise
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    console.print(f"sweep {grid_path}: {len(grid.runs)} runs{dup}: {summary}; running {len(pending)} on {executor}"
                  f" ({ex.capacity} at a time)", highlight=False)
    live = sys.stderr.isatty() if live is None else live
    with SweepProgress(len(pending), live) as progress:
        report = run_sweep(grid, ex, retries, resume, on_event=progress)
    console.print(f"sweep finished in {report.seconds:.0f}s: {report.done} done ({report.complete} now, "
                  f"{report.skipped} before), {report.failed} failed, {report.diverged} diverged"
                  + (f", {report.retried} retries" if report.retried else "")
                  + (f"; failures are recorded in each run's status.json under {results_dir}/runs"
                     if report.failed or report.diverged else ""), highlight=False)
    return report


_STATE_ORDER = ["done", "attack", "partial", "running", "pending", "failed", "diverged"]
