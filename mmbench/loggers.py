"""Experiment trackers (``output.loggers``): TensorBoard, MLflow and Weights & Biases, as optional extras.

Each backend receives what the run folder records: the resolved config once, every finished
epoch's ``metrics.csv`` row (losses, fused and per-modality accuracies, the method's logs such as
OGM-GE's ``coeff_<m>``; step = epoch) and the numbers of ``summary.json`` at the end. The trainer
calls :meth:`Trackers.log_epoch` (:class:`mmbench.training.Trainer`'s ``tracker``); the run pipeline
opens and closes them. Where each writes:

- ``tensorboard``: event files in ``<run folder>/tensorboard`` (a resumed run adds to them);
- ``mlflow``: the tracking server or store of ``$MLFLOW_TRACKING_URI``, experiment
  ``$MLFLOW_EXPERIMENT_NAME`` (default ``mmbench``), one MLflow run per training, named by the run id
  (a resumed training continues it);
- ``wandb``: project ``$WANDB_PROJECT`` (default ``mmbench``), files under ``<run folder>/wandb``, one W&B
  run per training (a resumed training continues it); ``WANDB_MODE=offline`` keeps everything local.
"""

from __future__ import annotations

import abc
import importlib.util
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, ClassVar

from mmbench.config import dump_yaml
from mmbench.errors import MMBenchError


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with dotted keys (``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def numeric(d: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a flat dict as floats (NaN kept; bools, strings and None left out)."""
    return {k: float(v) for k, v in d.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}


class Tracker(abc.ABC):
    """One tracker's run, opened with the run id, the run folder and the resolved config (as recipes
    write it); ``resume``: the ``ident`` of the tracker run to continue (a resumed training), else None.
    Subclasses name the ``package`` they import."""

    package: ClassVar[str]
    ident: str | None = None  # the tracker's own id of this run, where it has one

    @abc.abstractmethod
    def __init__(self, run_id: str, folder: Path, config: dict[str, Any], resume: str | None): ...

    @abc.abstractmethod
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...

    @abc.abstractmethod
    def log_summary(self, metrics: dict[str, float], summary: dict[str, Any]) -> None:
        """``metrics``: the summary's numbers, flattened (``test.acc``); ``summary``: all of it."""

    @abc.abstractmethod
    def close(self, ok: bool) -> None:
        """End the tracker's run, as failed when not ``ok``."""


class TensorBoard(Tracker):
    package = "tensorboard"

    def __init__(self, run_id, folder, config, resume):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
        self.writer.add_text("config", _indented(dump_yaml(config)))

    def log_epoch(self, epoch, metrics):
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, epoch)

    def log_summary(self, metrics, summary):
        for k, v in metrics.items():
            self.writer.add_scalar(f"summary/{k}", v, 0)
        self.writer.add_text("summary", _indented(json.dumps(summary, indent=2, default=str)))

    def close(self, ok):
        self.writer.close()


def _indented(text: str) -> str:
    """Markdown code block (TensorBoard renders text as Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


class MLflow(Tracker):
    package = "mlflow"

    def __init__(self, run_id, folder, config, resume):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        if resume is not None:
            self.run = self.ident = resume
            self.client.update_run(resume, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "mmbench")
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found is not None else self.client.create_experiment(name)
        self.run = self.client.create_run(experiment, run_name=run_id, tags={"mmbench.run_id": run_id}).info.run_id
        self.ident = self.run
        params = {k: v for k, v in flatten(config).items() if k != "published"}
        self.client.log_batch(self.run, params=[Param(k, str(v)) for k, v in params.items()])
        self.client.log_text(self.run, dump_yaml(config), "config.yaml")

    def log_epoch(self, epoch, metrics):
        self._log(metrics, epoch)

    def log_summary(self, metrics, summary):
        self._log({f"summary.{k}": v for k, v in metrics.items()}, 0)
        self.client.log_dict(self.run, summary, "summary.json")

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self.client.log_batch(self.run, metrics=[Metric(k, v, 0, step) for k, v in metrics.items()])

    def close(self, ok):
        self.client.set_terminated(self.run, "FINISHED" if ok else "FAILED")


class WandB(Tracker):
    package = "wandb"

    def __init__(self, run_id, folder, config, resume):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mmbench"), name=run_id, config=config,
                              dir=str(folder), tags=[config["method"]["name"], config["data"]["dataset"]],
                              id=resume, resume="must" if resume else None)
        self.ident = self.run.id

    def log_epoch(self, epoch, metrics):
        self.run.log(metrics, step=epoch)

    def log_summary(self, metrics, summary):
        self.run.summary.update(metrics)

    def close(self, ok):
        self.run.finish(exit_code=0 if ok else 1)


#: ``output.loggers`` name -> backend; each name is also the pyproject extra that installs its package
BACKENDS: dict[str, type[Tracker]] = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


def check_installed(names: list[str]) -> None:
    """A one-line error naming the extra to install for the first backend whose package is missing."""
    for name in names:
        if importlib.util.find_spec(BACKENDS[name].package) is None:
            raise MMBenchError(f"output.loggers: {name} needs the {BACKENDS[name].package} package; "
                               f"pip install 'mmbench[{name}]' (or drop {name} from output.loggers)")


def _read_ids(path: Path) -> dict[str, str]:
    """``trackers.json`` (tracker name -> its run id); empty when absent or unreadable (new tracker runs then)."""
    try:
        ids = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in ids.items() if isinstance(v, str)} if isinstance(ids, dict) else {}


class Trackers:
    """The run's open trackers, called together; what the Trainer's ``tracker`` hook receives.

    Their ids go to ``<run folder>/trackers.json``; a ``resumed`` training continues those tracker runs."""

    def __init__(self, names: list[str], run_id: str, folder: Path, config: dict[str, Any], resumed: bool = False):
        from mmbench.results import atomic_write_text

        check_installed(names)
        saved = folder / "trackers.json"
        ids = _read_ids(saved) if resumed else {}
        self.open: list[Tracker] = []
        try:
            for name in names:
                self.open.append(BACKENDS[name](run_id, folder, config, ids.get(name)))
        except BaseException:
            self.close(ok=False)
            raise
        ids = {name: t.ident for name, t in zip(names, self.open) if t.ident is not None}
        if ids:
            atomic_write_text(saved, json.dumps(ids))

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        metrics = {k: v for k, v in numeric(row).items() if k != "epoch"}
        for t in self.open:
            t.log_epoch(epoch, metrics)

    def log_summary(self, summary: dict[str, Any]) -> None:
        measured = {k: v for k, v in summary.items() if k not in ("method_params", "seed")}  # those are config
        metrics = {k: v for k, v in numeric(flatten(measured)).items() if not math.isnan(v)}
        for t in self.open:
            t.log_summary(metrics, summary)

    def close(self, ok: bool = True) -> None:
        """Close every tracker once (later calls do nothing)."""
        opened, self.open = self.open, []
        for t in opened:
            t.close(ok)
