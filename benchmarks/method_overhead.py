"""Epoch time and peak memory of every registered method relative to ``joint``.

Each method trains in its own subprocess (so peak RSS is its own) on the same data, model and
seed; a run's figure is its median seconds per epoch after the first epoch. The methods run in
``--rounds`` interleaved rounds (``joint``, then every other method, then again), and a method's
ratio to ``joint`` is the median over rounds of the per-round ratio, with its range (``pairing.py``),
so a load change on a shared machine hits both sides of a pair alike. Usage:

    python benchmarks/method_overhead.py [--dataset synthetic] [--epochs 6] [--rounds 5] [--methods joint,ogm_ge]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from pairing import MIN_ROUNDS, Ratio, rounds  # benchmarks/ is on sys.path when this script runs


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
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="interleaved rounds (pairs per method)")
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
    order = ["joint"] + [m for m in methods if m != "joint"]

    def child(method: str) -> dict:
        cmd = [sys.executable, __file__, "--one", method, "--dataset", args.dataset, "--epochs", str(args.epochs),
               "--data-dir", data_dir] + (["--modalities", args.modalities] if args.modalities else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
        return json.loads(done.stdout.strip().splitlines()[-1])

    pairs = {m: list(zip(*rounds(lambda: child("joint"), lambda m=m: child(m), n=args.rounds))) for m in order[1:]}
    joint = [b for p in pairs.values() for b, _ in p] or [child("joint") for _ in range(args.rounds)]
    mods = args.modalities or ",".join(meta.modalities)
    print(f"dataset {args.dataset} [{mods}], {args.epochs} epochs, median s/epoch after the first, 2 threads; "
          f"{args.rounds} rounds per method, each run right after a joint run; "
          "x joint = median of the per-pair ratios [range]\n")
    print("| method | s/epoch | x joint | peak RSS MB | x joint |\n|---|---|---|---|---|")
    for method in order:
        ok = [(r, r) for r in joint] if method == "joint" else pairs[method]
        ok = [(b, r) for b, r in ok if "error" not in b and "error" not in r]
        if not ok:
            failed = next((r for pair in pairs.get(method, []) for r in pair if "error" in r),
                          next((r for r in joint if "error" in r), {"error": "no run"}))
            print(f"| {method} | failed: {failed['error']} | | | |")
            continue
        cells = []
        for key, fmt in (("seconds_per_epoch", ".3f"), ("peak_rss_mb", ".0f")):
            cells += [format(statistics.median(r[key] for _, r in ok), fmt),
                      str(Ratio.of([b[key] for b, _ in ok], [r[key] for _, r in ok]))]
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
