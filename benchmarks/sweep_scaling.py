"""Sweep throughput: the same 24-run grid on ``mfeat`` (pix+mor) with each executor.

Runs the grid (joint, joint_uni, ogm_ge, unimodal(pix) x 6 seeds, the dataset's default
recipe: 30 epochs) into fresh results folders with ``inline`` (this process, torch's default
threads), ``process`` (2 workers, every thread pool of a worker at 1 thread) and ``ray`` (a local
instance with 2 CPUs, ``num_cpus=1`` per run). ``inline:1`` is a diagnostic row: inline with torch
and BLAS at 1 thread. ``--repeat N`` runs the executors in rounds (inline, process, ray, inline,
...) and reports the median wall time of each. ``--warm`` measures the steady state of a long sweep:
each executor's workers are started and warmed (1-epoch runs until every worker process finished
one) before the clock starts, so the workers' one-time imports are left out.

Prints runs/minute, the speed-up over ``inline`` and the scaling efficiency (speed-up / workers),
the mean time of a run inside its task, the seconds of the wall time not spent inside tasks
(``wall - task seconds / workers``: worker start-up and imports, idle tail), and Ray's per-task
overhead: the round trip of an empty task, and per run the driver-observed time minus the time
spent inside the task. Wall times include starting the process pool's workers and the first
import of torch, mmbench and torch._dynamo in each worker; Ray's cluster start is shown
separately. Target on 2 cores: ``process`` and ``ray`` >= 1.7x ``inline``. Usage:

    python benchmarks/sweep_scaling.py [--epochs N] [--seeds 6] [--repeat 3] [--warm] [--executors inline,process,ray]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

GRID = """\
datasets:
  - {{name: mfeat, modalities: [pix, mor]}}
methods:
  - joint
  - joint_uni
  - ogm_ge
  - {{name: unimodal, modality: pix}}
seeds: {seeds}
{extra}
"""


def warm_up(executor, warm_grid: str, results: str, data_dir: str) -> None:
    """Every worker imports torch, mmbench, torch._dynamo and scikit-learn: 1-epoch runs until each worker
    process has finished at least one."""
    from concurrent.futures import wait

    from mmbench.sweep import Task, expand

    runs = expand(warm_grid, results, data_dir).runs
    seen: set[str] = set()
    while len(seen) < executor.capacity:
        assert len(runs) >= executor.capacity, "not enough warm-up runs"
        batch, runs = runs[: executor.capacity], runs[executor.capacity:]
        futures = [executor.submit(executor.prepare(Task(run))) for run in batch]
        wait(futures)
        assert all(f.result().status == "complete" for f in futures)
        seen |= {f.result().worker for f in futures}


def timed_sweep(name: str, grid_path: str, results: str, data_dir: str, workers: int,
                warm_grid: str | None = None) -> dict:
    from mmbench.sweep import expand, make_executor, run_sweep
    from mmbench.sweep.worker import _set_threads

    grid = expand(grid_path, results, data_dir)
    executor_name, _, threads = name.partition(":")
    if threads:  # inline:1
        import torch

        previous = torch.get_num_threads()
        _set_threads(int(threads))
    start = time.perf_counter()
    executor = make_executor(executor_name, None if executor_name == "inline" else workers)
    if warm_grid:  # steady state: the workers' start-up is not in the wall time
        warm_up(executor, warm_grid, results + "-warm-up", data_dir)
        start = time.perf_counter()
    submitted: dict[str, float] = {}
    overheads: list[float] = []

    def on_event(kind, run, result, report):
        now = time.perf_counter()
        if kind == "start":
            submitted[run.run_id] = now
        elif kind == "finish":
            overheads.append(now - submitted[run.run_id] - result.seconds)

    report = run_sweep(grid, executor, on_event=on_event)
    wall = time.perf_counter() - start
    if threads:
        _set_threads(previous)
    assert report.complete == len(grid.runs) and not report.failed, report
    task_seconds = sum(r.seconds for r in report.results)
    return {"executor": name, "runs": len(grid.runs), "wall": wall, "capacity": executor.capacity,
            "per_run": task_seconds / len(grid.runs), "outside": wall - task_seconds / executor.capacity, "workers": len({r.worker for r in report.results}),
            "overhead_ms": 1000 * statistics.median(overheads)}


def ray_round_trip_ms(n: int = 200) -> float:
    import ray

    @ray.remote(num_cpus=1)
    def noop():
        return None

    ray.get(noop.remote())
    start = time.perf_counter()
    for _ in range(n):
        ray.get(noop.remote())
    return 1000 * (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the dataset's default epochs (30)")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the executors; the median is reported")
    parser.add_argument("--executors", default="inline,process,ray", help="inline, inline:1, process, ray")
    parser.add_argument("--warm", action="store_true", help="steady state: start and warm the workers (1-epoch "
                        "runs until each has finished one) before the clock starts")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    from mmbench.data.store import prepare

    tmp = Path(tempfile.mkdtemp(prefix="sweep-scaling-"))
    data_dir = args.data_dir or str(tmp / "data")
    prepare("mfeat", data_dir=data_dir)
    extra = f"set: {{optim.epochs: {args.epochs}}}" if args.epochs else ""
    grid_path = tmp / "grid.yaml"
    grid_path.write_text(GRID.format(seeds=args.seeds, extra=extra))
    warm_grid = None
    if args.warm:
        warm_grid = str(tmp / "warm.yaml")
        Path(warm_grid).write_text(GRID.format(seeds=list(range(100, 110)), extra="set: {optim.epochs: 1}"))
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; load average before: {os.getloadavg()[0]:.2f}")

    names = args.executors.split(",")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    ray_init, round_trip = [], []
    for round_ in range(args.repeat):
        for name in names:
            if name == "ray":
                import ray

                start = time.perf_counter()
                ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
                ray_init.append(time.perf_counter() - start)
            results = tmp / f"results-{name.replace(':', '-')}-{round_}"
            runs[name].append(timed_sweep(name, str(grid_path), str(results), data_dir, args.workers, warm_grid))
            if name == "ray":
                round_trip.append(ray_round_trip_ms())
                ray.shutdown()
            print(f"  round {round_ + 1} {name}: {runs[name][-1]['wall']:.1f}s", flush=True)

    def median_row(rows: list[dict]) -> dict:
        return sorted(rows, key=lambda r: r["wall"])[len(rows) // 2]

    rows = [median_row(runs[n]) for n in names]
    base = next((r["wall"] for r in rows if r["executor"] == "inline"), None)
    repeat = (f", median of {args.repeat} rounds" if args.repeat > 1 else "") + (
        ", warm workers (steady state)" if args.warm else ", workers started inside the wall time")
    print(f"\n{rows[0]['runs']}-run grid on mfeat[pix+mor] (4 methods x {args.seeds} seeds), "
          f"{args.workers} workers{repeat}\n")
    print("| executor | wall s | runs/min | speed-up vs inline | scaling efficiency | s/run in task | "
          "wall outside tasks s | worker processes | median per-run overhead ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speedup = base / r["wall"] if base else float("nan")
        eff = speedup / r["capacity"]
        each = ", ".join(f"{x['wall']:.1f}" for x in runs[r["executor"]])
        walls = f" ({each})" if args.repeat > 1 else ""
        print(f"| {r['executor']} | {r['wall']:.1f}{walls} | {60 * r['runs'] / r['wall']:.1f} | {speedup:.2f}x | "
              f"{eff:.0%} | {r['per_run']:.2f} | {r['outside']:.1f} | {r['workers']} | {r['overhead_ms']:.1f} |")
    if ray_init:
        print(f"\nRay: local instance start {statistics.median(ray_init):.1f}s (not in the wall time); "
              f"empty-task round trip {statistics.median(round_trip):.2f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
