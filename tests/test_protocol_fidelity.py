"""Protocols against the peers' own transforms on the same inputs: rates and statistics.

Each test runs the peer's rule -- MultiBench's ``robustness/*.py`` loaded from
``$MMBENCH_REFERENCE_DIR/MultiBench`` (skipped without it), or a transcription of QMF's numpy
code where loading it would drag in its training stack -- beside mmbench's protocol, as the
peer's loaders call it, and compares what each does to the data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mmbench.attacks.noise import gaussian
from mmbench.attacks.protocols import resolve_protocol
from mmbench.attacks.runner import apply_steps, build_curves
from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
from mmbench.errors import MMBenchError
from tests.reference import load_module, reference_dir

N, T, F = 3000, 12, 4  # samples, time steps, features


def _series(n: int = N, seed: int = 0) -> np.ndarray:
    """``[N, T, F]`` features far from zero, so that zeros are drops (MultiBench's layout)."""
    return np.random.default_rng(seed).normal(size=(n, T, F)) + 5.0


def _data(arrays: dict[str, np.ndarray]) -> MultimodalData:
    """Sequences in mmbench's layout ``[N, C, T]`` (time last), training std 1 (sigma = p)."""
    n = len(next(iter(arrays.values())))
    specs = {m: ModalitySpec(m, "sequence", (F, T), std=1.0) for m in arrays}
    return MultimodalData({m: torch.from_numpy(a.transpose(0, 2, 1).astype(np.float32)) for m, a in arrays.items()},
                          torch.zeros(n, dtype=torch.long), DatasetMeta("d", "x", ("a", "b"), specs, {"test": n}))


def _mmbench(protocol: str, curve: str, arrays: dict[str, np.ndarray], p: float, seed: int = 0) -> dict[str, np.ndarray]:
    data = _data(arrays)
    cv = next(c for c in build_curves(data, protocol=resolve_protocol(protocol)) if c.name == curve)
    out = apply_steps(data, cv.steps, p, seed, cv.independent, key=curve).data
    return {m: out.inputs[m].numpy().transpose(0, 2, 1).astype(np.float64) for m in arrays}


def _stats(y: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """What a time-series corruption did: whole samples zeroed, entries zeroed in the others, and
    how the additive noise is shared (the spread of the offsets inside a sample and inside a step)."""
    zero = y == 0
    whole = zero.all(axis=(1, 2))
    kept = ~whole
    d = np.where(zero, np.nan, y - x)[kept]
    with warnings.catch_warnings():  # a step dropped whole has no spread
        warnings.simplefilter("ignore", RuntimeWarning)
        within_step = np.nanmean(np.nanstd(d, axis=2))
    return {"whole_samples": whole.mean(), "entries_in_kept": zero[kept].mean(),
            "steps_in_kept": zero[kept].all(axis=2).mean(),
            "offset_sd": np.nanstd(np.nanmean(d, axis=(1, 2))),
            "within_sample_sd": np.nanmean(np.nanstd(d, axis=(1, 2))),
            "within_step_sd": within_step}


def _timeseries():
    return load_module("MultiBench", "robustness/timeseries_robust.py")


def _peer(family: str, x: np.ndarray, p: float) -> np.ndarray:
    """``add_timeseries_noise`` called as MultiBench's loader of ``family`` calls it (49f9be2)."""
    ts = _timeseries()
    np.random.seed(0)
    if family == "affect":  # datasets/affect/get_data.py: [X] wrapped in a list, rand_drop=False
        return ts.add_timeseries_noise([x.copy()], noise_level=p, rand_drop=False)[0]
    if family == "mimic":  # datasets/mimic/get_data.py: [[x_1, ..., x_N]]
        return np.stack(ts.add_timeseries_noise([[s.copy() for s in x]], noise_level=p)[0])
    return ts.add_timeseries_noise(x.copy(), noise_level=p)  # datasets/stocks/get_data.py: the bare array


@pytest.mark.parametrize("family", ["affect", "mimic", "stocks"])
@pytest.mark.parametrize("p", [0.3, 0.6])
def test_multibench_v3_timeseries_as_each_loader_calls_it(family, p):
    x = _series()
    peer = _stats(_peer(family, x, p), x)
    ours = _stats(_mmbench(f"multibench@3:{family}", "timeseries", {"vision": x}, p)["vision"], x)
    for key in ("whole_samples", "entries_in_kept", "steps_in_kept"):
        assert ours[key] == pytest.approx(peer[key], abs=0.05), key  # 4 sd of the difference at N = 3000
    assert ours["offset_sd"] == pytest.approx(peer["offset_sd"], rel=0.12)
    for key in ("within_sample_sd", "within_step_sd"):  # 0 where the noise is one offset per sample / step
        assert ours[key] == pytest.approx(peer[key], rel=0.12, abs=1e-3), key


def test_multibench_v3_affect_zeroes_whole_samples_where_v2_zeroed_entries():
    x, p = _series(), 0.3
    peer = _stats(_peer("affect", x, p), x)
    assert peer["whole_samples"] == pytest.approx(p, abs=0.04) and peer["entries_in_kept"] == 0
    old = _mmbench("multibench@2", "timeseries", {"vision": x}, p)["vision"]
    assert _stats(old, x)["whole_samples"] < 0.05 and (old == 0).mean() > 0.6  # per-entry and span-3 drops


@pytest.mark.parametrize("i", [3, 6, 9])
def test_multibench_v3_all_curve_zeroes_whole_modality_sample_pairs_at_p_over_3(i):
    ts = _timeseries()
    arrays = {m: _series(seed=k) for k, m in enumerate(("vision", "audio", "words"))}
    np.random.seed(0)  # datasets/affect/get_data.py: every modality in one list, noise_level = i / (10 * 3)
    peer = ts.add_timeseries_noise([a.copy() for a in arrays.values()], noise_level=i / (10 * 3), rand_drop=False)
    ours = _mmbench("multibench@3", "all", arrays, i / 10)
    for m, y_peer in zip(arrays, peer):
        a, b = _stats(y_peer, arrays[m]), _stats(ours[m], arrays[m])
        assert a["whole_samples"] == pytest.approx(i / 30, abs=0.03)
        assert b["whole_samples"] == pytest.approx(a["whole_samples"], abs=0.03)
        assert a["entries_in_kept"] == b["entries_in_kept"] == 0, "nothing partial"
        assert b["offset_sd"] == pytest.approx(a["offset_sd"], rel=0.12)
        assert b["within_sample_sd"] == pytest.approx(a["within_sample_sd"], abs=1e-3)


def test_multibench_v3_audio_gets_the_loader_time_series_noise():
    x, p = _series(), 0.3
    audio = _mmbench("multibench@3", "audio", {"audio": x}, p)["audio"]
    peer = _stats(_peer("affect", x, p), x)
    assert _stats(audio, x)["whole_samples"] == pytest.approx(peer["whole_samples"], abs=0.04)
    assert _stats(audio, x)["within_sample_sd"] < 1e-3


def _grey_images(n: int, value: int = 128) -> MultimodalData:
    spec = ModalitySpec("image", "image", (1, 8, 8), dtype="uint8", mean=128.0, std=50.0)
    return MultimodalData({"image": torch.full((n, 1, 8, 8), value, dtype=torch.uint8)}, torch.zeros(n, dtype=torch.long),
                          DatasetMeta("d", "x", ("a", "b"), {"image": spec}, {"test": n}))


def _peer_colour_shifts(value: int) -> set[int]:
    """Grey levels MultiBench's white balance and colorize (then ``convert('L')``) give a grey pixel."""
    from PIL import Image

    vr = load_module("MultiBench", "robustness/visual_robust.py")
    grey = Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).convert("RGB")
    out = set()
    for seed in range(400):  # enough draws to meet every Kelvin entry and colour
        np.random.seed(seed)
        wb = vr.WB(grey, 1.0)
        col = vr.colorize(grey, 1.0)
        both = vr.colorize(wb, 1.0)
        out |= {int(np.asarray(im.convert("L"))[0, 0]) - value for im in (wb, col, both)}
    return out


def test_multibench_v3_one_channel_images_take_the_colour_steps_as_multibench():
    from mmbench.attacks.multibench import multibench_visual

    data, p = _grey_images(3000), 0.5
    x, spec = data.inputs["image"], data.meta.modalities["image"]
    on = multibench_visual(x, p, torch.Generator().manual_seed(0), spec, grey_as_rgb=True)
    off = multibench_visual(x, p, torch.Generator().manual_seed(0), spec)
    diff = (on.float() - off.float()).flatten(1)
    shifted = (diff != 0).any(1)
    shifts = {int(d[d != 0].median()) for d in diff[shifted]}  # one shift per image (rotation edges aside)
    allowed = _peer_colour_shifts(128) | _peer_colour_shifts(127)  # 127: after the inversion step
    assert all(any(abs(s - a) <= 1 for a in allowed) for s in shifts), sorted(shifts)
    # white balance or colorize fires on an image the grayscale step left alone: (1 - p)(1 - (1 - p)^2)
    assert shifted.float().mean().item() == pytest.approx((1 - p) * (1 - (1 - p) ** 2), abs=0.03)
    v2 = resolve_protocol("multibench@2").conditions[0].steps[0]
    assert not v2.options.get("grey_as_rgb") and resolve_protocol("multibench").conditions[0].steps[0].options["grey_as_rgb"]


# -- QMF ----------------------------------------------------------------------------------------


def _qmf_gaussian(img: np.ndarray, variance: float) -> np.ndarray:
    """Transcription of QMF's ``AddGaussianNoise.__call__`` (text-image-classification/src/data/dataset.py,
    fe6c4c6) on an ``[H, W, C]`` uint8 array."""
    h, w, c = img.shape
    np.random.seed(0)
    noise = 1.0 * np.random.normal(loc=0.0, scale=variance, size=(h, w, 1))
    noise = np.repeat(noise, c, axis=2)
    out = noise + img
    out[out > 255] = 255
    return out.astype("uint8")


@pytest.mark.parametrize("sigma", [50.0, 100.0])
def test_qmf_faithful_gaussian_is_bit_exact_on_224_images_in_float64(sigma):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(4, 224, 224, 3), dtype=np.uint8)
    spec = ModalitySpec("image", "image", (3, 224, 224), dtype="uint8")
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
    opts = {"unit": "pixel", "channel_shared": True, "fixed_pattern": True, "clip": "wrap"}
    peer = np.stack([_qmf_gaussian(im, sigma) for im in imgs]).transpose(0, 3, 1, 2)
    new = gaussian(x, sigma, torch.Generator(), spec, **opts, float64=True).numpy()
    assert np.array_equal(new, peer)
    old = gaussian(x, sigma, torch.Generator(), spec, **opts).numpy()  # float32: version 2024
    assert 0 < (old != peer).mean() < 1e-3 and np.abs(old.astype(int) - peer.astype(int)).max() in (1, 255)
    opts_v = next(st for st in resolve_protocol("qmf").conditions[0].steps if st.attack == "gaussian").options
    assert opts_v["float64"] and "float64" not in resolve_protocol("qmf@2024").conditions[0].steps[0].options


def _audio_visual(n=50) -> MultimodalData:
    meta = DatasetMeta("d", "x", ("a", "b"), {
        "audio": ModalitySpec("audio", "image", (1, 8, 30), std=2.0),
        "visual": ModalitySpec("visual", "video", (1, 3, 6, 6), dtype="uint8", mean=120.0, std=60.0),
        "depth": ModalitySpec("depth", "image", (1, 6, 6), std=1.0)}, {"test": n})
    return MultimodalData({"audio": torch.rand(n, 1, 8, 30), "visual": torch.zeros(n, 1, 3, 6, 6, dtype=torch.uint8),
                           "depth": torch.rand(n, 1, 6, 6)}, torch.zeros(n, dtype=torch.long), meta)


@pytest.mark.parametrize("name", ["qmf", "qmf_rgbd"])
def test_qmf_pixel_steps_reach_uint8_images_only(name):
    data = _audio_visual()
    with pytest.raises(MMBenchError, match="'depth' is stored as float32"):
        build_curves(data, protocol=resolve_protocol(name))
    picked = build_curves(data, protocol=resolve_protocol(name), modalities=["audio", "visual"])
    assert {m for c in picked for _, ms in c.steps for m in ms} == {"visual"}, "the spectrogram is left out"
    old = build_curves(data, protocol=resolve_protocol(f"{name}@2024"))
    assert "audio" in {m for c in old for _, ms in c.steps for m in ms}, "2024 as first released"


# -- text -----------------------------------------------------------------------------------------


def _qmf_blank(text: str, p: float, rng: np.random.RandomState) -> str:
    """Transcription of QMF's test-time word replacement (JsonlDataset.__getitem__, fe6c4c6) once the
    sample is chosen: each ``split(' ')`` field becomes ``_`` with probability p."""
    words = text.split(" ")
    for i in range(len(words)):
        if rng.choice([0, 1], p=[1 - p, p]):
            words[i] = "_"
    return " ".join(words)


def _mvsa_texts() -> list[str]:
    import json

    path = reference_dir("QMF") / "text-image-classification/datasets/MVSA_Single/test.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def _source(texts: list[str], length: int = 64):
    from mmbench.data.media import Vocabulary
    from mmbench.data.textimage import TextSource

    return TextSource(Vocabulary.build(texts), length, texts)


def _text_data(source) -> MultimodalData:
    ids = torch.from_numpy(source.encode(source.texts))
    spec = ModalitySpec("text", "text", (source.length,), dtype="int64", tokens={"pad": 0, "unk": 1, "blank": 2})
    return MultimodalData({"text": ids}, torch.zeros(len(ids), dtype=torch.long),
                          DatasetMeta("d", "x", ("a", "b"), {"text": spec}, {"test": len(ids)}))


def _text_stats(ids: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    return {"tokens": (ids != 0).sum(1).float().mean().item(), "blanks": (ids == 2).sum(1).float().mean().item(),
            "changed": ((ids != clean) & (clean != 0)).float().sum().item() / (clean != 0).sum().item()}


@pytest.mark.parametrize("eps", [5.0, 10.0])
def test_qmf_text_blanks_whitespace_fields_of_the_raw_text(eps):
    texts = _mvsa_texts()
    source = _source(texts)
    data = _text_data(source)
    rng = np.random.RandomState(0)
    peer = torch.from_numpy(source.encode([_qmf_blank(t, 0.1 * eps, rng) for t in texts]))
    hit = (peer != data.inputs["text"]).any(1)
    cv = next(c for c in build_curves(data, protocol=resolve_protocol("qmf")) if c.name == "gaussian")
    st = next((st, ms) for st, ms in cv.steps if st.attack == "field_blank")
    ours = apply_steps(data, [st], eps, 0, True, key="t", texts={"text": source}).data.inputs["text"]
    chosen = (ours != data.inputs["text"]).any(1)
    assert chosen.float().mean().item() == pytest.approx(0.5, abs=0.07)  # QMF's choice([0, 1]) per sample
    a, b = _text_stats(peer[hit], data.inputs["text"][hit]), _text_stats(ours[chosen], data.inputs["text"][chosen])
    assert b["tokens"] == pytest.approx(a["tokens"], rel=0.06) and b["blanks"] == pytest.approx(a["blanks"], rel=0.06)
    clean = (data.inputs["text"] != 0).sum(1).float().mean().item()
    assert a["tokens"] < clean - 2, "a field of several tokens becomes one blank: the sequence shrinks"
    old = apply_steps(data, [(resolve_protocol("qmf@2024").conditions[0].steps[1], ["text"])], eps, 0, True, key="t")
    assert _text_stats(old.data.inputs["text"], data.inputs["text"])["tokens"] == pytest.approx(clean), "2024: in place"


def _peer_text():
    import types

    tqdm = types.ModuleType("tqdm")
    tqdm.tqdm = lambda it, *a, **k: it
    return load_module("MultiBench", "robustness/text_robust.py", stubs={"tqdm": tqdm})


def _word_texts(n: int = 800) -> list[str]:
    """Lower-case words of 2 to 10 letters: MultiBench's normalisation and mmbench's tokenizer agree."""
    rng = np.random.default_rng(3)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=k)) for k in rng.integers(2, 11, size=300)]
    return [" ".join(rng.choice(words, size=20)) for _ in range(n)]


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_multibench_v3_text_typos_only_words_of_five_or_more_characters(p):
    tr = _peer_text()
    texts = _word_texts()
    np.random.seed(0)
    noisy = tr.add_text_noise(texts, noise_level=p)
    before = [w for t in texts for w in t.split()]
    after = [w for t in noisy for w in t.split()]
    assert len(before) == len(after)
    peer_rate = np.mean([a != b for a, b in zip(before, after)])
    peer_short = np.mean([a != b for a, b in zip(before, after) if len(a) < 5])
    source = _source(texts, 20)
    data = _text_data(source)
    cv = next(c for c in build_curves(data, protocol=resolve_protocol("multibench")) if c.name == "text")
    ours = apply_steps(data, cv.steps, p, 0, True, key="text", texts={"text": source}).data.inputs["text"]
    clean = data.inputs["text"]
    long = torch.tensor([[len(source.vocab.itos[i]) >= 5 for i in row] for row in clean.tolist()])
    assert peer_short == 0 and bool(((ours != clean) & ~long).sum() == 0)
    ours_rate = (ours != clean).float().mean().item()
    assert ours_rate == pytest.approx(peer_rate, abs=0.02)
    old = apply_steps(data, [(resolve_protocol("multibench@2").conditions[4].steps[0], ["text"])], p, 0, True, key="t")
    assert (old.data.inputs["text"] != clean).float().mean().item() > 1.4 * peer_rate, "v2 replaced any token"


def test_keyboard_neighbours_are_multibench_s():
    import ast

    source = (reference_dir("MultiBench") / "robustness/text_robust.py").read_text()
    func = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == "qwerty_typo")
    table = ast.literal_eval(next(n for n in ast.walk(func) if isinstance(n, ast.Dict)))
    from mmbench.attacks.text import KEYBOARD_NEIGHBOURS

    assert {k: set(v) for k, v in KEYBOARD_NEIGHBOURS.items()} == {k: set(v) for k, v in table.items()}


def _qmf_gaussian_run_text(texts, hw, noised, p, workers=16, batch_size=16, seed=123):
    """Transcription of the numpy draws of QMF's Gaussian test runs (fe6c4c6): per sample in loader
    order, JsonlDataset.__getitem__ draws the text choice and the per-word choices, then, when
    RandomApply fires, AddGaussianNoise reseeds numpy with 0 and draws one normal per pixel of the
    image after Resize(256). Each loader worker has its own numpy stream. Returns the blanked mask."""
    n = len(texts)
    blanked = np.zeros(n, dtype=bool)
    order = {w: [k for b in range(w, -(-n // batch_size), workers)
                 for k in range(b * batch_size, min((b + 1) * batch_size, n))] for w in range(workers)}
    for w, ks in order.items():
        np.random.seed(seed + w)
        for k in ks:
            if np.random.choice([0, 1], p=[0.5, 0.5]):
                words = texts[k].split(" ")
                for i in range(len(words)):
                    if np.random.choice([0, 1], p=[1 - p, p]):
                        words[i] = "_"
                blanked[k] = "_" in words
            if noised[k]:
                h, w_ = hw[k]
                short, long = min(h, w_), max(h, w_)
                np.random.seed(0)
                np.random.normal(loc=0.0, scale=50.0, size=(256, int(256 * long / short), 1))
    return blanked


@pytest.mark.parametrize("hw,expected", [((500, 500), (0.0, 0.05)), ((480, 640), (0.25, 0.5))])
def test_qmf_coupled_text_share_follows_the_image_sizes_as_in_qmf(hw, expected):
    n = 1024
    rng = np.random.default_rng(5)
    words = [f"word{chr(97 + i % 26)}{i}" for i in range(50)]
    texts = [" ".join(rng.choice(words, size=8)) for _ in range(n)]
    source = _source(texts, 16)
    source.image_hw = np.tile(hw, (n, 1))
    data = _text_data(source)
    data.inputs["image"] = torch.full((n, 3, 8, 8), 128, dtype=torch.uint8)
    data.meta.modalities["image"] = ModalitySpec("image", "image", (3, 8, 8), dtype="uint8")
    cv = next(c for c in build_curves(data, protocol=resolve_protocol("qmf:coupled")) if c.name == "gaussian")
    c = apply_steps(data, cv.steps, 5.0, 0, True, key="g", texts={"text": source})
    noised = (c.data.inputs["image"] != data.inputs["image"]).flatten(1).any(1).numpy()
    ours = (c.data.inputs["text"] != data.inputs["text"]).any(1).float().mean().item()
    peer = _qmf_gaussian_run_text(texts, source.image_hw, noised, 0.5).mean()
    assert expected[0] <= peer <= expected[1] and ours == pytest.approx(peer, abs=0.04)
    assert c.shares["text"] == pytest.approx(ours)  # the row's hit_text is the realised share
    from mmbench.attacks.text import qmf_coupled_blank  # one stream from a known seed: sample for sample

    seed = int((torch.rand(1, generator=torch.Generator().manual_seed(3)) * 2 ** 32).long())
    one = qmf_coupled_blank(data.inputs["text"], 0.5, torch.Generator().manual_seed(3), data.meta.modalities["text"],
                            source=source, hits={"image": torch.from_numpy(noised)}, workers=1, batch_size=n)
    exact = _qmf_gaussian_run_text(texts, source.image_hw, noised, 0.5, workers=1, batch_size=n, seed=seed)
    assert np.array_equal((one != data.inputs["text"]).any(1).numpy(), exact)
    plain = next(c for c in build_curves(data, protocol=resolve_protocol("qmf")) if c.name == "gaussian")
    c = apply_steps(data, plain.steps, 5.0, 0, True, key="g", texts={"text": source})
    assert c.shares["text"] == pytest.approx(0.5, abs=0.05), "the default variant draws text on its own"
