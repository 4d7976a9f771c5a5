"""Epoch time and peak memory of every registered method relative to ``joint``.

Each method trains in its own subprocess (so peak RSS is its own) on the same data, model and
seed; the figure is the median seconds per epoch after the first epoch. Usage:

    python benchmarks/method_overhead.py [--dataset synthetic] [--epochs 6] [--methods joint,ogm_ge]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def one(method: str, dataset: str, epochs: int, data_dir: str, modalities: str | None) -> dict:
    import torch

    from mmbench.config import resolve
    from mmbench.data.store import load_meta
    from mmbench.run import complete_config, load_run_data, model_spec
    from mmbench.runtime import seed_everything
    from mmbench.training import Trainer

    torch.set_num_threads(2)
    first = modalities.split(",")[0] if modalities else next(iter(load_meta(dataset, data_dir).modalities))
    sets = [f"method.modality={first}"] if method == "unimodal" else []
    flags = {"data.dataset": dataset, "method.name": method, "optim.epochs": epochs, "output.data_dir": data_dir,
             "data.modalities": modalities.split(",") if modalities else None}
    cfg, m = complete_config(resolve(flags=flags, sets=sets))
    data = load_run_data(cfg)
    seed_everything(0)
    spec = model_spec(cfg, data["train"])
    m.check_spec(spec)
    trainer = Trainer(m, m.build_model(spec), cfg.optim, torch.device("cpu"), 0)
    start = time.perf_counter()
    result = trainer.fit(data["train"], data["val"])
    seconds = sorted(result.epoch_seconds[1:]) or result.epoch_seconds
    return {"seconds_per_epoch": seconds[len(seconds) // 2], "total": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--modalities", default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--methods", default=None, help="comma-separated (default: all registered)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="mmbench-bench-")
    if args.one:
        print(json.dumps(one(args.one, args.dataset, args.epochs, data_dir, args.modalities)))
        return
    from mmbench.data.store import load_meta
    from mmbench.registry import METHODS

    meta = load_meta(args.dataset, data_dir)  # prepare once, outside the timed runs
    methods = args.methods.split(",") if args.methods else METHODS.names()
    rows = {}
    for method in ["joint"] + [m for m in methods if m != "joint"]:
        cmd = [sys.executable, __file__, "--one", method, "--dataset", args.dataset, "--epochs", str(args.epochs),
               "--data-dir", data_dir] + (["--modalities", args.modalities] if args.modalities else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            rows[method] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
        else:
            rows[method] = json.loads(done.stdout.strip().splitlines()[-1])
    base = rows["joint"]
    mods = args.modalities or ",".join(meta.modalities)
    print(f"dataset {args.dataset} [{mods}], {args.epochs} epochs, median s/epoch after the first, 2 threads\n")
    print("| method | s/epoch | x joint | peak RSS MB | x joint |\n|---|---|---|---|---|")
    for method, r in rows.items():
        if "error" in r:
            print(f"| {method} | failed: {r['error']} | | | |")
            continue
        print(f"| {method} | {r['seconds_per_epoch']:.3f} | {r['seconds_per_epoch'] / base['seconds_per_epoch']:.2f} "
              f"| {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
