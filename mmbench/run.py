"""The run pipeline: a resolved config -> a trained run folder, and a run folder -> a loaded model.

:func:`train_run` trains one run (through :class:`mmbench.training.Trainer`) and writes its folder
(:mod:`mmbench.results`); :func:`load_trained` rebuilds a finished run's model with its best weights
for attacks and probes; :func:`probe_run` adds linear probes to a finished run.
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch

from mmbench.checkpoint import NotCheckpointable, from_file, to_bytes
from mmbench.config import RunConfig
from mmbench.config import data_dir as default_data_dir
from mmbench.data.store import load_meta, load_split
from mmbench.data.types import MultimodalData
from mmbench.errors import MMBenchError
from mmbench.evaluation import evaluate, probe_all, shapley
from mmbench.loggers import Trackers, check_installed
from mmbench.memory import check_model_fits
from mmbench.methods.base import Method, build_method, method_params_dict, run_label
from mmbench.models.compiled import check_compile, compiled_encoders
from mmbench.models.multimodal import ModelSpec, MultimodalModel
from mmbench.models.pretrained import digests as pretrained_digests
from mmbench.registry import unknown_name_message
from mmbench.results import RunFolder
from mmbench.runtime import deterministic_algorithms, resolve_device, seed_everything, tune_cpu
from mmbench.training import Trainer


def load_run_data(cfg: RunConfig) -> dict[str, MultimodalData]:
    return {s: load_split(cfg.data.dataset, s, cfg.output.data_dir, cfg.data.modalities, mmap=cfg.data.load == "mmap")
            for s in ("train", "val", "test")}


def model_spec(cfg: RunConfig, data: MultimodalData) -> ModelSpec:
    for key in ("encoders", "pretrained", "freeze"):
        unknown = [m for m in getattr(cfg.model, key) if m not in data.meta.modalities]
        if unknown:
            raise MMBenchError(unknown_name_message(f"modality in model.{key}", unknown[0], data.modalities))
    return ModelSpec(data.meta.modalities, data.meta.num_classes, cfg.model)


def complete_config(cfg: RunConfig, prepared: str | None = None) -> tuple[RunConfig, Method]:
    """Fill the method's parameters with its defaults and ``data.prepared`` with the digest of the
    prepared data (``prepared``, else read from its meta.json), so the config (and run id) is fully
    resolved: data prepared again differently gives other run ids."""
    method = build_method(cfg.method)
    cfg.method.params = method_params_dict(method)
    cfg.data.prepared = prepared if prepared is not None else load_meta(cfg.data.dataset, cfg.output.data_dir).digest
    return cfg, method


def load_trained(folder: RunFolder, device: str = "cpu", data_dir: str | None = None
                 ) -> tuple[RunConfig, Method, MultimodalModel, MultimodalData]:
    """Rebuild a finished run's method and model with its best weights, and load its test split
    (from ``data_dir``, else where the run was trained from)."""
    if not folder.complete:
        raise MMBenchError(f"run {folder.run_id} is not complete (no summary.json); train it first")
    folder.check_record()
    cfg = folder.read_config()
    method = build_method(cfg.method)
    test = load_split(cfg.data.dataset, "test", data_dir or cfg.output.data_dir, cfg.data.modalities)
    if cfg.data.prepared != test.meta.digest:
        raise MMBenchError(f"run {folder.run_id} was trained on other data than the {cfg.data.dataset!r} prepared "
                           f"in {data_dir or cfg.output.data_dir} now (prepared again since?); train it again on "
                           "this data, or point --data-dir at the data it was trained on")
    dev = resolve_device(device)
    tune_cpu(dev)
    model = method.build_model(model_spec(cfg, test))
    model.load_state_dict(folder.load_state_dict())
    return cfg, method, model.to(dev).eval(), test.to(dev)


def probe_run(folder: RunFolder, device: str = "cpu", data_dir: str | None = None) -> dict[str, dict[str, float]]:
    """Linear-probe a finished run's encoders and record the results in its ``summary.json``."""
    cfg, _, model, _ = load_trained(folder, device, data_dir)
    cfg.output.data_dir = data_dir or cfg.output.data_dir
    dev = resolve_device(device)
    probes = probe_all(model, {s: d.to(dev) for s, d in load_run_data(cfg).items()}, cfg.optim.batch_size * 4,
                       cfg.seed)
    summary = folder.read_summary()
    summary["probe"] = probes
    summary["test"].update({f"probe_{m}": p["test"] for m, p in probes.items()})
    folder.write_summary(summary)
    return probes


class _RunGuard(contextlib.ExitStack):
    folder: RunFolder | None = None  # set once this process holds the run and has started writing it


def train_run(cfg: RunConfig, force: bool = False, progress=None, resume: bool = False) -> tuple[RunFolder, bool]:
    """Train one run and write its folder; returns ``(folder, trained)`` (False: already complete).

    ``resume``: continue from the run's last epoch checkpoint if there is one (same final
    result as an uninterrupted run). While training, the run folder is locked and
    ``status.json`` says ``running``; an error leaves ``failed`` / ``diverged`` there with the
    message and traceback. On success ``summary.json`` is written last and the checkpoint removed.
    """
    with _RunGuard() as guard:
        try:
            return _train_run(cfg, force, progress, resume, guard)
        except BaseException as e:
            if guard.folder is not None:
                guard.folder.write_failure(e)
            raise


def _checkpointer(folder: RunFolder, epochs: int):
    """The Trainer's per-epoch callback: write ``checkpoint.pt``, then ``status.json`` (running, epoch)."""
    off: list[str] = []

    def save(trainer: Trainer, epoch: int) -> None:
        if not off:
            try:
                data = to_bytes({**trainer.state_dict(), "run_id": folder.run_id})
            except NotCheckpointable as e:
                off.append(f"{e}; override Method.state_dict/load_state_dict to save it")
                logging.getLogger("mmbench").warning("run %s trains without checkpoints: %s", folder.run_id, off[0])
            else:
                folder.save_checkpoint(data)
        folder.write_status("running", epoch=epoch + 1, epochs=epochs, **({"checkpoints": off[0]} if off else {}))

    return save


def load_checkpoint(folder: RunFolder) -> dict | None:
    """The run's verified checkpoint, or None when there is none (a damaged one is an error)."""
    path = folder.path / "checkpoint.pt"
    if not path.exists():
        return None
    ckpt = from_file(path)
    if ckpt.get("run_id") != folder.run_id:
        raise MMBenchError(f"checkpoint {path} belongs to run {ckpt.get('run_id')!r}, not {folder.run_id!r}; "
                           "delete it to train the run from the start")
    return ckpt


def _phase(progress, label: str) -> None:
    """Tell a live display (one with a ``phase`` method) what the run does after training."""
    if hasattr(progress, "phase"):
        progress.phase(label)


def _train_run(cfg: RunConfig, force: bool, progress, resume: bool, guard: _RunGuard) -> tuple[RunFolder, bool]:
    cfg.output.data_dir = str(default_data_dir(cfg.output.data_dir).resolve())  # later attacks find it from anywhere
    cfg, method = complete_config(cfg)
    check_installed(cfg.output.loggers)
    run = RunFolder.for_config(cfg)
    folder = run
    if folder.complete and not force:
        return folder, False
    device = resolve_device(cfg.device)
    check_compile(cfg.model, device)
    cpu_tuning = tune_cpu(device)  # before loading: threads that allocate earlier keep a malloc arena of their own
    data = load_run_data(cfg)
    seed_everything(cfg.seed)
    spec = model_spec(cfg, data["train"])
    method.check_spec(spec)
    m = cfg.model
    check_model_fits(lambda: method.build_model(spec), device, f"lower model.hidden_dim (now {m.hidden_dim}), "
                     f"model.feature_dim ({m.feature_dim}) or model.depth ({m.depth})")
    model = method.build_model(spec)
    if not isinstance(model, MultimodalModel):
        raise MMBenchError(f"method {cfg.method.name!r}: build_model must return a MultimodalModel (or a subclass), "
                           f"got {type(model).__name__}")
    guard.enter_context(run.lock(timeout=2))
    if run.complete and not force:  # finished by another process meanwhile
        return run, False
    if run.complete:  # trained again: the old run stays whole until the new one is (commit_next)
        folder = run.next()
    guard.folder = folder
    guard.enter_context(deterministic_algorithms(cfg.deterministic, device))
    if cfg.model.compile:
        guard.enter_context(compiled_encoders(model, cfg.model.activation_memory_budget))
    folder.write_config(cfg)
    folder.write_env(str(device), cpu_tuning=cpu_tuning)
    ckpt = load_checkpoint(folder) if resume and not force else None
    folder.write_status("running", epoch=ckpt["epoch"] + 1 if ckpt else 0, epochs=cfg.optim.epochs)
    trackers = Trackers(cfg.output.loggers, folder.run_id, folder.path, cfg.to_dict(), resumed=ckpt is not None)
    guard.push(lambda failed, *_: trackers.close(ok=failed is None))
    trainer = Trainer(method, model, cfg.optim, device, cfg.seed, progress, _checkpointer(folder, cfg.optim.epochs),
                      augment=cfg.data.augment, tracker=trackers)
    start = time.perf_counter()
    result = trainer.fit(data["train"], data["val"], resume=ckpt)
    train_seconds = time.perf_counter() - start + (sum(ckpt["seconds"]) if ckpt else 0.0)
    folder.write_metrics(result.history)
    if cfg.output.save_model:
        folder.save_model({k: v.cpu() for k, v in result.best_state.items()})
    folder.save_arrays("gap.npz", true_class_prob=torch.stack(result.true_class_prob).numpy(),
                       modalities=np.array(data["train"].modalities), labels=trainer.state.train.labels.cpu().numpy())
    if trainer.state.artifacts:
        folder.save_arrays("artifacts.npz", **{k: np.asarray(v) for k, v in trainer.state.artifacts.items()})
    test_data = data["test"].to(device)
    eval_batch = cfg.optim.batch_size * 4
    _phase(progress, "evaluating on test")
    test = evaluate(trainer.model, method, test_data, eval_batch, masking=True)
    if len(trainer.model.modalities) > 1:
        _phase(progress, f"Shapley values ({2 ** len(trainer.model.modalities)} masked evaluations)")
        test.update(shapley(trainer.model, test_data, eval_batch))
    probes = {}
    if cfg.output.probe:
        _phase(progress, "linear probes")
        probes = probe_all(trainer.model, {s: d.to(device) for s, d in data.items()}, eval_batch, cfg.seed)
        test.update({f"probe_{m}": p["test"] for m, p in probes.items()})
    summary = {
        "run_id": folder.run_id, "status": "complete", "dataset": cfg.data.dataset,
        "modalities": list(trainer.model.modalities), "method": cfg.method.name, "method_params": cfg.method.params,
        "reconstructed": list(method.reconstructed), "label": run_label(cfg),
        "seed": cfg.seed, "best_epoch": result.best_epoch, "val_acc": result.best_val_acc,
        "test": test, "test_samples": len(data["test"]),
        "num_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.mean(result.epoch_seconds)), "device": str(device),
        "probe": probes,
        "pretrained_sha256": pretrained_digests(spec),  # the weight files model.pretrained loaded, by modality
        "resumed_from_epoch": ckpt["epoch"] + 1 if ckpt else None,
        "sha256": folder.checksums(["config.yaml", "metrics.csv", "model.pt", "gap.npz", "artifacts.npz"]),
    }
    folder.write_summary(summary)
    trackers.log_summary(summary)
    trackers.close()
    folder.drop_progress()
    run.commit_next()
    return run, True
