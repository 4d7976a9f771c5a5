"""Raw-media preprocessing for the real-dataset builders: audio, frames and images, text.

- **Audio** is read with the standard library :mod:`wave` (PCM 8/16/24/32-bit; ``soundfile`` is
  used as a fallback for other WAV encodings when it is installed), mixed to mono, resampled
  (polyphase, :func:`scipy.signal.resample_poly`), repeated until the clip lasts ``duration``
  seconds and cut there, clipped to [-1, 1], and turned into a log spectrogram ``[1, F, T]`` with
  :func:`torch.stft` (periodic Hann window, centred frames, zero padding as librosa >= 0.10):
  ``log(|S|^power + offset)`` over the linear-frequency bins (``n_mels = 0``, what OGM-GE and ARL
  feed their ResNet-18) or over ``n_mels`` mel bands of our own filterbank (Slaney mel scale and
  area normalisation, librosa's defaults).
- **Frames and images** are decoded with Pillow into uint8 arrays ``[C, H, W]``; ``stretch``
  resizes to ``size x size`` (OGM-GE's and QMF-RGB-D's evaluation transform), ``crop`` resizes
  the shorter side to ``size / 0.875`` and takes the centre ``size x size`` (Resize(256) +
  CenterCrop(224), QMF's text-image transform). Clips pick ``frames`` frames evenly spread over the
  extracted ones.
- **Text** is lower-cased and split into words and punctuation; the vocabulary is built on the
  training split only: id 0 = padding, 1 = unknown word, 2 = the blank ``_`` that QMF's
  text-blanking noise writes, then words by decreasing frequency (ties alphabetical).

Every reader raises :class:`~mmbench.data.base.UnreadableSample` for a missing or corrupt file, so
the store can skip the sample (and record it) or stop, as the dataset's ``on_error`` option says.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import pickle
import re
import wave
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.base import UnreadableSample

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
CROP_FRACTION = 224 / 256  # QMF/MMBT: Resize(256) then CenterCrop(224)


# ---------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate of a WAV file."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableSample(f"missing audio file {path}")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as e:
        return _read_with_soundfile(path, e)
    except OSError as e:
        raise UnreadableSample(f"cannot read {path} ({e})") from None
    if width not in (1, 2, 3, 4) or channels < 1 or rate <= 0:
        raise UnreadableSample(f"{path}: unsupported WAV ({channels} channels, {8 * width}-bit, {rate} Hz)")
    got = len(raw) // (width * channels)
    if got < frames:
        raise UnreadableSample(f"{path} is truncated: its header announces {frames} samples, the file holds {got}")
    if got == 0:
        raise UnreadableSample(f"{path} holds no audio samples")
    raw = raw[: got * width * channels]
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    return x.reshape(-1, channels).mean(axis=1).astype(np.float32), rate


def _read_with_soundfile(path: Path, error: Exception) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        raise UnreadableSample(f"{path} is not a PCM WAV file the standard library can read ({error}); "
                               "convert it to PCM, or pip install soundfile") from None
    try:
        x, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own error types
        raise UnreadableSample(f"{path} is not a readable audio file ({e})") from None
    if not len(x):
        raise UnreadableSample(f"{path} holds no audio samples")
    return x.mean(axis=1).astype(np.float32), int(rate)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling from ``rate`` to ``target`` Hz (``scipy.signal.resample_poly``)."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Repeat the clip until it has ``n`` samples, then cut (OGM-GE tiles its CREMA-D clips to 3 s)."""
    if len(x) == 0:
        raise UnreadableSample("empty audio clip")
    return np.tile(x, -(-n // len(x)))[:n]


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((math.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
                   ) -> np.ndarray:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]``, area-normalised (librosa's ``norm="slaney"``)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    weights = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        lower = (bins - edges[i]) / max(edges[i + 1] - edges[i], 1e-10)
        upper = (edges[i + 2] - bins) / max(edges[i + 2] - edges[i + 1], 1e-10)
        weights[i] = np.maximum(0.0, np.minimum(lower, upper)) * 2.0 / (edges[i + 2] - edges[i])
    return weights.astype(np.float32)


class LogSpectrogram:
    """Audio clip -> ``[1, F, T]`` float32 log spectrogram (linear bins, or mel bands when ``n_mels``)."""

    def __init__(self, sample_rate: int, duration: float, n_fft: int, hop: int, n_mels: int = 0,
                 power: float = 1.0, offset: float = 1e-7):
        import torch

        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        self.power, self.offset = power, offset
        self.samples = int(round(sample_rate * duration))
        self.window = torch.hann_window(n_fft)
        self.mel = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels)) if n_mels else None

    @property
    def shape(self) -> tuple[int, int, int]:
        bins = self.n_mels or self.n_fft // 2 + 1
        return (1, bins, 1 + self.samples // self.hop)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            s = torch.stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.n_fft, self.hop,
                           window=self.window, center=True, pad_mode="constant", return_complex=True).abs()
            if self.power != 1.0:
                s = s.pow(self.power)
            if self.mel is not None:
                s = self.mel @ s
            return torch.log(s + self.offset).unsqueeze(0).numpy()

    def load(self, path: Path) -> np.ndarray:
        """Read, resample, fit to the duration, clip to [-1, 1], and transform one WAV file."""
        x, rate = read_wav(path)
        x = fit_length(resample(x, rate, self.sample_rate), self.samples)
        return self(np.clip(x, -1.0, 1.0))

    def record(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "duration_samples": self.samples, "n_fft": self.n_fft,
                "hop": self.hop, "n_mels": self.n_mels, "power": self.power, "log_offset": self.offset,
                "window": "hann (periodic)", "center": True, "pad_mode": "constant",
                "scale": "log(|STFT|^power + offset)" + (" over Slaney mel bands" if self.n_mels else ""),
                "resampling": "scipy.signal.resample_poly", "fit": "repeat to duration, then cut; clip to [-1, 1]",
                "shape": list(self.shape)}


# what a pickled feature file may build: numpy arrays, dtypes and scalars, and plain containers
_PICKLE_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                   ("collections", "OrderedDict"), ("builtins", "bytes"), ("builtins", "bytearray")}
_NUMPY_CORE = "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"  # numpy 2 / 1


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}; only numpy arrays and plain containers "
                                         "are loaded from a feature file")
        return super().find_class(module.replace("numpy.core", _NUMPY_CORE).replace("numpy._core", _NUMPY_CORE),
                                  name)


def read_pickled_arrays(path: Path) -> Any:
    """A pickled feature file (arrays in plain containers) built by a restricted unpickler, so a file
    that holds anything else cannot run code; Python 2 pickles are read as latin-1."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableSample(f"missing file {path}")
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            ImportError) as e:
        raise UnreadableSample(f"{path} is not a readable pickle of arrays ({e})") from None


# ---------------------------------------------------------------------------------------
# Images and frames
# ---------------------------------------------------------------------------------------


def load_image(path: Path, size: int, mode: str = "RGB", resize: str = "stretch") -> np.ndarray:
    """Decode an image into uint8 ``[C, size, size]`` (C = 3 for RGB, 1 for L)."""
    need = math.ceil(size / CROP_FRACTION) if resize == "crop" else size
    with _decoded(path, draft=(mode, need)) as im:
        return _fit(im, size, mode, resize)


def load_image_halves(path: Path, size: int, modes: dict[str, str]) -> dict[str, np.ndarray]:
    """A side-by-side file (e.g. RGB | depth) decoded once: ``{"left" | "right": mode}`` -> that half
    as uint8 ``[C, size, size]``, stretched to the size."""
    with _decoded(path) as im:
        w, h = im.size
        boxes = {"left": (0, 0, w // 2, h), "right": (w // 2, 0, w, h)}
        return {half: _fit(im.crop(boxes[half]), size, mode, "stretch") for half, mode in modes.items()}


def load_image_bytes(data: bytes, size: int, mode: str = "RGB", what: str = "image") -> np.ndarray:
    """An encoded image held in memory (e.g. one frame of an HDF5 video) as uint8 ``[C, size, size]``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            im.draft(mode, (size, size))
            im.load()
            return _fit(im, size, mode, "stretch")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableSample(f"{what} is not a readable image ({e})") from None


def image_size(path: Path) -> tuple[int, int]:
    """The stored image's own ``(height, width)``, read from its header."""
    with _decoded(path, load=False) as im:
        return im.size[1], im.size[0]


@contextlib.contextmanager
def _decoded(path: Path, draft: tuple[str, int] | None = None, load: bool = True):
    """The decoded image at ``path``; a missing or unreadable file is an :class:`UnreadableSample`.
    ``draft``: (mode, side) lets JPEG decode at a reduced scale that still covers the side."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise UnreadableSample(f"missing image {path}")
    try:
        with Image.open(path) as im:
            if draft is not None:
                im.draft(draft[0], (draft[1], draft[1]))
            if load:
                im.load()
            yield im
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableSample(f"{path} is not a readable image ({e})") from None


def _fit(im, size: int, mode: str, resize: str) -> np.ndarray:
    """``im`` converted to ``mode`` and resized (``stretch``, or ``crop``: shorter side to size/0.875,
    centre crop) to uint8 ``[C, size, size]``."""
    from PIL import Image

    im = im.convert(mode)
    if resize == "crop":
        need = math.ceil(size / CROP_FRACTION)
        w, h = im.size
        scale = need / min(w, h)
        im = im.resize((max(need, round(w * scale)), max(need, round(h * scale))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
    else:
        im = im.resize((size, size), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def list_frames(folder: Path) -> list[Path]:
    """The extracted frames of one clip, in file-name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UnreadableSample(f"missing frames folder {folder}")
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not frames:
        raise UnreadableSample(f"no frames (jpg/png) in {folder}")
    return frames


def pick_frames(available: int, count: int, how: str = "even") -> list[int]:
    """Indices of ``count`` frames out of ``available``: the middle of ``count`` equal segments (``even``),
    or the first ones (``first``, what OGM-GE's CREMA-D loader effectively does, issue #32); frames
    repeat when a clip has fewer than ``count``."""
    if how == "first":
        return [min(i, available - 1) for i in range(count)]
    return [min(available - 1, int((i + 0.5) * available / count)) for i in range(count)]


def load_frames(folder: Path, count: int, size: int, how: str = "even", resize: str = "stretch") -> np.ndarray:
    """``count`` frames of a clip as uint8 ``[count, 3, size, size]``."""
    frames = list_frames(folder)
    return np.stack([load_image(frames[i], size, "RGB", resize) for i in pick_frames(len(frames), count, how)])


# ---------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------

PAD, UNK, BLANK = "<pad>", "<unk>", "_"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (``"Hi, you!"`` -> ``["hi", ",", "you", "!"]``)."""
    return _TOKEN.findall(str(text).lower())


class Vocabulary:
    """Word -> id, built on training texts: 0 padding, 1 unknown, 2 blank (``_``), then words.

    :class:`~mmbench.data.hf_tokenizer.HFTokenizer` has the same interface for a Hugging Face tokenizer."""

    special_tokens = {"pad": 0, "unk": 1, "blank": 2}
    pad_id = 0
    FILE = "text_vocab.txt"  # the vocabulary's file beside meta.json

    def __init__(self, words: list[str]):
        self.itos = [PAD, UNK, BLANK] + [w for w in words if w not in (PAD, UNK, BLANK)]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int = 0) -> Vocabulary:
        counts = Counter(t for text in texts for t in tokenize(text))
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size:
            words = words[: max(max_size - 3, 0)]
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def min_length(self) -> int:
        return 1

    def length(self, text: str) -> int:
        """Tokens ``text`` encodes to before truncation."""
        return len(tokenize(text))

    def encode(self, text: str, length: int) -> tuple[np.ndarray, int, bool]:
        """``(ids [length] int64 padded with 0, number of tokens kept, whether it was truncated)``."""
        tokens = tokenize(text)
        ids = np.zeros(length, dtype=np.int64)
        kept = tokens[:length]
        ids[: len(kept)] = [self.stoi.get(t, 1) for t in kept]
        return ids, len(kept), len(tokens) > length

    def text(self) -> str:
        return "".join(f"{w}\n" for w in self.itos)

    def files(self) -> dict[str, str]:
        """What is stored beside meta.json: :data:`FILE`, one token per line."""
        return {self.FILE: self.text()}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """The vocabulary :meth:`text` wrote (one token per line, line number = id)."""
        return cls(text.split("\n")[3:-1])


def pack_text(text: str, size: int) -> tuple[np.ndarray, bool]:
    """``text`` as UTF-8 bytes in a zero-padded uint8 ``[size]`` row, and whether it was cut."""
    data = str(text).encode("utf-8")
    row = np.zeros(size, dtype=np.uint8)
    row[: min(len(data), size)] = np.frombuffer(data[:size], dtype=np.uint8)
    return row, len(data) > size


def unpack_text(row: np.ndarray) -> str:
    """The text :func:`pack_text` stored (a character cut at the end is dropped)."""
    return bytes(row).rstrip(b"\0").decode("utf-8", errors="ignore")
