"""Training throughput of ``ogm_ge`` with ResNet-18 audio + visual encoders on a CREMA-D-shaped fixture.

    python benchmarks/train_throughput.py [--clips 2000] [--steps 12] [--warmup 3] [--threads 2]
                                          [--keep RAW_DIR] [--data-dir DATA_DIR]
                                          [--baseline | --without malloc|layout | --compare]
                                          [--compile [--memory-budget 0.7]] [--optimizer foreach|fused]

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
switches one of them off; ``--compare`` runs both in ``--rounds`` interleaved rounds (``pairing.py``),
reports the median of the per-round speed and memory ratios with their range, and checks that the
per-step losses agree. Peak RSS is measured from after loading the data (the steps' own peak, with
the data they use resident; the lifetime peak is shown too). ``--optimizer foreach|fused`` swaps in
torch's multi-tensor or fused SGD step. ``--compile`` trains with compiled encoders
(``model.compile=true``; ``--memory-budget``: ``model.activation_memory_budget``); with ``--compare``
each round then runs three sides (baseline, mmbench, mmbench compiled) and compares each pair.
Reference: the official OGM-GE code (``main.py`` at 343dc1d, measured on this project's 2-core machine) does 4.8 samples/s on 2 CPU threads (5.3 for forward + backward alone),
with 50-75 s of each 133-s epoch in kernel time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ogm_setup import ensure_data
from pairing import MIN_ROUNDS, Ratio, rounds  # benchmarks/ is on sys.path when this script runs

CHILD = """
import contextlib, json, resource, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from mmbench.models.compiled import compiled_encoders
from mmbench.models.encoders import ResNet18Encoder
from mmbench.run import model_spec
from mmbench.runtime import seed_everything, tune_cpu
tune_cpu("cpu")  # where mmbench train calls it: before the data loads (MMBENCH_CPU_TUNING=0: nothing)
import mmbench.training as training
from ogm_setup import ogm_ge_run, record_steps

if "layout" in args["off"]:
    ResNet18Encoder.memory_format = torch.contiguous_format
if args["optimizer"] != "default":  # torch's multi-tensor (foreach) or fused SGD step
    training.build_optimizer = lambda params, c: torch.optim.SGD(
        params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, **{args["optimizer"]: True})
cfg, method, train, val = ogm_ge_run(args["data_dir"], args["batch"], args["warmup"] + args["steps"])
data_mb = sum(x.nbytes for d in (train, val) for x in [*d.inputs.values(), d.labels]) / 2**20
def rss_mb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024
with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM: the peak from here on is the training's
    f.write("5")
seed_everything(0)
model = method.build_model(model_spec(cfg, train))
marks, losses = record_steps(method, lambda: (time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)))
trainer = training.Trainer(method, model, cfg.optim, torch.device("cpu"), 0)
start = time.perf_counter()
with compiled_encoders(model, args["budget"]) if args["compile"] else contextlib.nullcontext():
    trainer.fit(train, val)
(t0, r0), (t1, r1) = marks[args["warmup"] - 1], marks[-1]
user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
print(json.dumps({
    "samples_per_s": args["steps"] * args["batch"] / (t1 - t0), "seconds_per_step": (t1 - t0) / args["steps"],
    "user_s": user, "system_s": system, "system_share": system / (user + system),
    "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / args["steps"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "train_peak_rss_mb": rss_mb("VmHWM"),
    "data_mb": data_mb, "losses": losses,
    "encoders": dict(cfg.model.encoders), "threads": torch.get_num_threads(), "batch": args["batch"],
    "first_steps_s": [round(marks[i][0] - (marks[i - 1][0] if i else start), 2) for i in range(args["warmup"])]}))
"""


def run(data_dir: Path, steps: int, warmup: int, threads: int, batch: int, off: list[str], optimizer: str,
        compile_budget: float | None) -> dict:
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    env.pop("MMBENCH_CPU_TUNING", None)
    if "malloc" in off:
        env["MMBENCH_CPU_TUNING"] = "0"
    args = {"data_dir": str(data_dir), "steps": steps, "warmup": warmup, "threads": threads, "batch": batch,
            "off": off, "optimizer": optimizer, "compile": compile_budget is not None, "budget": compile_budget or 1.0}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(label: str, r: dict) -> None:
    print(f"{label}: {r['samples_per_s']:.2f} samples/s ({r['seconds_per_step']:.2f} s per batch of "
          f"{r['batch']}), kernel time {100 * r['system_share']:.0f}% of CPU time "
          f"(user {r['user_s']:.1f} s, system {r['system_s']:.1f} s), {r['minor_faults_per_step'] / 1e3:.0f} k minor "
          f"faults per step, peak RSS {r['train_peak_rss_mb']:.0f} MB while training ({r['data_mb']:.0f} MB of it data; "
          f"{r['peak_rss_mb']:.0f} MB with loading); warm-up steps {r['first_steps_s']} s; "
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
    parser.add_argument("--compare", action="store_true",
                        help="run the baseline and the tuned path in interleaved rounds, compare")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="rounds of runs for --compare")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoders (model.compile=true); with --compare, a third side")
    parser.add_argument("--memory-budget", type=float, default=1.0,
                        help="with --compile: model.activation_memory_budget, the share of activations kept")
    parser.add_argument("--optimizer", choices=["default", "foreach", "fused"], default="default",
                        help="torch's SGD implementation: per-parameter loop (default on CPU), foreach or fused")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be at least 1")
    if not 0 < args.memory_budget <= 1 or (args.memory_budget < 1 and not args.compile):
        parser.error("--memory-budget must be in (0, 1], and below 1 only with --compile")

    tmp = Path(tempfile.mkdtemp(prefix="mmbench-train-"))
    data_dir = args.data_dir or tmp / "data"
    ensure_data(args.clips, args.keep or tmp / "raw", data_dir)
    everything = ["layout", "malloc"]
    title = f"ogm_ge, ResNet-18 x2, 224x224, batch {args.batch_size}, SGD {args.optimizer}"

    def side(name: str, off: list[str], budget: float | None = None):
        def go() -> dict:
            r = run(data_dir, args.steps, args.warmup, args.threads, args.batch_size, off, args.optimizer, budget)
            report(f"{title}, {name}", r)
            return r
        return go

    baseline = ("baseline", side("baseline (NCHW, default malloc)", everything))
    eager = ("mmbench", side("mmbench (channels_last layout, steady malloc)", []))
    compiled = ("compiled", side(f"mmbench compiled (channels_last layout, steady malloc, compiled encoders, "
                                 f"activation budget {args.memory_budget:g})", [], args.memory_budget))
    if not args.compare:
        off = everything if args.baseline else sorted(set(args.without))
        if off == everything:
            baseline[1]()
        elif off:
            side(f"mmbench without the {off[0]} speed-up", off)()
        else:
            (compiled if args.compile else eager)[1]()
        return
    sides = [baseline, eager, *([compiled] if args.compile else [])]
    results = dict(zip([name for name, _ in sides], rounds(*(go for _, go in sides), n=args.rounds), strict=True))
    print(f"{args.rounds} interleaved rounds ({', then '.join(results)}), median of the per-round ratios [range]:")
    for name, rs in results.items():
        print(f"  {name}: median {statistics.median(r['samples_per_s'] for r in rs):.2f} samples/s, "
              f"median peak RSS while training {statistics.median(r['train_peak_rss_mb'] for r in rs):.0f} MB")
    for a, b in [("baseline", name) for name in list(results)[1:]] + [("mmbench", "compiled")] * args.compile:
        speed = Ratio.of(*([r["samples_per_s"] for r in results[x]] for x in (a, b)))
        rss = Ratio.of(*([r["train_peak_rss_mb"] for r in results[x]] for x in (a, b)))
        print(f"  {b} vs {a}: speed {speed}; peak RSS while training {rss}")
    first = results["baseline"][0]["losses"]
    every = [r for rs in results.values() for r in rs]
    diff = max(abs(x - y) for r in every for x, y in zip(first, r["losses"], strict=True))
    print(f"per-step training losses, every run vs the first baseline run: max |difference| {diff:.2e} over "
          f"{len(first)} steps")
    for name, rs in results.items():
        print(f"  {name + ':':10}", " ".join(f"{x:.4f}" for x in rs[0]["losses"]))
    print("reference: official OGM-GE code, 2 CPU threads: 4.8 samples/s per epoch, 5.3 forward + backward alone; "
          "target >= 7.2 (1.5x)")


if __name__ == "__main__":
    main()
