"""GPU check: ``ogm_ge`` with two ResNet-18s at 224x224, batch 64, in fp32 and bf16, through the library's Trainer.

    python benchmarks/gpu_check.py [--steps 40] [--warmup 5] [--batch-size 64] [--precisions fp32,bf16]
                                   [--clips 2000] [--keep RAW_DIR] [--data-dir DATA_DIR] [--dry-run]

Prepares (or reuses) the CREMA-D-shaped fixture of ``train_throughput.py`` at 224x224, 1 frame, and
trains the same run (``ogm_setup.py``) on ``cuda`` once per precision: ``fp32``, and ``bf16`` with
the forward pass and loss under ``torch.autocast(dtype=torch.bfloat16)`` (parameters, gradients and
the optimizer stay fp32). Over the ``--steps`` after ``--warmup`` untimed batches it prints
samples/s (whole steps: forward, backward, modulation, optimizer; the device is synchronised at
each step by the loss read-out), GPU utilisation (``torch.cuda.utilization()``, else ``nvidia-smi``,
sampled every 0.2 s), the data-wait share (host time spent producing the next batch / step time;
the data lives on the device, so this is the index and augmentation cost), peak GPU memory, and the
ratio to the official OGM-GE code's throughput (``--official``, samples/s; its README at 343dc1d
publishes no speed, so the only reference is the 2-thread CPU figure this project measured, 4.8).
``--dry-run`` runs the same code on the CPU with 2 steps of batch 4 (a check that the script works).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

from ogm_setup import ensure_data, ogm_ge_run, record_steps  # benchmarks/ is on sys.path when this script runs

OFFICIAL_CPU = 4.8  # samples/s, official OGM-GE main.py at 343dc1d, 2 CPU threads (train_throughput.py)


def utilisation_sampler(device):
    """``(start, stop)``: sample GPU utilisation (percent) in a thread; ``stop()`` gives the samples."""
    import torch

    def read() -> float | None:
        try:
            return float(torch.cuda.utilization(device))
        except Exception:  # noqa: BLE001 - no pynvml: ask nvidia-smi
            if not shutil.which("nvidia-smi"):
                return None
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", str(device.index or 0)], capture_output=True, text=True)
            return float(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None

    samples: list[float] = []
    done = threading.Event()

    def loop() -> None:
        while not done.wait(0.2):
            value = read()
            if value is not None:
                samples.append(value)

    thread = threading.Thread(target=loop, daemon=True)

    def stop() -> list[float]:
        done.set()
        if thread.is_alive():
            thread.join()
        return samples

    return (thread.start if device.type == "cuda" else lambda: None), stop


def timed_batches(waits: list[float]):
    """A ``MultimodalData.batches`` that adds the host seconds spent producing each batch to ``waits``."""
    from mmbench.data.types import MultimodalData

    plain = MultimodalData.batches

    def batches(self, *a, **k):
        it = plain(self, *a, **k)
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            waits.append(time.perf_counter() - start)
            yield batch

    return batches


def train_once(data_dir: Path, precision: str, device, batch: int, warmup: int, steps: int) -> dict:
    import torch

    from mmbench.data.types import MultimodalData
    from mmbench.run import model_spec
    from mmbench.runtime import seed_everything
    from mmbench.training import Trainer

    cfg, method, train, val = ogm_ge_run(data_dir, batch, warmup + steps)
    seed_everything(0)
    model = method.build_model(model_spec(cfg, train))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start_util, stop_util = utilisation_sampler(device)

    def mark() -> float:
        sync()
        if len(marks) == warmup - 1:  # the last warm-up step ends: sample utilisation from here on
            start_util()
        return time.perf_counter()

    marks, losses = record_steps(method, mark)
    forward, loss = method.forward, method.loss

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def forward_cast(*a):
        with autocast():
            return forward(*a)

    def loss_cast(*a):
        with autocast():
            return loss(*a)

    method.forward, method.loss = forward_cast, loss_cast
    waits: list[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(method, model, cfg.optim, device, 0)
    plain = MultimodalData.batches
    MultimodalData.batches = timed_batches(waits)
    try:
        trainer.fit(train, val)
    finally:
        MultimodalData.batches = plain
    util = stop_util()
    seconds = marks[-1] - marks[warmup - 1]
    timed_waits = waits[warmup:warmup + steps]
    return {"samples_per_s": steps * batch / seconds, "seconds_per_step": seconds / steps,
            "data_wait_share": sum(timed_waits) / seconds,
            "gpu_util": sum(util) / len(util) if util else None,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            "first_loss": losses[0], "last_loss": losses[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed batches after the warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first batches")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--keep", type=Path, default=None, help="reuse / keep the raw fixture in this folder")
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse / keep the prepared dataset here")
    parser.add_argument("--official", type=float, default=OFFICIAL_CPU,
                        help="the official OGM-GE code's samples/s to compare with (default: its 2-thread CPU figure)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, 2 steps of batch 4: check that the script runs")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        parser.error(f"--precisions: fp32 and/or bf16, got {args.precisions!r}")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")

    import torch

    if args.dry_run:
        device, args.steps, args.warmup, args.batch_size, args.clips = torch.device("cpu"), 2, 1, 4, 120
        torch.set_num_threads(2)
    elif not torch.cuda.is_available():
        parser.error("no CUDA device here; --dry-run checks the script on the CPU")
    else:
        device = torch.device("cuda")
    tmp = Path(tempfile.mkdtemp(prefix="mmbench-gpu-"))
    data_dir = args.data_dir or tmp / "data"
    ensure_data(args.clips, args.keep or tmp / "raw", data_dir)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"ogm_ge, ResNet-18 x2, 224x224, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, "
          f"on {name}, torch {torch.__version__}" + (" [dry run]" if args.dry_run else ""))
    print("| precision | samples/s | s/step | GPU util % | data wait % | peak GPU MB | x official | loss first/last |")
    print("|---|---|---|---|---|---|---|---|")
    for precision in precisions:
        r = train_once(data_dir, precision, device, args.batch_size, args.warmup, args.steps)
        util = f"{r['gpu_util']:.0f}" if r["gpu_util"] is not None else "n/a"
        peak = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "n/a"
        print(f"| {precision} | {r['samples_per_s']:.1f} | {r['seconds_per_step']:.3f} | {util} | "
              f"{100 * r['data_wait_share']:.1f} | {peak} | {r['samples_per_s'] / args.official:.1f} | "
              f"{r['first_loss']:.4f} / {r['last_loss']:.4f} |")
    print(f"x official: against {args.official} samples/s (official OGM-GE main.py at 343dc1d; its README publishes "
          "no speed, the default is its 2-thread CPU figure measured by train_throughput.py)")


if __name__ == "__main__":
    main()
