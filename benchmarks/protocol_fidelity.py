"""Peer vs mmbench (old and new protocol versions) on the same inputs: the figures of docs/protocols.md.

Run: ``MMBENCH_REFERENCE_DIR=/work/ref python benchmarks/protocol_fidelity.py`` (needs the MultiBench
and QMF checkouts; the helpers are the fidelity tests' own, tests/test_protocol_fidelity.py).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mmbench.attacks.multibench import multibench_visual
from mmbench.attacks.noise import gaussian
from mmbench.attacks.protocols import resolve_protocol
from mmbench.attacks.runner import apply_steps, build_curves
from mmbench.data.types import ModalitySpec
from tests import test_protocol_fidelity as t


def row(name: str, peer: float, old: float | str, new: float | str, fmt: str = "{:.3f}") -> None:
    cell = [fmt.format(v) if isinstance(v, float) else str(v) for v in (peer, old, new)]
    print(f"| {name} | {' | '.join(cell)} |")


def timeseries() -> None:
    x, p = t._series(), 0.3
    for family in ("affect", "mimic", "stocks"):
        peer = t._stats(t._peer(family, x, p), x)
        old = t._stats(t._mmbench("multibench@2", "timeseries", {"vision": x}, p)["vision"], x)
        new = t._stats(t._mmbench(f"multibench@3:{family}", "timeseries", {"vision": x}, p)["vision"], x)
        for key in ("whole_samples", "entries_in_kept", "steps_in_kept", "within_sample_sd"):
            row(f"time series, {family} loader, p=0.3: {key}", peer[key], old[key], new[key])
    audio_old = t._stats(t._mmbench("multibench@2", "audio", {"audio": x}, p)["audio"], x)
    audio_new = t._stats(t._mmbench("multibench@3", "audio", {"audio": x}, p)["audio"], x)
    peer = t._stats(t._peer("affect", x, p), x)
    for key in ("whole_samples", "entries_in_kept"):
        row(f"audio (affect loader), p=0.3: {key}", peer[key], audio_old[key], audio_new[key])


def all_curve() -> None:
    ts = t._timeseries()
    arrays = {m: t._series(seed=k) for k, m in enumerate(("vision", "audio", "words"))}
    for i in (3, 6, 9):
        np.random.seed(0)
        peer = ts.add_timeseries_noise([a.copy() for a in arrays.values()], noise_level=i / 30, rand_drop=False)
        old = t._mmbench("multibench@2", "all", arrays, i / 10)
        new = t._mmbench("multibench@3", "all", arrays, i / 10)
        stats = [np.mean([t._stats(y, arrays[m])[k] for m, y in zip(arrays, ys)])
                 for ys in (peer, list(old.values()), list(new.values())) for k in ("whole_samples", "entries_in_kept")]
        row(f'"all" i={i}: whole (modality, sample) pairs zeroed', *stats[0::2])
        row(f'"all" i={i}: entries zeroed in the other pairs', *stats[1::2])


def grey() -> None:
    data, p = t._grey_images(3000), 0.5
    x, spec = data.inputs["image"], data.meta.modalities["image"]
    on = multibench_visual(x, p, torch.Generator().manual_seed(0), spec, grey_as_rgb=True)
    off = multibench_visual(x, p, torch.Generator().manual_seed(0), spec)
    shifted = (on != off).flatten(1).any(1).float().mean().item()
    row("grey images, p=0.5: share shifted by white balance / colorize", (1 - p) * (1 - (1 - p) ** 2), 0.0, shifted)
    vr = t.load_module("MultiBench", "robustness/visual_robust.py")
    from PIL import Image

    grey_rgb = Image.fromarray(np.full((4, 4), 128, dtype=np.uint8)).convert("RGB")
    for name, fn in (("white balance", vr.WB), ("colorize", vr.colorize)):
        shifts = []
        for s in range(2000):
            np.random.seed(s)
            shifts.append(int(np.asarray(fn(grey_rgb, 1.0).convert("L"))[0, 0]) - 128)
        print(f"| MultiBench {name} on a grey 128 image: mean shift {np.mean(shifts):+.1f} levels |")


def text() -> None:
    tr = t._peer_text()
    texts = t._word_texts()
    source = t._source(texts, 20)
    data = t._text_data(source)
    clean = data.inputs["text"]
    for p in (0.3, 0.9):
        np.random.seed(0)
        noisy = tr.add_text_noise(texts, noise_level=p)
        peer = np.mean([a != b for a, b in zip((w for s in texts for w in s.split()), (w for s in noisy for w in s.split()))])
        rates = []
        for spec in ("multibench@2", "multibench@3"):
            cv = next(c for c in build_curves(data, protocol=resolve_protocol(spec)) if c.name == "text")
            out = apply_steps(data, cv.steps, p, 0, True, key="text", texts={"text": source}).data.inputs["text"]
            rates.append((out != clean).float().mean().item())
        row(f"text, p={p}: share of words changed", peer, *rates)
    mvsa = t._mvsa_texts()
    source = t._source(mvsa)
    data = t._text_data(source)
    clean_len = (data.inputs["text"] != 0).sum(1).float()
    rng = np.random.RandomState(0)
    peer = torch.from_numpy(source.encode([t._qmf_blank(s, 0.5, rng) for s in mvsa]))
    peer_len = (peer != 0).sum(1).float()
    out = {}
    for spec in ("qmf@2024", "qmf"):
        cv = next(c for c in build_curves(data, protocol=resolve_protocol(spec)) if c.name == "gaussian")
        st, ms = next((st, ms) for st, ms in cv.steps if "blank" in st.attack)  # every text, as the peer column
        ids = apply_steps(data, [(replace(st, fraction=1.0), ms)], 5.0, 0, True, key="t",
                          texts={"text": source}).data.inputs["text"]
        out[spec] = ((clean_len - (ids != 0).sum(1).float()).mean().item())
    row(f"QMF text eps=5 on MVSA test ({clean_len.mean():.1f} tokens): tokens lost per text",
        (clean_len - peer_len).mean().item(), out["qmf@2024"], out["qmf"], "{:.2f}")


def qmf_share() -> None:
    for hw in ((500, 500), (480, 640)):
        n = 2048
        rng = np.random.default_rng(5)
        words = [f"word{chr(97 + i % 26)}{i}" for i in range(50)]
        texts = [" ".join(rng.choice(words, size=8)) for _ in range(n)]
        source = t._source(texts, 16)
        source.image_hw = np.tile(hw, (n, 1))
        data = t._text_data(source)
        data.inputs["image"] = torch.full((n, 3, 8, 8), 128, dtype=torch.uint8)
        data.meta.modalities["image"] = ModalitySpec("image", "image", (3, 8, 8), dtype="uint8")
        shares = {}
        for spec in ("qmf@2024", "qmf:coupled"):
            cv = next(c for c in build_curves(data, protocol=resolve_protocol(spec)) if c.name == "gaussian")
            c = apply_steps(data, cv.steps, 5.0, 0, True, key="g", texts={"text": source})
            shares[spec] = c.shares["text"]
            noised = (c.data.inputs["image"] != data.inputs["image"]).flatten(1).any(1).numpy()
        peer = t._qmf_gaussian_run_text(texts, source.image_hw, noised, 0.5).mean()
        row(f"QMF Gaussian eps=5, all images {hw[0]}x{hw[1]}: realised text share", peer, shares["qmf@2024"],
            shares["qmf:coupled"])


def float64() -> None:
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(8, 224, 224, 3), dtype=np.uint8)
    spec = ModalitySpec("image", "image", (3, 224, 224), dtype="uint8")
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
    opts = {"unit": "pixel", "channel_shared": True, "fixed_pattern": True, "clip": "wrap"}
    for sigma in (50.0, 100.0):
        peer = np.stack([t._qmf_gaussian(im, sigma) for im in imgs]).transpose(0, 3, 1, 2)
        old = (gaussian(x, sigma, torch.Generator(), spec, **opts).numpy() != peer).mean()
        new = (gaussian(x, sigma, torch.Generator(), spec, **opts, float64=True).numpy() != peer).mean()
        row(f"QMF faithful Gaussian sigma={sigma:g}, 224x224: values differing from QMF", 0.0, old, new, "{:.2e}")


if __name__ == "__main__":
    print("| transform | peer | mmbench old | mmbench new |\n|---|---|---|---|")
    timeseries()
    all_curve()
    grey()
    text()
    qmf_share()
    float64()
