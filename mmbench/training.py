"""The Trainer owns the loop: optimizer, schedule, checkpoint selection on ``val``, logging.

Methods plug in through hooks (:mod:`mmbench.methods.base`). Data lives in memory as
tensors on the training device; a batch is an index into them, so the hot loop has no
per-sample Python. Same config and seed -> identical ``metrics.csv``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import platform
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmbench.config import OptimConfig, RunConfig
from mmbench.config import data_dir as default_data_dir
from mmbench.data.store import load_meta, load_split
from mmbench.data.types import MultimodalData, stratified_subset
from mmbench.diagnostics import probe_all, shapley
from mmbench.errors import MMBenchError, TrainingDiverged
from mmbench.evaluation import evaluate
from mmbench.memory import check_model_fits
from mmbench.methods.base import Method, TrainState, build_method, method_params_dict, run_label
from mmbench.methods.modulation import score_ratios
from mmbench.metrics import true_class_prob
from mmbench.models.multimodal import ModelOutput, ModelSpec, MultimodalModel
from mmbench.registry import unknown_name_message
from mmbench.results import RunFolder


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MMBenchError("device 'cuda' was asked for but CUDA is not available; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise MMBenchError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_cpu_tuning: dict[str, Any] | None = None


def tune_cpu(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Keep large tensor buffers inside the process while training on CPU (glibc only; idempotent;
    nothing for other devices).

    glibc's ``malloc`` serves every block above its mmap threshold (32 MiB at most) with a fresh
    ``mmap`` and unmaps it on ``free``. A ResNet-18 step at 224x224, batch 64, allocates and frees
    gigabytes of such activation and gradient buffers, so every step the kernel maps them again and
    zero-fills them page by page: about 1.6 M minor page faults and 3 s of kernel CPU time per step,
    a fifth of the process's CPU time (``benchmarks/train_throughput.py``; the official OGM-GE code
    loses 50-75 s of a 133-s epoch this way). ``mallopt(M_MMAP_MAX, 0)`` serves large blocks from
    the heap and ``mallopt(M_TRIM_THRESHOLD, -1)`` keeps freed heap memory for the next step, as
    ``MALLOC_MMAP_MAX_=0`` and a huge ``MALLOC_TRIM_THRESHOLD_`` would at process start. Numerics are
    unchanged (same losses bit for bit); the cost is that the process keeps its peak heap (and
    some fragmentation on top of it: peak RSS about 1.2x, 6.1 GB instead of 5.0 GB there) until it exits.

    Process-wide. Set ``MMBENCH_CPU_TUNING=0`` to leave the allocator alone. Returns the settings
    applied (empty when none).
    """
    global _cpu_tuning
    if torch.device(device).type != "cpu":
        return {}
    if _cpu_tuning is not None:
        return _cpu_tuning
    _cpu_tuning = {}
    if os.environ.get("MMBENCH_CPU_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return _cpu_tuning
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _cpu_tuning
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return _cpu_tuning
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1):
        _cpu_tuning = {"malloc": "M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1"}
    return _cpu_tuning


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise MMBenchError(unknown_name_message("optimizer (optim.optimizer)", cfg.optimizer, ["sgd", "adam", "adamw"]))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig):
    if cfg.schedule == "none":
        return None
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(cfg.epochs, 1))
    raise MMBenchError(unknown_name_message("schedule (optim.schedule)", cfg.schedule, ["none", "step", "cosine"]))


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_acc: float
    best_state: dict[str, torch.Tensor]
    epoch_seconds: list[float] = field(default_factory=list)
    true_class_prob: list[torch.Tensor] = field(default_factory=list)  # per epoch [N_train, M], float16


class Trainer:
    """Trains ``model`` with ``method``'s hooks and keeps the state with the best validation accuracy."""

    def __init__(self, method: Method, model: torch.nn.Module, optim: OptimConfig, device: torch.device,
                 seed: int = 0, progress=None, checkpoint=None):
        tune_cpu(device)
        self.method, self.model, self.cfg, self.device = method, model.to(device), optim, device
        self.optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], optim)
        self.scheduler = build_scheduler(self.optimizer, optim)
        self.seed = seed
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        self.state = TrainState(num_epochs=optim.epochs, model=self.model, batch_size=optim.batch_size,
                                generator=torch.Generator(device=device).manual_seed(seed + 1),
                                fit_copy=self.fit_copy)
        # callable(epoch, step, total_steps, row) after each epoch, or None; an optional ``batch(epoch, step,
        # total_steps, running)`` attribute is called after each batch (see mmbench.ui.TrainingStatus)
        self.progress = progress
        # callable(trainer, epoch, (best_epoch, best_acc, best_state), seconds, probs) after each epoch
        self.checkpoint = checkpoint

    def fit(self, train: MultimodalData, val: MultimodalData, resume: dict | None = None) -> FitResult:
        """Train every epoch; ``resume``: a checkpoint (:mod:`mmbench.checkpoint`) to continue after its epoch."""
        train, val = train.to(self.device), val.to(self.device)
        fraction = self.method.holdout_fraction()
        if fraction > 0:
            held = stratified_subset(train.labels, round(fraction * len(train)), torch.Generator().manual_seed(self.seed))
            kept = torch.ones(len(train), dtype=torch.bool, device=self.device)
            kept[held] = False
            train, self.state.holdout = train.index(kept), train.index(held)
        self.state.train, self.state.val = train, val
        history, seconds, probs = self.state.history, [], []
        best_epoch, best_acc, best_state = -1, -math.inf, None
        steps_per_epoch = math.ceil(len(train) / self.cfg.batch_size)
        first = 0
        if resume is not None:
            from mmbench.checkpoint import restore_trainer

            first, (best_epoch, best_acc, best_state) = restore_trainer(self, resume, seconds, probs)
        for epoch in range(first, self.cfg.epochs):
            start = time.perf_counter()
            self.state.epoch, self.state.epoch_logs = epoch, {}
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self._train_epoch(train, steps_per_epoch, epoch * steps_per_epoch,
                                         steps_per_epoch * self.cfg.epochs))
            row.update(imbalance_ratios(self.state.true_class_prob, train.modalities))
            probs.append(self.state.true_class_prob.half().cpu())
            self.method.on_epoch_end(self.state)
            row.update(self.state.epoch_logs)
            row.update({f"val_{k}": v for k, v in evaluate(self.model, self.method, val, self.cfg.batch_size * 4).items()})
            if self.scheduler is not None:
                self.scheduler.step()
            history.append(row)
            seconds.append(time.perf_counter() - start)
            if row["val_acc"] > best_acc:
                best_epoch, best_acc = epoch, row["val_acc"]
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.checkpoint is not None:
                self.checkpoint(self, epoch, (best_epoch, best_acc, best_state), seconds, probs)
            if self.progress:
                self.progress(epoch, steps_per_epoch * (epoch + 1), steps_per_epoch * self.cfg.epochs, row)
        if best_state is None:
            raise MMBenchError("optim.epochs must be at least 1")
        self.model.load_state_dict(best_state)
        return FitResult(history, best_epoch, best_acc, best_state, seconds, probs)

    def fit_copy(self, model: torch.nn.Module, loss_fn, data: MultimodalData, epochs: int) -> None:
        """Train ``model`` (a method's own copy, not the run's model) for ``epochs`` on ``data``,
        minimising ``loss_fn(model, batch)``: a fresh optimizer with the run's settings (base learning
        rate, no schedule), the run's batch size and gradient clipping; shuffled by a generator drawn
        from ``state.generator``, so a resumed run repeats it."""
        optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], self.cfg)
        gen = self.state.generator
        shuffle = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen, device=gen.device)))
        model.train()
        for _ in range(epochs):
            for batch in data.batches(self.cfg.batch_size, shuffle=True, generator=shuffle):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model, batch).backward()
                if self.cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
                optimizer.step()

    def _train_epoch(self, train: MultimodalData, steps_per_epoch: int, done: int = 0,
                     total: int = 0) -> dict[str, float]:
        model, method, state = self.model, self.method, self.state
        on_batch = getattr(self.progress, "batch", None)
        model.train()
        method.on_epoch_start(state)
        if state.reset_optimizer:  # a fresh optimizer: momentum and moment estimates start again
            self.optimizer.state.clear()
            state.reset_optimizer = False
        substeps = method.steps_per_batch(model)
        sums: dict[str, float] = defaultdict(float)
        correct = {"acc": torch.zeros((), device=self.device)}
        columns = {m: j for j, m in enumerate(train.modalities)}
        true_prob = torch.full((len(train), len(columns)), float("nan"), device=self.device)
        seen = 0

        def running() -> dict[str, float]:
            return {"train_loss": sums["loss"] / seen, **{f"train_{k}": float(v) / seen for k, v in correct.items()}}

        for i, batch in enumerate(train.batches(self.cfg.batch_size, shuffle=True, generator=self.shuffle_generator)):
            for state.substep in range(substeps):
                value, out, logs = self.train_step(batch)
                sums["loss"] += value * len(batch) / substeps
                for k, v in logs.items():
                    sums[f"log:{k}"] += float(v)
                if state.substep == 0:  # the batch's metrics: from the pass before its first update
                    first = out
            correct["acc"] += (first.logits.argmax(1) == batch.labels).sum()
            for m, z in first.unimodal_logits.items():
                key = f"acc_{m}"
                correct[key] = correct.get(key, 0) + (z.argmax(1) == batch.labels).sum()
                true_prob[batch.ids, columns[m]] = true_class_prob(z.detach().float(), batch.labels)
            seen += len(batch)
            if on_batch is not None:
                on_batch(state.epoch, done + i + 1, total, running)
        state.substep = 0
        state.true_class_prob = true_prob
        n = len(train)
        row = {"train_loss": sums["loss"] / n}
        row.update({f"train_{k}": v.item() / n for k, v in correct.items()})
        row.update({k[4:]: v / (steps_per_epoch * substeps) for k, v in sums.items() if k.startswith("log:")})
        return row

    def train_step(self, batch: MultimodalData) -> tuple[float, ModelOutput, dict[str, float]]:
        """One optimisation step through the method's hooks: ``(loss value, output, logs)``."""
        model, method, state = self.model, self.method, self.state
        out = method.forward(model, batch, state)
        loss, logs = method.loss(model, batch, out, state)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(state.epoch, state.step, value)
        if not method.trains_unimodal_heads and hasattr(model, "monitor_loss"):
            loss = loss + model.monitor_loss(out, batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        logs = {**logs, **(method.after_backward(model, batch, out, state) or {})}
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        state.step += 1
        return value, out, logs


def imbalance_ratios(true_prob: torch.Tensor, modalities: list[str]) -> dict[str, float]:
    """OGM-GE's ratio over a whole epoch: ``sum_i p_im / mean_{j != m} sum_i p_ij`` (true-class
    probabilities of the unimodal heads); empty when fewer than two modalities have heads."""
    sums = torch.nansum(true_prob, 0)
    seen = [j for j in range(len(modalities)) if not torch.isnan(true_prob[:, j]).all()]
    if len(seen) < 2:
        return {}
    ratios = score_ratios({modalities[j]: sums[j] for j in seen})
    return {f"imbalance_ratio_{m}": rho for m, rho in ratios.items()}


def load_run_data(cfg: RunConfig) -> dict[str, MultimodalData]:
    return {s: load_split(cfg.data.dataset, s, cfg.output.data_dir, cfg.data.modalities)
            for s in ("train", "val", "test")}


def model_spec(cfg: RunConfig, data: MultimodalData) -> ModelSpec:
    unknown = [m for m in cfg.model.encoders if m not in data.meta.modalities]
    if unknown:
        raise MMBenchError(unknown_name_message("modality in model.encoders", unknown[0], data.modalities))
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
                 ) -> tuple[RunConfig, Method, torch.nn.Module, MultimodalData]:
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
    from mmbench.checkpoint import NotCheckpointable, to_bytes, trainer_state

    off: list[str] = []

    def save(trainer: Trainer, epoch: int, best: tuple, seconds: list, probs: list) -> None:
        if not off:
            try:
                data = to_bytes({**trainer_state(trainer, epoch, best, seconds, probs), "run_id": folder.run_id})
            except NotCheckpointable as e:
                off.append(f"{e}; override Method.state_dict/load_state_dict to save it")
                logging.getLogger("mmbench").warning("run %s trains without checkpoints: %s", folder.run_id, off[0])
            else:
                folder.save_checkpoint(data)
        folder.write_status("running", epoch=epoch + 1, epochs=epochs, **({"checkpoints": off[0]} if off else {}))

    return save


def load_checkpoint(folder: RunFolder) -> dict | None:
    """The run's verified checkpoint, or None when there is none (a damaged one is an error)."""
    from mmbench.checkpoint import from_file

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
    run = RunFolder.for_config(cfg)
    folder = run
    if folder.complete and not force:
        return folder, False
    data = load_run_data(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    spec = model_spec(cfg, data["train"])
    method.check_spec(spec)
    m = cfg.model
    check_model_fits(lambda: method.build_model(spec), device, f"lower model.hidden_dim (now {m.hidden_dim}), "
                     f"model.feature_dim ({m.feature_dim}) or model.depth ({m.depth})")
    model = method.build_model(spec)
    guard.enter_context(run.lock(timeout=2))
    if run.complete and not force:  # finished by another process meanwhile
        return run, False
    if run.complete:  # trained again: the old run stays whole until the new one is (commit_next)
        folder = run.next()
    guard.folder = folder
    folder.write_config(cfg)
    folder.write_env(str(device), cpu_tuning=tune_cpu(device))
    ckpt = load_checkpoint(folder) if resume and not force else None
    folder.write_status("running", epoch=ckpt["epoch"] + 1 if ckpt else 0, epochs=cfg.optim.epochs)
    trainer = Trainer(method, model, cfg.optim, device, cfg.seed, progress, _checkpointer(folder, cfg.optim.epochs))
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
    if isinstance(trainer.model, MultimodalModel) and len(trainer.model.modalities) > 1:
        _phase(progress, f"Shapley values ({2 ** len(trainer.model.modalities)} masked evaluations)")
        test.update(shapley(trainer.model, test_data, eval_batch))
    probes = {}
    if cfg.output.probe and hasattr(trainer.model, "encoders"):
        _phase(progress, "linear probes")
        probes = probe_all(trainer.model, {s: d.to(device) for s, d in data.items()}, eval_batch, cfg.seed)
        test.update({f"probe_{m}": p["test"] for m, p in probes.items()})
    summary = {
        "run_id": folder.run_id, "status": "complete", "dataset": cfg.data.dataset,
        "modalities": list(getattr(trainer.model, "modalities", data["train"].modalities)), "method": cfg.method.name, "method_params": cfg.method.params,
        "reconstructed": list(method.reconstructed), "label": run_label(cfg),
        "seed": cfg.seed, "best_epoch": result.best_epoch, "val_acc": result.best_val_acc,
        "test": test, "test_samples": len(data["test"]),
        "num_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.mean(result.epoch_seconds)), "device": str(device),
        "probe": probes,
        "resumed_from_epoch": ckpt["epoch"] + 1 if ckpt else None,
        "sha256": folder.checksums(["config.yaml", "metrics.csv", "model.pt", "gap.npz", "artifacts.npz"]),
    }
    folder.write_summary(summary)
    folder.drop_progress()
    run.commit_next()
    return run, True
