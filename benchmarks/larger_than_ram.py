"""Train a small MLP for one epoch from memory-mapped arrays vs the same arrays in memory.

Writes ``--gib`` GiB of float32 ``.npy`` data, then runs paired, interleaved rounds (``--pairs``), each in a
fresh child process: ``mmap`` (batches gathered from a memmap by :class:`mmbench.data.mapped.MappedData`)
and ``memory`` (the first ``--memory-gib`` GiB loaded into RAM), plus one ``mmap`` epoch over all of it.
Reports median samples/s and the child's peak ``RssAnon`` (sampled after every batch): mapped file pages
are page cache the kernel reclaims, anonymous memory is what the process itself holds.
Usage: python benchmarks/larger_than_ram.py --gib 3 --memory-gib 0.5 --pairs 5 --dir /tmp/ltr
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM, CLASSES = 1024, 10


def rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_data(folder: Path, gib: float) -> int:
    n = int(gib * (1 << 30)) // (DIM * 4)
    folder.mkdir(parents=True, exist_ok=True)
    x_path = folder / "x.npy"
    if not x_path.exists() or np.load(x_path, mmap_mode="r").shape[0] != n:
        x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(n, DIM))
        rng = np.random.default_rng(0)
        for s in range(0, n, 65536):
            x[s:s + 65536] = rng.standard_normal((min(65536, n - s), DIM), dtype=np.float32)
        x.flush()
        del x
        np.save(folder / "y.npy", rng.integers(0, CLASSES, n))
    return n


def child(folder: Path, mode: str, samples: int, batch: int) -> dict:
    import torch

    from mmbench.data.mapped import MappedData
    from mmbench.data.types import MultimodalData

    torch.set_num_threads(1)
    x = np.load(folder / "x.npy", mmap_mode="r")[:samples]
    y = np.load(folder / "y.npy")[:samples]
    data = MappedData({"x": x}, y, None) if mode == "mmap" else \
        MultimodalData({"x": torch.from_numpy(np.array(x))}, torch.from_numpy(y), None)
    model = torch.nn.Sequential(torch.nn.Linear(DIM, 256), torch.nn.ReLU(), torch.nn.Linear(256, CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    peak = rss_anon_mib()
    start = time.perf_counter()
    for b in data.batches(batch, shuffle=True, generator=torch.Generator().manual_seed(0)):
        loss = torch.nn.functional.cross_entropy(model(b.inputs["x"]), b.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        peak = max(peak, rss_anon_mib())
    return {"mode": mode, "samples": samples, "seconds": time.perf_counter() - start,
            "samples_per_s": samples / (time.perf_counter() - start), "peak_rss_anon_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/mmbench_larger_than_ram"))
    ap.add_argument("--gib", type=float, default=3.0, help="size of the mapped dataset")
    ap.add_argument("--memory-gib", type=float, default=0.5, help="size of the in-memory comparison (same data)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SAMPLES", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.dir, a.child[0], int(a.child[1]), int(a.child[2]))))
        return
    n = write_data(a.dir, a.gib)
    small = min(n, int(a.memory_gib * (1 << 30)) // (DIM * 4))
    runs: dict[str, list[dict]] = {"mmap_full": [], "mmap": [], "memory": []}

    def run(mode: str, samples: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--dir", str(a.dir), "--child", mode, str(samples),
                              str(a.batch)], check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    for i in range(a.pairs):
        pair = [("mmap", small), ("memory", small)]
        for mode, samples in pair if i % 2 == 0 else pair[::-1]:  # alternate which goes first
            runs[mode].append(run(mode, samples))
    runs["mmap_full"].append(run("mmap", n))
    med = {k: statistics.median(r["samples_per_s"] for r in v) for k, v in runs.items()}
    print(json.dumps({"data_gib": a.gib, "samples": n, "memory_gib": a.memory_gib, "pairs": a.pairs,
                      "samples_per_s_median": med, "mmap_over_memory": med["mmap"] / med["memory"],
                      "peak_rss_anon_mib": {k: max(r["peak_rss_anon_mib"] for r in v) for k, v in runs.items()}},
                     indent=1))


if __name__ == "__main__":
    main()
