"""Cost of evaluating one trained run under attack, relative to a plain test-set forward pass.

Trains one small run (or takes ``--run FOLDER``), then times, for every registered attack that
fits the data (and for whole protocols through ``attack_run``), the median seconds of one
evaluation = corrupt the test set + one forward pass, against the median of a clean evaluation.
Target: ratio <= 1.3 for non-adversarial attacks. Usage:

    python benchmarks/attack_throughput.py [--dataset synthetic] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--run", default=None, help="an existing run folder (default: train one)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from mmbench.attacks.protocols import Step
    from mmbench.attacks.runner import apply_steps, attack_run, evaluate_corruption
    from mmbench.config import resolve
    from mmbench.evaluation import evaluate
    from mmbench.registry import ATTACKS, PROTOCOLS
    from mmbench.results import RunFolder
    from mmbench.training import load_trained, train_run

    torch.set_num_threads(args.threads)
    if args.run:
        folder = RunFolder(args.run)
    else:
        tmp = tempfile.mkdtemp(prefix="mmbench-attack-bench-")
        flags = {"data.dataset": args.dataset, "method.name": "joint", "optim.epochs": args.epochs,
                 "output.data_dir": f"{tmp}/data", "output.results_dir": f"{tmp}/results"}
        folder, _ = train_run(resolve(flags=flags))
    cfg, method, model, test = load_trained(folder, args.device)
    bs = cfg.optim.batch_size * 4
    clean = median_seconds(lambda: evaluate(model, method, test, bs), args.repeats)
    print(f"run {folder.run_id}: {len(test)} test samples, device {args.device}")
    print(f"clean evaluation: {clean * 1e3:.1f} ms ({1 / clean:.1f} evaluations/s)")
    print(f"{'attack':<20} {'modality':<10} {'ms/eval':>9} {'eval/s':>8} {'ratio':>6}")
    for name in ATTACKS.names():
        fn = ATTACKS.get(name)
        for m in test.modalities:
            if test.meta.modalities[m].kind not in fn.kinds:
                continue
            steps = [(Step(name), [m])]
            seconds = median_seconds(
                lambda steps=steps: evaluate_corruption(model, method, apply_steps(
                    test, steps, 0.3, 0, model=model, method=method, batch_size=bs), bs), args.repeats)
            flag = "" if fn.needs_model or seconds / clean <= 1.3 else "  > 1.3"
            print(f"{name:<20} {m:<10} {seconds * 1e3:9.1f} {1 / seconds:8.1f} {seconds / clean:6.2f}{flag}")
    for name in PROTOCOLS.names():
        start = time.perf_counter()
        try:
            rows = attack_run(folder, protocol=name, attack_seeds=[0, 1], device=args.device)
        except Exception as e:  # noqa: BLE001 - a protocol that does not fit the data's modalities
            print(f"protocol {name}: skipped ({e})")
            continue
        seconds = time.perf_counter() - start
        print(f"protocol {name}: {len(rows)} rows in {seconds:.2f} s including one model load "
              f"({len(rows) / seconds:.1f} evaluations/s, {seconds / len(rows) / clean:.2f}x a clean pass each)")


if __name__ == "__main__":
    main()
