"""The training both ``train_throughput.py`` and ``gpu_check.py`` measure: ``ogm_ge`` with ResNet-18
audio + visual encoders on a CREMA-D-shaped fixture prepared at 224x224, 1 frame, exactly as
``mmbench train --dataset cremad --method ogm_ge`` builds it from ``datasets.yaml``."""

from __future__ import annotations

import time
from pathlib import Path

from prepare_throughput import ensure_fixture  # benchmarks/ is on sys.path when these scripts run


def ensure_data(clips: int, raw: Path, data_dir: Path) -> None:
    """Prepare the fixture at 224x224 in ``data_dir`` unless it is there already."""
    from mmbench.data.store import load_meta, prepare

    try:
        meta = load_meta("cremad", data_dir)
        if meta.modalities["visual"].shape == (1, 3, 224, 224):
            print(f"reusing prepared cremad in {data_dir}: splits {meta.splits}")
            return
    except Exception:  # noqa: BLE001 - not prepared (or prepared otherwise): prepare below
        pass
    ensure_fixture(raw, clips)
    start = time.perf_counter()
    prepare("cremad", raw, data_dir, options={"image_size": 224, "frames": 1}, force=True)
    print(f"prepared at 224x224, 1 frame in {time.perf_counter() - start:.1f} s ({data_dir})")


def ogm_ge_run(data_dir, batch: int, batches: int):
    """``(cfg, method, train, val)``: the resolved config, the method, ``batches`` training batches
    (the split repeated as needed; the full split is not kept) and one validation batch."""
    import torch

    from mmbench.config import resolve
    from mmbench.data.store import load_split
    from mmbench.run import complete_config

    flags = {"data.dataset": "cremad", "method.name": "ogm_ge", "optim.epochs": 1, "optim.batch_size": batch,
             "output.data_dir": str(data_dir), "seed": 0}
    cfg, method = complete_config(resolve(flags=flags))
    train = load_split("cremad", "train", data_dir)
    train = train.index(torch.arange(batches * batch) % len(train))
    val = load_split("cremad", "val", data_dir).index(slice(0, batch))
    return cfg, method, train, val


def record_steps(method, mark) -> tuple[list, list[float]]:
    """Wrap ``method``'s hooks: ``(marks, losses)`` fill with ``mark()`` after each backward and each step's loss."""
    marks, losses = [], []
    loss_fn, after = method.loss, method.after_backward

    def loss(*a):
        value, logs = loss_fn(*a)
        losses.append(value.item())
        return value, logs

    def after_backward(*a):
        out = after(*a)
        marks.append(mark())
        return out

    method.loss, method.after_backward = loss, after_backward
    return marks, losses
