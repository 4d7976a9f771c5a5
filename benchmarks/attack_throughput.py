"""Cost of evaluating one trained run under attack, relative to a plain test-set forward pass.

Trains one small run (or takes ``--run FOLDER``), loads it once, then times for every registered
attack that fits the data:

- ``single``: one evaluation = corrupt the test set (fresh draws) + one forward pass;
- ``sweep``: one evaluation inside a level sweep as ``mmbench attack`` runs it (``--levels``
  nonzero levels x ``--seeds`` attack seeds through the runner, the draws made once per curve
  and seed), per evaluation;

each against the same number of clean evaluations, timed in alternation (the ratio is the
median of the per-pair ratios, so a load change on a shared machine hits both sides of a pair
alike; ``pairing.py``). Then whole protocols through ``attack_run`` (with the model load and the CSV write).
Target: sweep ratio <= 1.3 for non-adversarial attacks. Usage:

    python benchmarks/attack_throughput.py [--dataset synthetic] [--modalities pix,mor] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from pairing import MIN_ROUNDS, paired_seconds  # benchmarks/ is on sys.path when this script runs


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
    parser.add_argument("--modalities", default=None, help="comma-separated modalities to train on (default: all)")
    parser.add_argument("--data-dir", default=None, help="prepared datasets (default: a temporary folder)")
    parser.add_argument("--run", default=None, help="an existing run folder (default: train one)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levels", default="0.1,0.2,0.3,0.5,0.7", help="nonzero levels of the sweep")
    parser.add_argument("--seeds", type=int, default=2, help="attack seeds of the sweep")
    args = parser.parse_args()

    import torch

    from mmbench.attacks.runner import apply_steps, attack_run, build_curves, evaluate_corruption, run_curves
    from mmbench.config import resolve
    from mmbench.evaluation import evaluate
    from mmbench.registry import ATTACKS, PROTOCOLS
    from mmbench.results import RunFolder
    from mmbench.run import load_trained, train_run

    torch.set_num_threads(args.threads)
    if args.run:
        folder = RunFolder(args.run)
    else:
        tmp = tempfile.mkdtemp(prefix="mmbench-attack-bench-")
        flags = {"data.dataset": args.dataset, "method.name": "joint", "optim.epochs": args.epochs,
                 "data.modalities": args.modalities.split(",") if args.modalities else None,
                 "output.data_dir": args.data_dir or f"{tmp}/data", "output.results_dir": f"{tmp}/results"}
        folder, _ = train_run(resolve(flags=flags))
    cfg, method, model, test = load_trained(folder, args.device, args.data_dir)
    bs = cfg.optim.batch_size * 4

    def clean_pass():
        return evaluate(model, method, test, bs)

    clean = median_seconds(clean_pass, args.repeats)
    levels = [float(v) for v in args.levels.split(",")]
    seeds = list(range(args.seeds))
    sweep_n = len(levels) * len(seeds)

    def clean_sweep():
        for _ in range(sweep_n):
            clean_pass()

    print(f"run {folder.run_id}: {len(test)} test samples, device {args.device}, {torch.get_num_threads()} threads")
    print(f"clean evaluation: {clean * 1e3:.2f} ms ({1 / clean:.1f} evaluations/s)")
    print(f"sweep: levels {levels} x {len(seeds)} attack seeds = {sweep_n} evaluations per curve")
    print(f"{'attack':<20} {'modality':<10} {'single ms':>10} {'ratio':>6} {'sweep ms/eval':>14} {'eval/s':>8} {'ratio':>6} [range]")
    worst = 0.0
    for name in ATTACKS.names():
        fn = ATTACKS.get(name)
        for m in test.modalities:
            if test.meta.modalities[m].kind not in fn.kinds:
                continue
            curve = build_curves(test, attacks=[name], modalities=[m])[0]
            one, one_ratio = paired_seconds(clean_pass, lambda curve=curve: evaluate_corruption(model, method, apply_steps(
                test, curve.steps, levels[0], 0, model=model, method=method, batch_size=bs), bs), args.repeats)
            sweep, sweep_ratio = paired_seconds(clean_sweep, lambda curve=curve: run_curves(
                model, method, test, [curve], levels, seeds, bs), max(MIN_ROUNDS, args.repeats // 3))
            per_eval = sweep / sweep_n
            checked = not fn.needs_model  # the 1.3 target is for non-adversarial attacks
            worst = max(worst, sweep_ratio.median) if checked else worst
            flag = "  > 1.3" if checked and sweep_ratio.median > 1.3 else ""
            print(f"{name:<20} {m:<10} {one * 1e3:10.2f} {one_ratio.median:6.2f} {per_eval * 1e3:14.2f} "
                  f"{1 / per_eval:8.1f} {sweep_ratio.median:6.2f} [{sweep_ratio.low:.2f}-{sweep_ratio.high:.2f}]{flag}")
    print(f"worst sweep ratio of a non-adversarial attack: {worst:.2f} (target <= 1.3)")
    for name in PROTOCOLS.names():
        start = time.perf_counter()
        try:
            rows = attack_run(folder, protocol=name, attack_seeds=[0, 1], device=args.device, data_dir=args.data_dir)
        except Exception as e:  # noqa: BLE001 - a protocol that does not fit the data's modalities
            print(f"protocol {name}: skipped ({e})")
            continue
        seconds = time.perf_counter() - start
        print(f"protocol {name}: {len(rows)} rows in {seconds:.2f} s including one model load "
              f"({len(rows) / seconds:.1f} evaluations/s, {seconds / len(rows) / clean:.2f}x a clean pass each)")


if __name__ == "__main__":
    main()
