"""Run folders and the results table.

``<results_dir>/runs/<run_id>/`` holds ``config.yaml``, ``env.json``, ``metrics.csv``,
``model.pt`` (weights only), ``summary.json`` (written last: a run is complete when it
exists) and ``attack.csv``. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mmbench import __version__
from mmbench.config import RunConfig, dump_yaml
from mmbench.errors import MMBenchError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False))


class RunFolder:
    """One run's folder and its files."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def for_config(cls, cfg: RunConfig) -> RunFolder:
        return cls(Path(cfg.output.results_dir) / "runs" / cfg.run_id())

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def complete(self) -> bool:
        return (self.path / "summary.json").exists()

    # -- writing ------------------------------------------------------------------------
    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.path / "config.yaml", dump_yaml(cfg.to_dict()))

    def write_env(self, device: str) -> None:
        atomic_write_text(self.path / "env.json", json.dumps(environment(device), indent=2))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_csv(self.path / "metrics.csv", pd.DataFrame(rows))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2, default=float))

    def save_model(self, state_dict: dict) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state_dict, buf)
        atomic_write_bytes(self.path / "model.pt", buf.getvalue())

    def save_arrays(self, name: str, **arrays) -> None:
        """A compressed ``.npz`` of plain arrays (no pickles)."""
        import numpy as np

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.path / name, buf.getvalue())

    def load_arrays(self, name: str) -> dict:
        import numpy as np

        with np.load(self.path / name, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def write_attack_rows(self, rows: list[dict[str, Any]], key: list[str]) -> pd.DataFrame:
        """Merge rows into ``attack.csv``; a new row replaces an old one with the same ``key``."""
        new = pd.DataFrame(rows)
        old = self.read_attack()
        merged = pd.concat([old, new], ignore_index=True) if not old.empty else new
        # compare keys as text: a CSV round trip turns "1" into 1
        merged = merged[~merged[key].astype(str).duplicated(keep="last")].reset_index(drop=True)
        atomic_write_csv(self.path / "attack.csv", merged)
        return merged

    # -- reading ------------------------------------------------------------------------
    def read_config(self) -> RunConfig:
        path = self.path / "config.yaml"
        if not path.exists():
            raise MMBenchError(f"{self.path} is not a run folder (no config.yaml)")
        try:
            return RunConfig.from_dict(yaml.safe_load(path.read_text()))
        except yaml.YAMLError:
            raise MMBenchError(f"{path} is not valid YAML; the run folder is damaged") from None

    def read_summary(self) -> dict[str, Any]:
        return json.loads((self.path / "summary.json").read_text())

    def read_metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "metrics.csv")

    def read_attack(self) -> pd.DataFrame:
        path = self.path / "attack.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()

    def load_state_dict(self, map_location: str = "cpu") -> dict:
        import torch

        path = self.path / "model.pt"
        if not path.exists():
            raise MMBenchError(f"{path} is missing; train the run again (output.save_model must be true)")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise MMBenchError(f"{path} cannot be loaded safely ({type(e).__name__}); train the run again") from None


def environment(device: str) -> dict[str, Any]:
    import numpy
    import torch

    env = {"mmbench": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "numpy": numpy.__version__, "pandas": pd.__version__,
           "device": device, "threads": torch.get_num_threads(), "git_commit": _git_commit()}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_folders(results_dir: str | os.PathLike) -> list[RunFolder]:
    """Complete run folders under ``results_dir`` (incomplete ones are skipped)."""
    runs = Path(results_dir) / "runs"
    return [RunFolder(p) for p in sorted(runs.iterdir()) if (p / "summary.json").exists()] if runs.exists() else []


def resolve_run(ref: str, results_dir: str | os.PathLike) -> RunFolder:
    """A run given by folder path or by run id under ``results_dir/runs``."""
    for candidate in (Path(ref), Path(results_dir) / "runs" / ref):
        if (candidate / "config.yaml").exists():
            return RunFolder(candidate)
    raise MMBenchError(f"run {ref!r} not found (neither a run folder nor a run id in {results_dir}/runs)")
