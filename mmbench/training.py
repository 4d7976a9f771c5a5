"""The Trainer owns the loop: optimizer, schedule, checkpoint selection on ``val``, logging.

Methods plug in through hooks (:mod:`mmbench.methods.base`). Data lives in memory as
tensors on the training device; a batch is an index into them, so the hot loop has no
per-sample Python. Same config and seed -> identical ``metrics.csv``. :meth:`Trainer.state_dict`
holds everything needed to continue after a finished epoch exactly as if never stopped
(:mod:`mmbench.checkpoint` stores it safely).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from mmbench.checkpoint import FORMAT, decode, encode, rng_state, set_rng_state
from mmbench.config import OptimConfig
from mmbench.data.augment import augment_batch
from mmbench.data.types import MultimodalData, stratified_subset
from mmbench.errors import MMBenchError, TrainingDiverged
from mmbench.evaluation import evaluate
from mmbench.measures import imbalance_ratios, true_class_prob
from mmbench.methods.base import Method, TrainState
from mmbench.models.multimodal import ModelOutput, MultimodalModel
from mmbench.registry import unknown_name_message
from mmbench.runtime import tune_cpu

#: TrainState attributes that are rebuilt rather than saved (data, model, per-epoch scratch)
_STATE_SKIP = {"model", "train", "val", "holdout", "fit_copy", "generator", "history", "epoch_logs", "num_epochs",
               "batch_size", "epoch"}


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise MMBenchError(unknown_name_message("optimizer (optim.optimizer)", cfg.optimizer, ["sgd", "adam", "adamw"]))


#: autocast dtype of each ``optim.amp`` setting (None: full precision)
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_scaler(device: torch.device) -> torch.amp.GradScaler:
    """The gradient scaler of an fp16 run (fp16 gradients underflow without one; bf16 needs none)."""
    return torch.amp.GradScaler(device.type)


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

    def __init__(self, method: Method, model: MultimodalModel, optim: OptimConfig, device: torch.device,
                 seed: int = 0, progress=None, checkpoint=None, augment: str = "none", tracker=None):
        tune_cpu(device)
        self.method, self.model, self.cfg, self.device = method, model.to(device), optim, device
        self.optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], optim)
        self.scheduler = build_scheduler(self.optimizer, optim)
        self.amp_dtype = AMP_DTYPES[optim.amp]
        self.scaler = build_scaler(device) if optim.amp == "fp16" else None
        self.seed = seed
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        self.augment = augment  # applied to training batches only (mmbench.data.augment)
        self.augment_generator = torch.Generator().manual_seed(seed + 2)
        self.state = TrainState(num_epochs=optim.epochs, model=self.model, batch_size=optim.batch_size,
                                generator=torch.Generator(device=device).manual_seed(seed + 1),
                                fit_copy=self.fit_copy)
        # callable(epoch, step, total_steps, row) after each epoch, or None; an optional ``batch(epoch, step,
        # total_steps, running)`` attribute is called after each batch (see mmbench.ui.TrainingStatus)
        self.progress = progress
        # callable(trainer, epoch) after each epoch (e.g. saving ``trainer.state_dict()``)
        self.checkpoint = checkpoint
        # an object with ``log_epoch(epoch, row)`` called with each finished epoch's row (mmbench.loggers), or None
        self.tracker = tracker
        self.best: tuple[int, float, dict[str, torch.Tensor] | None] = (-1, -math.inf, None)  # epoch, val acc, state
        self.epoch_seconds: list[float] = []
        self.true_class_prob: list[torch.Tensor] = []  # per finished epoch [N_train, M], float16

    def fit(self, train: MultimodalData, val: MultimodalData, resume: dict | None = None) -> FitResult:
        """Train every epoch; ``resume``: a :meth:`state_dict` to continue after its epoch."""
        train, val = train.to(self.device), val.to(self.device)
        fraction = self.method.holdout_fraction()
        if fraction > 0:
            held = stratified_subset(train.labels, round(fraction * len(train)), torch.Generator().manual_seed(self.seed))
            kept = torch.ones(len(train), dtype=torch.bool, device=self.device)
            kept[held] = False
            train, self.state.holdout = train.index(kept), train.index(held)
        self.state.train, self.state.val = train, val
        history, seconds, probs = self.state.history, self.epoch_seconds, self.true_class_prob
        steps_per_epoch = math.ceil(len(train) / self.cfg.batch_size)
        first = 0
        if resume is not None:
            first = self.load_state_dict(resume)
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
            if self.tracker is not None:
                self.tracker.log_epoch(epoch, row)
            seconds.append(time.perf_counter() - start)
            if row["val_acc"] > self.best[1]:
                self.best = (epoch, row["val_acc"], {k: v.detach().clone() for k, v in self.model.state_dict().items()})
            if self.checkpoint is not None:
                self.checkpoint(self, epoch)
            if self.progress:
                self.progress(epoch, steps_per_epoch * (epoch + 1), steps_per_epoch * self.cfg.epochs, row)
        best_epoch, best_acc, best_state = self.best
        if best_state is None:
            raise MMBenchError("optim.epochs must be at least 1")
        self.model.load_state_dict(best_state)
        return FitResult(history, best_epoch, best_acc, best_state, seconds, probs)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the last finished epoch exactly as if never stopped:
        model, optimizer, scheduler, every RNG, the train state, history, best state so far and the
        method's state, as plain data. Raises :class:`mmbench.checkpoint.NotCheckpointable` when the
        method or the train state holds something that cannot be stored as plain data."""
        state = self.state
        best_epoch, best_acc, best_state = self.best
        return {
            "format": FORMAT, "epoch": state.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "shuffle_generator": self.shuffle_generator.get_state(),
            "augment_generator": self.augment_generator.get_state(),
            "method_generator": state.generator.get_state(),
            "train_state": {k: encode(v, f"TrainState.{k}") for k, v in vars(state).items() if k not in _STATE_SKIP},
            "history": encode(state.history, "history"),
            "best": {"epoch": best_epoch, "acc": best_acc, "state": best_state},
            "seconds": list(self.epoch_seconds), "probs": list(self.true_class_prob),
            "method": self.method.state_dict(),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> int:
        """Restore a :meth:`state_dict`; returns the first epoch still to train."""
        device = self.device
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):  # absent from checkpoints written before amp existed
            self.scaler.load_state_dict(ckpt["scaler"])
        self.shuffle_generator.set_state(ckpt["shuffle_generator"])
        if "augment_generator" in ckpt:  # absent from checkpoints written before augmentation existed
            self.augment_generator.set_state(ckpt["augment_generator"])
        self.state.generator.set_state(ckpt["method_generator"])
        for k, v in ckpt["train_state"].items():
            value = decode(v, getattr(self.state, k, None))
            setattr(self.state, k, value.to(device) if isinstance(value, torch.Tensor) else value)
        self.state.history[:] = decode(ckpt["history"])
        self.method.load_state_dict(ckpt["method"])
        self.epoch_seconds[:] = ckpt["seconds"]
        self.true_class_prob[:] = ckpt["probs"]
        best = ckpt["best"]
        best_state = {k: v.to(device) for k, v in best["state"].items()} if best["state"] is not None else None
        self.best = (best["epoch"], best["acc"], best_state)
        set_rng_state(ckpt["rng"])
        return ckpt["epoch"] + 1

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
            batch = augment_batch(batch, self.augment, self.augment_generator)
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
        """One optimisation step through the method's hooks: ``(loss value, output, logs)``.

        Under ``optim.amp`` the forward pass and the loss run in autocast; an fp16 run scales the loss
        for backward and unscales the gradients before ``after_backward``, so methods that read or
        change gradients see them at their true size, and the scaler skips steps with inf/NaN gradients."""
        model, method, state, scaler = self.model, self.method, self.state, self.scaler
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = method.forward(model, batch, state)
            loss, logs = method.loss(model, batch, out, state)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(state.epoch, state.step, value)
            if not method.trains_unimodal_heads:
                loss = loss + model.monitor_loss(out, batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
        logs = {**logs, **(method.after_backward(model, batch, out, state) or {})}
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        state.step += 1
        return value, out, logs


