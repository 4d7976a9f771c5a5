"""Train on a prepared dataset larger than the memory the process may use (``data.load=mmap``).

Prepares a synthetic dataset of ``--gib`` GiB (two 1024-d vector modalities), then runs paired,
interleaved rounds (``--pairs``; which side goes first alternates) of ``mmbench train`` for one epoch:

- ``mmap``: ``--set data.load=mmap``, inside a memory cgroup limited to ``--limit-gib`` (cgroup v1
  or v2, when this process may create one; else unlimited, and the output says so);
- ``memory``: the default in-memory load, unlimited (it needs the whole dataset in RAM).

``--hidden-dim`` widens the encoders (``model.hidden_dim``; default: the model's own, a cheap MLP whose
steps cost about as much as reading the batch) to give each sample a realistic amount of compute.
With ``--show-oom`` one more in-memory run goes into the cgroup, to show that it cannot fit.
Reports median samples/s per side with the spread of the per-pair ratios, and each child's peak
``RssAnon`` (anonymous memory: what the process itself holds; mapped file pages are page cache the
kernel reclaims, which is why the mapped run stays within the limit) sampled every 50 ms.
Usage: python benchmarks/larger_than_ram.py --gib 3 --limit-gib 1 --pairs 5 --dir /tmp/ltr
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DIM = 1024
CGROUP_V1, CGROUP_V2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")


def prepare(data_dir: Path, gib: float) -> int:
    """The synthetic dataset ``ltr`` of about ``gib`` GiB (float32), prepared once; its training size."""
    from mmbench.data.store import load_meta
    from mmbench.data.store import prepare as do_prepare

    n = int(gib * (1 << 30)) // (2 * DIM * 4)
    options = {"num_classes": 10, "num_samples": n, "names": ["a", "b"], "kinds": ["vector", "vector"],
               "shapes": [str(DIM), str(DIM)], "signal": [3.0, 2.5], "degrade_fraction": [0.0, 0.0],
               "degrade_scale": [0.0, 0.0]}
    do_prepare("synthetic", None, data_dir, name="ltr", options=options)
    return load_meta("ltr", data_dir).splits["train"]


def make_cgroup(name: str, limit: int) -> Path | None:
    """A memory cgroup limited to ``limit`` bytes (no swap either), or None when none can be made."""
    try:
        if (CGROUP_V2 / "cgroup.controllers").exists():
            group = CGROUP_V2 / name
            group.mkdir(exist_ok=True)
            (group / "memory.max").write_text(str(limit))
            (group / "memory.swap.max").write_text("0")
        else:
            group = CGROUP_V1 / name
            group.mkdir(exist_ok=True)
            (group / "memory.limit_in_bytes").write_text(str(limit))
            if (group / "memory.memsw.limit_in_bytes").exists():
                (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        return group
    except OSError:
        return None


def rss_anon_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def train(data_dir: Path, results: Path, load: str, group: Path | None, sets: tuple[str, ...] = ()) -> dict:
    """One ``mmbench train`` epoch in a child (in ``group`` if given): samples/s and peak RssAnon."""
    cmd = [sys.executable, "-m", "mmbench", "train", "--dataset", "ltr", "--method", "joint", "--epochs", "1",
           "--data-dir", str(data_dir), "--results-dir", str(results), "--force",
           "--set", f"data.load={load}", "--set", "output.probe=false", "--set", "output.save_model=false",
           "--set", "optim.batch_size=256", *(x for s in sets for x in ("--set", s))]
    if group is not None:  # the child joins the cgroup before it starts python
        cmd = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_anon_mib(proc.pid))
        time.sleep(0.05)
    out = proc.stdout.read()
    summaries = sorted(results.glob("runs/*/summary.json"), key=lambda p: p.stat().st_mtime)
    if proc.returncode != 0 or not summaries:
        return {"load": load, "limited": group is not None, "returncode": proc.returncode,
                "peak_rss_anon_mib": peak, "output_tail": out[-300:]}
    s = json.loads(summaries[-1].read_text())
    return {"load": load, "limited": group is not None, "returncode": 0, "seconds_per_epoch": s["seconds_per_epoch"],
            "peak_rss_anon_mib": peak, "test_acc": s["test"]["acc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/mmbench_larger_than_ram"))
    ap.add_argument("--gib", type=float, default=3.0, help="size of the prepared dataset")
    ap.add_argument("--limit-gib", type=float, default=1.0, help="memory the mapped run may use")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--hidden-dim", type=int, help="encoder width (model.hidden_dim); default: the model's")
    ap.add_argument("--show-oom", action="store_true", help="also run the in-memory load inside the limit")
    a = ap.parse_args()
    data_dir, results = a.dir / "data", a.dir / "results"
    n_train = prepare(data_dir, a.gib)
    group = make_cgroup(f"mmbench_ltr_{os.getpid()}", int(a.limit_gib * (1 << 30)))
    sets = () if a.hidden_dim is None else (f"model.hidden_dim={a.hidden_dim}",)
    runs: dict[str, list[dict]] = {"mmap": [], "memory": []}
    try:
        for i in range(a.pairs):
            order = [("mmap", group), ("memory", None)]
            for load, g in order if i % 2 == 0 else order[::-1]:
                r = train(data_dir, results, load, g, sets)
                print(json.dumps(r), file=sys.stderr)
                runs[load].append(r)
        oom = train(data_dir, results, "memory", group, sets) if a.show_oom and group is not None else None
    finally:
        if group is not None:
            group.rmdir()
    ok = {k: [r for r in v if r["returncode"] == 0] for k, v in runs.items()}
    speed = {k: [n_train / r["seconds_per_epoch"] for r in v] for k, v in ok.items()}
    ratios = sorted(m / s for m, s in zip(speed["mmap"], speed["memory"]))
    print(json.dumps({
        "data_gib": a.gib, "hidden_dim": a.hidden_dim, "train_samples": n_train, "limit_gib": a.limit_gib if group else None,
        "pairs": a.pairs, "failed": {k: len(v) - len(ok[k]) for k, v in runs.items()},
        "samples_per_s_median": {k: statistics.median(v) for k, v in speed.items() if v},
        "mmap_over_memory_median": statistics.median(ratios) if ratios else None,
        "mmap_over_memory_range": [ratios[0], ratios[-1]] if ratios else None,
        "peak_rss_anon_mib_max": {k: max(r["peak_rss_anon_mib"] for r in v) for k, v in runs.items()},
        "in_memory_inside_limit": oom}, indent=1))


if __name__ == "__main__":
    main()
