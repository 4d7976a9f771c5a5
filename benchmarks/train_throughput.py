"""Training throughput of ``ogm_ge`` with ResNet-18 audio + visual encoders on a CREMA-D-shaped fixture.

    python benchmarks/train_throughput.py [--clips 2000] [--steps 12] [--warmup 3] [--threads 2]
                                          [--keep RAW_DIR] [--data-dir DATA_DIR]
                                          [--baseline | --without malloc|layout | --compare]

Writes (or reuses, ``--keep``) the CREMA-D-shaped raw fixture of ``prepare_throughput.py``, prepares
it at 224x224 with 1 frame (or reuses ``--data-dir``), then trains in a child process (so its
memory and CPU times are its own) exactly what ``mmbench train --dataset cremad --method ogm_ge``
builds from ``datasets.yaml``: ResNet-18 audio ``[1, 257, 188]`` and visual ``[1, 3, 224, 224]``
encoders, concat fusion, SGD, batch 64, OGM-GE alpha 0.8, through the library's ``Trainer``.

It trains ``warmup + steps`` batches and prints, over the ``steps`` after the warm-up batches:
training samples/s (whole steps: forward, backward, modulation, optimizer), the share of the
process's CPU time spent in the kernel (``ru_stime / (ru_utime + ru_stime)``), minor page faults
per step, and the child's peak RSS. ``--baseline`` switches mmbench's two CPU speed-ups off, i.e.
runs plain PyTorch defaults as the official OGM-GE code does: the allocator setting
(``MMBENCH_CPU_TUNING=0``, see :func:`mmbench.runtime.tune_cpu`) and the channels-last layout of
the ResNet-18 (``ResNet18Encoder.memory_format = torch.contiguous_format``); ``--without X``
switches one of them off; ``--compare`` runs both and checks that the
per-step losses agree. Reference: the official OGM-GE code (``main.py`` at 343dc1d, measured on this
project's 2-core machine) does 4.8 samples/s on 2 CPU threads (5.3 for forward + backward alone),
with 50-75 s of each 133-s epoch in kernel time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prepare_throughput import ensure_fixture  # benchmarks/ is on sys.path when this script runs

CHILD = """
import json, resource, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from mmbench.config import resolve
from mmbench.models.encoders import ResNet18Encoder
from mmbench.run import complete_config, load_run_data, model_spec
from mmbench.runtime import seed_everything
from mmbench.training import Trainer

flags = {"data.dataset": "cremad", "method.name": "ogm_ge", "optim.epochs": 1, "optim.batch_size": args["batch"],
         "output.data_dir": args["data_dir"], "seed": 0}
if "layout" in args["off"]:
    ResNet18Encoder.memory_format = torch.contiguous_format
cfg, method = complete_config(resolve(flags=flags))
data = load_run_data(cfg)
n = (args["warmup"] + args["steps"]) * args["batch"]
train = data["train"].index(torch.arange(n) % len(data["train"]))
val = data["val"].index(slice(0, args["batch"]))
seed_everything(0)
spec = model_spec(cfg, train)
model = method.build_model(spec)
marks, losses = [], []
loss_fn, after = method.loss, method.after_backward
def loss(*a):
    value, logs = loss_fn(*a)
    losses.append(value.item())
    return value, logs
def after_backward(*a):
    out = after(*a)
    marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)))
    return out
method.loss, method.after_backward = loss, after_backward
trainer = Trainer(method, model, cfg.optim, torch.device("cpu"), 0)
start = time.perf_counter()
trainer.fit(train, val)
(t0, r0), (t1, r1) = marks[args["warmup"] - 1], marks[-1]
user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
print(json.dumps({
    "samples_per_s": args["steps"] * args["batch"] / (t1 - t0), "seconds_per_step": (t1 - t0) / args["steps"],
    "user_s": user, "system_s": system, "system_share": system / (user + system),
    "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / args["steps"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "losses": losses,
    "encoders": dict(cfg.model.encoders), "threads": torch.get_num_threads(), "batch": args["batch"],
    "first_steps_s": [round(marks[i][0] - (marks[i - 1][0] if i else start), 2) for i in range(args["warmup"])]}))
"""


def ensure_data(clips: int, raw: Path, data_dir: Path) -> None:
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


def run(data_dir: Path, steps: int, warmup: int, threads: int, batch: int, off: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("MMBENCH_CPU_TUNING", None)
    if "malloc" in off:
        env["MMBENCH_CPU_TUNING"] = "0"
    args = {"data_dir": str(data_dir), "steps": steps, "warmup": warmup, "threads": threads, "batch": batch,
            "off": off}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(label: str, r: dict) -> None:
    print(f"{label}: {r['samples_per_s']:.2f} samples/s ({r['seconds_per_step']:.2f} s per batch of "
          f"{r['batch']}), kernel time {100 * r['system_share']:.0f}% of CPU time "
          f"(user {r['user_s']:.1f} s, system {r['system_s']:.1f} s), {r['minor_faults_per_step'] / 1e3:.0f} k minor "
          f"faults per step, peak RSS {r['peak_rss_mb']:.0f} MB; warm-up steps {r['first_steps_s']} s; "
          f"{r['threads']} threads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=12, help="timed batches after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first batches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--keep", type=Path, default=None, help="reuse / keep the raw fixture in this folder")
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse / keep the prepared dataset here")
    parser.add_argument("--baseline", action="store_true", help="mmbench's CPU speed-ups off (plain PyTorch defaults)")
    parser.add_argument("--without", action="append", choices=["malloc", "layout"], default=[],
                        help="switch one speed-up off: the allocator setting or the channels-last layout")
    parser.add_argument("--compare", action="store_true", help="run the baseline and the tuned path, compare")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="mmbench-train-"))
    data_dir = args.data_dir or tmp / "data"
    ensure_data(args.clips, args.keep or tmp / "raw", data_dir)
    everything = ["malloc", "layout"]
    runs = [everything, []] if args.compare else [everything if args.baseline else sorted(set(args.without))]
    results = []
    for off in runs:
        label = ("mmbench (channels_last layout, steady malloc)" if not off else
                 "baseline (NCHW, default malloc)" if len(off) == 2 else f"mmbench without the {off[0]} speed-up")
        results.append(run(data_dir, args.steps, args.warmup, args.threads, args.batch_size, off))
        report(f"ogm_ge, ResNet-18 x2, 224x224, batch {args.batch_size}, {label}", results[-1])
    if args.compare:
        a, b = results
        diff = max(abs(x - y) for x, y in zip(a["losses"], b["losses"]))
        print(f"speed-up {b['samples_per_s'] / a['samples_per_s']:.2f}x; per-step training losses, baseline vs "
              f"tuned: max |difference| {diff:.2e} over {len(a['losses'])} steps "
              f"(first {a['losses'][0]:.4f} / {b['losses'][0]:.4f}, last {a['losses'][-1]:.4f} / {b['losses'][-1]:.4f})")
        print("  baseline:", " ".join(f"{x:.4f}" for x in a["losses"]))
        print("  mmbench: ", " ".join(f"{x:.4f}" for x in b["losses"]))
    print("reference: official OGM-GE code, 2 CPU threads: 4.8 samples/s per epoch, 5.3 forward + backward alone; "
          "target >= 7.2 (1.5x)")


if __name__ == "__main__":
    main()
