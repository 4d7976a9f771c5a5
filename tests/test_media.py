"""Raw-media preprocessing (audio, images, text), the streaming store, and the ResNet-18 / text encoders.

Expected values come from independent computations written here (numpy FFTs, closed-form mel
scale, hand-built images and clips), not from runs of the code under test.
"""

from __future__ import annotations

import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbench.checksums import file_sha256
from mmbench.config import ModelConfig
from mmbench.data.base import Prepared, SampleStream, UnreadableSample
from mmbench.data.fixtures import write_image, write_wav
from mmbench.data.media import (
    LogSpectrogram,
    Vocabulary,
    fit_length,
    hz_to_mel,
    load_frames,
    load_image,
    load_image_halves,
    mel_filterbank,
    mel_to_hz,
    pick_frames,
    read_wav,
    resample,
    tokenize,
)
from mmbench.data.store import load_meta, load_split, write
from mmbench.data.types import ModalitySpec
from mmbench.errors import MMBenchError
from mmbench.models.multimodal import FramePool, Standardize, build_encoder
from mmbench.registry import ENCODERS

# ---------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 4])
def test_read_wav_sample_widths_and_stereo_to_mono(tmp_path, width):
    rate = 8000
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / rate)
    write_wav(tmp_path / "a.wav", x, rate, width=width, channels=2)
    y, got_rate = read_wav(tmp_path / "a.wav")
    assert got_rate == rate and y.dtype == np.float32 and y.shape == (800,)
    np.testing.assert_allclose(y, x, atol=2.0 / 2 ** (8 * width - 1) + 1e-6)


def test_read_wav_truncated_missing_and_not_audio(tmp_path):
    write_wav(tmp_path / "a.wav", np.zeros(1000), 8000)
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableSample, match="truncated"):
        read_wav(tmp_path / "cut.wav")
    with pytest.raises(UnreadableSample, match="missing"):
        read_wav(tmp_path / "none.wav")
    (tmp_path / "text.wav").write_text("not a wav file at all")
    with pytest.raises(UnreadableSample, match="text.wav"):
        read_wav(tmp_path / "text.wav")


def test_resample_and_fit_length():
    x = np.sin(2 * np.pi * 100 * np.arange(16000) / 16000).astype(np.float32)
    y = resample(x, 16000, 22050)
    assert len(y) == 22050
    # a 100 Hz sine stays a 100 Hz sine: compare with the analytic one away from the edges
    t = np.arange(22050) / 22050
    np.testing.assert_allclose(y[2000:-2000], np.sin(2 * np.pi * 100 * t)[2000:-2000], atol=1e-2)
    clip = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(clip, 12), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(fit_length(clip, 3), [0, 1, 2])


def test_mel_scale_is_slaney():
    assert hz_to_mel(1000.0) == pytest.approx(15.0)
    assert hz_to_mel(200.0) == pytest.approx(3.0)  # linear part: 3 mels per 200 Hz
    assert hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)  # log part: 27 mels per factor 6.4
    f = np.array([0.0, 300.0, 999.0, 1000.0, 4000.0, 11025.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-9, atol=1e-9)


def test_mel_filterbank_triangles():
    sr, n_fft, n_mels = 16000, 512, 40
    fb = mel_filterbank(sr, n_fft, n_mels)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and (fb >= 0).all()
    edges = mel_to_hz(np.linspace(0, hz_to_mel(sr / 2), n_mels + 2))
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    for i in range(n_mels):
        assert fb[i].max() > 0
        # zero outside (left edge, right edge); area-normalised: peak height ~ 2 / (right - left)
        outside = (bins <= edges[i]) | (bins >= edges[i + 2])
        assert np.all(fb[i][outside] == 0)
        assert fb[i].max() <= 2 / (edges[i + 2] - edges[i]) + 1e-9
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0), "band centres increase with the band index"


def _reference_log_stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred frames with zero padding, periodic Hann window, numpy rfft: [F, T]."""
    padded = np.pad(x.astype(np.float64), n_fft // 2)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [padded[t * hop: t * hop + n_fft] * window for t in range(1 + len(x) // hop)]
    return np.log(np.abs(np.fft.rfft(np.array(frames), axis=1)).T + 1e-7)


def test_log_spectrogram_matches_a_numpy_stft_and_finds_the_tone():
    sr, n_fft, hop = 22050, 512, 353
    spec = LogSpectrogram(sr, 3.0, n_fft, hop)
    assert spec.shape == (1, 257, 188)  # OGM-GE's CREMA-D spectrogram
    rng = np.random.default_rng(0)
    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(spec.samples) / sr) + 0.01 * rng.standard_normal(spec.samples))
    out = spec(x.astype(np.float32))
    assert out.shape == spec.shape and out.dtype == np.float32
    # A float32 FFT's rounding error is absolute in magnitude (about eps32 x log2(n_fft) x the frame's peak),
    # so its log error grows without bound near the floor and varies with the CPU's FFT kernels. Compare
    # magnitudes with a tolerance scaled to each frame's peak (measured error: 3e-7 of it), and logs where
    # the magnitude is at least 1e-3 of the peak (measured: 6e-5).
    ref = _reference_log_stft(x.astype(np.float32), n_fft, hop)
    magnitude, ref_magnitude = np.exp(out[0].astype(np.float64)), np.exp(ref)
    peak = ref_magnitude.max(axis=0, keepdims=True)
    assert np.all(np.abs(magnitude - ref_magnitude) <= 1e-5 * peak)
    audible = ref_magnitude > 1e-3 * peak
    np.testing.assert_allclose(out[0][audible], ref[audible], atol=1e-3)
    assert abs(int(np.median(out[0].argmax(axis=0))) - round(1000 * n_fft / sr)) <= 1


def test_log_mel_spectrogram_puts_a_tone_in_its_band():
    sr, n_fft, n_mels = 16000, 512, 40
    spec = LogSpectrogram(sr, 1.0, n_fft, 256, n_mels=n_mels)
    assert spec.shape == (1, n_mels, 1 + 16000 // 256)
    x = 0.5 * np.sin(2 * np.pi * 2000 * np.arange(spec.samples) / sr)
    band = int(np.median(spec(x.astype(np.float32))[0].argmax(axis=0)))
    edges = mel_to_hz(np.linspace(0, hz_to_mel(sr / 2), n_mels + 2))
    assert edges[band] < 2000 < edges[band + 2]


def test_spectrogram_load_resamples_and_tiles(tmp_path):
    write_wav(tmp_path / "short.wav", 0.3 * np.sin(2 * np.pi * 500 * np.arange(4000) / 16000), 16000)  # 0.25 s
    spec = LogSpectrogram(22050, 1.0, 512, 256)
    out = spec.load(tmp_path / "short.wav")
    assert out.shape == spec.shape
    assert abs(int(np.median(out[0].argmax(axis=0))) - round(500 * 512 / 22050)) <= 1
    assert spec.record()["shape"] == list(spec.shape)


# ---------------------------------------------------------------------------------------
# Images and frames
# ---------------------------------------------------------------------------------------


def _bands(h: int, w: int) -> np.ndarray:
    """Left third red, middle third green, right third blue."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 3, 0] = 255
    img[:, w // 3: 2 * w // 3, 1] = 255
    img[:, 2 * w // 3:, 2] = 255
    return img


def test_load_image_stretch_and_centre_crop(tmp_path):
    write_image(tmp_path / "wide.png", _bands(40, 120))
    stretched = load_image(tmp_path / "wide.png", 24, "RGB", "stretch")
    assert stretched.shape == (3, 24, 24) and stretched.dtype == np.uint8
    assert stretched[0, :, 2].mean() > 200 and stretched[2, :, -3].mean() > 200  # all three bands kept
    cropped = load_image(tmp_path / "wide.png", 24, "RGB", "crop")
    assert cropped.shape == (3, 24, 24)
    assert cropped[1].mean() > 200 and cropped[0].mean() < 20 and cropped[2].mean() < 20  # only the centre
    grey = load_image(tmp_path / "wide.png", 8, "L", "stretch")
    assert grey.shape == (1, 8, 8)
    left = load_image_halves(tmp_path / "wide.png", 8, {"left": "RGB"})["left"]
    assert left[0].mean() > left[2].mean()


def test_load_image_corrupt_jpeg(tmp_path):
    write_image(tmp_path / "ok.jpg", _bands(32, 32))
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "bad.jpg").write_bytes(data[:40])
    with pytest.raises(UnreadableSample, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg", 16)
    (tmp_path / "noise.jpg").write_bytes(b"\x00" * 100)
    with pytest.raises(UnreadableSample, match="noise.jpg"):
        load_image(tmp_path / "noise.jpg", 16)


def test_pick_frames():
    assert pick_frames(10, 1) == [5]
    assert pick_frames(9, 3) == [1, 4, 7]
    assert pick_frames(10, 3, "first") == [0, 1, 2]
    assert pick_frames(2, 3) == [0, 1, 1]  # fewer frames than asked: repeat


def test_load_frames_orders_and_picks(tmp_path):
    for i in range(6):
        write_image(tmp_path / "clip" / f"{i:05d}.jpg", np.full((20, 20, 3), 40 * i, np.uint8))
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    frames = load_frames(tmp_path / "clip", 2, 8)
    assert frames.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(frames.reshape(2, -1).mean(1), [40 * 1, 40 * 4], atol=3)
    with pytest.raises(UnreadableSample, match="missing frames"):
        load_frames(tmp_path / "none", 1, 8)


# ---------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------


def test_tokenizer_and_vocabulary():
    assert tokenize("Great day, #Love it!") == ["great", "day", ",", "#", "love", "it", "!"]
    vocab = Vocabulary.build(["the cat", "the dog", "the cat sat"], min_freq=1)
    assert vocab.itos[:3] == ["<pad>", "<unk>", "_"]
    assert vocab.itos[3:] == ["the", "cat", "dog", "sat"]  # by frequency, ties alphabetical
    ids, length, truncated = vocab.encode("The cat _ zebra", 6)
    assert ids.tolist() == [3, 4, 2, 1, 0, 0] and length == 4 and not truncated
    ids, length, truncated = vocab.encode("the the the cat", 2)
    assert ids.tolist() == [3, 3] and length == 2 and truncated
    assert len(Vocabulary.build(["a a b c"], min_freq=2)) == 4  # only "a" is kept
    assert len(Vocabulary.build(["a b c d e"], max_size=5)) == 5
    assert vocab.text().splitlines() == vocab.itos


# ---------------------------------------------------------------------------------------
# Streaming store
# ---------------------------------------------------------------------------------------


def _stream(n: int, shape: tuple[int, ...], bad: set[int] = frozenset(), k: int = 2) -> SampleStream:
    def load(i: int):
        if i in bad:
            raise UnreadableSample(f"file {i} is corrupt")
        return {"x": np.full(shape, i, np.float32), "aux": np.int64(10 * i)}

    return SampleStream([f"s{i}" for i in range(n)], np.arange(n) % k, load)


def _prepared(splits, **kw) -> Prepared:
    return Prepared(splits, ["a", "b"], {"x": "vector"}, {}, {"x": ((4,), "float32"), "aux": ((), "int64")}, **kw)


def test_stream_skips_unreadable_samples_and_records_them(tmp_path):
    splits = {"train": _stream(10, (4,), bad={3, 7}), "val": _stream(4, (4,)), "test": _stream(4, (4,), bad={0})}
    write(tmp_path / "d", "d", "unit", _prepared(splits, skip_unreadable=True), workers=2)
    meta = load_meta("d", tmp_path)
    assert meta.splits == {"train": 8, "val": 4, "test": 3}
    skipped = meta.info["skipped"]
    assert skipped["count"] == 3 and skipped["by_split"] == {"train": 2, "val": 0, "test": 1}
    assert {(r["split"], r["id"]) for r in skipped["samples"]} == {("train", "s3"), ("train", "s7"), ("test", "s0")}
    assert all("corrupt" in r["reason"] for r in skipped["samples"])
    train = load_split("d", "train", tmp_path)  # verifies checksums and shapes
    kept = [i for i in range(10) if i not in (3, 7)]
    np.testing.assert_array_equal(train.inputs["x"][:, 0].numpy(), kept)
    np.testing.assert_array_equal(train.labels.numpy(), np.array(kept) % 2)
    assert np.load(tmp_path / "d" / "train" / "aux.npy").tolist() == [10 * i for i in kept]
    assert meta.info["aux_arrays"] == ["aux"] and "aux" not in meta.modalities
    assert meta.modalities["x"].mean == pytest.approx(np.mean(kept))
    assert meta.modalities["x"].std == pytest.approx(np.std(kept))


def test_stream_with_a_progress_bar(tmp_path):
    splits = {"train": _stream(6, (4,)), "val": _stream(2, (4,)), "test": _stream(2, (4,))}
    write(tmp_path / "d", "d", "unit", _prepared(splits), progress=True)
    assert load_meta("d", tmp_path).splits == {"train": 6, "val": 2, "test": 2}


def test_stream_unreadable_sample_is_an_error_by_default(tmp_path):
    splits = {"train": _stream(6, (4,), bad={2}), "val": _stream(2, (4,)), "test": _stream(2, (4,))}
    with pytest.raises(MMBenchError, match=r"train sample 's2': file 2 is corrupt.*on_error=skip"):
        write(tmp_path / "d", "d", "unit", _prepared(splits))
    assert not (tmp_path / "d").exists() and not list(tmp_path.iterdir()), "no partial folder is left"


def test_stream_and_memory_give_the_same_files_whatever_the_workers(tmp_path):
    def splits():
        return {"train": _stream(9, (4,)), "val": _stream(3, (4,)), "test": _stream(3, (4,))}

    for workers in (1, 3):
        write(tmp_path / f"w{workers}", f"w{workers}", "unit", _prepared(splits()), workers=workers)
    memory = {}
    for s, st in splits().items():
        rows = [st.load(i) for i in range(len(st))]
        memory[s] = ({"x": np.stack([r["x"] for r in rows])}, st.labels)
    write(tmp_path / "mem", "mem", "unit", Prepared(memory, ["a", "b"], {"x": "vector"}))
    for split in ("train", "val", "test"):
        for key in ("x", "labels"):
            digests = {file_sha256(tmp_path / d / split / f"{key}.npy") for d in ("w1", "w3", "mem")}
            assert len(digests) == 1, (split, key)


def test_streaming_write_memory_does_not_grow_with_the_dataset(tmp_path):
    """64 samples of 256 KB (16 MB in all) are appended one by one: the Python heap stays small."""
    n, shape = 64, (256, 256)

    def splits():
        return {"train": _stream(n, shape), "val": _stream(4, shape), "test": _stream(4, shape)}

    prepared = Prepared(splits(), ["a", "b"], {"x": "image"}, {}, {"x": ((1, *shape), "float32")})
    for s in prepared.splits.values():
        base = s.load
        s.load = (lambda f: lambda i: {"x": f(i)["x"][None]})(base)
    tracemalloc.start()
    try:
        write(tmp_path / "big", "big", "unit", prepared, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = n * 256 * 256 * 4
    assert (tmp_path / "big" / "train" / "x.npy").stat().st_size > total
    assert peak < total / 4, f"peak {peak / 1e6:.1f} MB for {total / 1e6:.1f} MB of data"


# ---------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------


def test_resnet18_is_the_standard_architecture():
    with torch.device("meta"):  # parameter counts without paying for the initialisation
        visual = ENCODERS.get("resnet18")((3, 32, 32), 512, 0, 0, 0.0)
        audio = ENCODERS.get("resnet18")((1, 64, 40), 512, 0, 0, 0.0)
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in its 1000-way fc layer
    assert sum(p.numel() for p in visual.parameters()) == 11_689_512 - 513_000
    assert sum(p.numel() for p in audio.parameters()) == 11_176_512 - 64 * 2 * 7 * 7  # 1-channel stem
    assert visual.out_dim == 512 and not any(isinstance(m, torch.nn.Linear) for m in visual.modules())
    projected = ENCODERS.get("resnet18")((1, 32, 24), 16, 0, 0, 0.0).eval()
    x = torch.randn(2, 1, 32, 24)
    out = projected(x)
    assert out.shape == (2, 16)
    for block in projected.blocks():  # depth blocks (used by AIM) compose to the forward pass
        x = block(x)
    torch.testing.assert_close(x, out)


def test_resnet18_runs_channels_last_with_the_values_of_nchw(monkeypatch):
    resnet = ENCODERS.get("resnet18")
    torch.manual_seed(0)
    fast = resnet((3, 32, 32), 16, 0, 0, 0.0)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.ndim == 4)
    monkeypatch.setattr(resnet, "memory_format", torch.contiguous_format)
    torch.manual_seed(0)
    plain = resnet((3, 32, 32), 16, 0, 0, 0.0)
    assert all(p.is_contiguous() for p in plain.parameters())
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name  # same initial values, same state-dict keys
    x = torch.randn(6, 3, 32, 32)
    out_fast, out_plain = fast(x), plain(x)  # training mode: batch statistics
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-4, atol=1e-5)
    (out_fast ** 2).sum().backward()
    (out_plain ** 2).sum().backward()
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-4 * b.grad.abs().max().item(), msg=name)


def test_cpu_tuning_stops_large_buffers_from_being_faulted_in_every_step():
    import os
    import platform
    import subprocess
    import sys

    # a 64 MiB tensor allocated and freed 20 times; minor page faults counted after two warm-up rounds.
    # With the tuning on, a small allocation landing behind the freed block can make a later round
    # grow the heap once more (fragmentation; 0-6 of the 20 rounds, depending on what the process
    # imported before), so the bound allows a minority of the rounds, not zero.
    code = ("import resource, torch\nfrom mmbench.runtime import tune_cpu\nprint(tune_cpu())\n"
            "torch.ones(2 ** 24)\ntorch.ones(2 ** 24)\nr = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(20):\n    torch.ones(2 ** 24)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r)")

    def run(**env):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, **env}).stdout.split("\n")
        return out[0], int(out[1])

    off, faults_off = run(MMBENCH_CPU_TUNING="0")
    assert off == "{}"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator setting is for glibc")
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[always]" in thp.read_text():
        pytest.skip("with transparent huge pages always on, a fault maps 2 MiB: 4 KiB page counts do not apply")
    on, faults_on = run(MMBENCH_CPU_TUNING="1")
    assert "M_MMAP_MAX=0" in on
    pages_per_round = 2 ** 24 * 4 // 4096
    assert faults_off > 20 * pages_per_round // 2  # the default: every free unmaps, every use faults in
    assert faults_on < 8 * pages_per_round  # tuned: a few rounds grow the heap, the rest reuse it


def test_video_encoder_pools_frames_and_standardises_uint8():
    torch.manual_seed(0)
    spec = ModalitySpec("visual", "video", (3, 3, 16, 16), "uint8", 100.0, 40.0)
    enc = build_encoder(spec, "cnn", ModelConfig(hidden_dim=16, feature_dim=8)).eval()
    assert isinstance(enc, Standardize) and isinstance(enc.encoder, FramePool)
    x = torch.randint(0, 256, (4, 3, 3, 16, 16), dtype=torch.uint8)
    out = enc(x)
    frame_encoder = enc.encoder.encoder
    per_frame = torch.stack([frame_encoder((x[:, t].float() - 100.0) / 40.0) for t in range(3)], 1)
    torch.testing.assert_close(out, per_frame.mean(1))
    torch.testing.assert_close(enc(x[:, [2, 0, 1]]), out)  # frame order does not matter
    torch.testing.assert_close(enc(x.float()), out)  # a float copy on the 0-255 scale (e.g. attacked) alike


def test_float_modalities_are_not_wrapped():
    spec = ModalitySpec("audio", "image", (1, 16, 12))
    assert not isinstance(build_encoder(spec, "resnet18", ModelConfig(feature_dim=8)), (Standardize, FramePool))


def test_text_encoders_ignore_padding_and_need_a_vocabulary():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_dim=16, feature_dim=8, depth=2)
    bag = build_encoder(ModalitySpec("text", "text", (6,), "int64", vocab_size=20), "embedding_bag", cfg).eval()
    bag_long = ENCODERS.get("embedding_bag")((9,), 8, 16, 2, 0.0, vocab_size=20).eval()
    bag_long.load_state_dict(bag.state_dict())
    short = torch.tensor([[3, 4, 5, 0, 0, 0], [7, 0, 0, 0, 0, 0]])
    longer = torch.cat([short, torch.zeros(2, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(bag(short), bag_long(longer))  # padding does not count
    tr = build_encoder(ModalitySpec("text", "text", (6,), "int64", vocab_size=20), "transformer", cfg).eval()
    batch = torch.tensor([[3, 4, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0], [9, 9, 1, 2, 0, 0]])
    out = tr(batch)
    assert out.shape == (3, 8) and torch.isfinite(out).all()  # an empty text is finite too
    changed = batch.clone()
    changed[2, :4] = torch.tensor([5, 6, 7, 8])
    torch.testing.assert_close(tr(changed)[0], out[0])  # no leakage between samples
    with pytest.raises(ValueError, match="vocab_size"):
        ENCODERS.get("transformer")((6,), 8, 16, 2, 0.0)


def test_text_spec_carries_its_special_tokens_for_attacks():
    from mmbench.attacks.base import token_id

    spec = ModalitySpec("text", "text", (6,), "int64", vocab_size=20, tokens={"pad": 0, "unk": 1, "blank": 2})
    assert ModalitySpec.from_dict(spec.to_dict()) == spec
    assert (token_id(spec, "blank"), token_id(spec, "unk"), token_id(spec, "pad")) == (2, 1, 0)


def test_wave_module_reads_what_the_fixtures_write(tmp_path):
    write_wav(tmp_path / "a.wav", np.zeros(10), 16000)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 10)
