"""Throughput of the audio + frames prepare pipeline on a generated CREMA-D-shaped fixture.

    python benchmarks/prepare_throughput.py [--clips 2000] [--image-size 224] [--frames 1] [--workers N]

Writes ``--clips`` clips in CREMA-D's raw layout (``AudioWAV/<clip>.wav``: 16 kHz mono 16-bit, 2.5 s;
``Image-01-FPS/<clip>/``: 3 JPEG frames of 480x360, as CREMA-D's 1-fps extraction gives) plus
OGM-GE-style ``train.csv`` / ``test.csv``, then runs ``mmbench prepare cremad`` on it in a child
process (so its peak RSS is measured alone) with the default, published audio setting (22.05 kHz,
3 s, STFT 512 / 353) and prints clips/s, media files read per second, the prepared size, and the
child's peak resident memory. The store appends samples to the ``.npy`` files, so the peak stays
flat as ``--clips`` grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time, resource
import mmbench.data.audiovisual  # noqa: F401  (import cost outside the timing)
from mmbench.data.store import prepare
root, data, options, workers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
start = time.perf_counter()
prepare("cremad", root, data, options=options, force=True, workers=workers)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_fixture(root: Path, clips: int, seed: int = 0) -> int:
    """CREMA-D-shaped raw files; returns the number of files written."""
    from PIL import Image

    from mmbench.data.fixtures import CREMAD_EMOTIONS, tone, write_wav

    rng = np.random.default_rng(seed)
    (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:360, 0:480]
    base = np.stack([128 + 100 * np.sin(xx / 23.0 + c) * np.cos(yy / 31.0 - c) for c in range(3)], axis=2)
    base = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)  # smooth, like video frames
    rows = {"train": [], "test": []}
    files = 0
    for i in range(clips):
        k = i % len(CREMAD_EMOTIONS)
        clip = f"{1001 + i // 600}_{i:05d}_{CREMAD_EMOTIONS[k]}_XX"
        write_wav(root / "AudioWAV" / f"{clip}.wav", tone(k, 2.5, 16000, rng), 16000)
        folder = root / "Image-01-FPS" / clip
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(3):
            Image.fromarray(np.roll(base, 7 * i + f, axis=1)).save(folder / f"{f:05d}.jpg", quality=85)
        files += 4
        rows["test" if i % 10 == 0 else "train"].append(f"{clip},{CREMAD_EMOTIONS[k]}\n")
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("".join(lines))
    return files


def ensure_fixture(raw: Path, clips: int) -> None:
    """Write the fixture into ``raw`` unless one is there already."""
    if not (raw / "train.csv").exists():
        start = time.perf_counter()
        written = make_fixture(raw, clips)
        print(f"fixture: {clips} clips, {written} files in {time.perf_counter() - start:.1f} s ({raw})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="loader threads (default: the store's)")
    parser.add_argument("--keep", type=Path, default=None, help="reuse / keep the fixture in this folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mmbench-prepare-"))
    raw = args.keep or tmp / "raw"
    ensure_fixture(raw, args.clips)
    options = {"image_size": args.image_size, "frames": args.frames}
    out = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(tmp / "data"), json.dumps(options),
                          json.dumps(args.workers)], check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    meta = json.loads((tmp / "data" / "cremad" / "meta.json").read_text())
    clips = sum(meta["splits"].values())
    size_mb = sum(p.stat().st_size for p in (tmp / "data" / "cremad").rglob("*.npy")) / 1e6
    files = clips * (1 + args.frames)  # one WAV and `frames` JPEGs decoded per clip
    print(f"prepare cremad: {clips} clips in {result['seconds']:.1f} s = {clips / result['seconds']:.0f} clips/s, "
          f"{files / result['seconds']:.0f} files/s read (1 wav + {args.frames} jpg per clip); "
          f"audio {meta['modalities'][0]['shape']}, visual {meta['modalities'][1]['shape']}; "
          f"{size_mb:.0f} MB written; peak RSS {result['peak_rss_mb']:.0f} MB "
          f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
