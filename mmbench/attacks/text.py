"""Attacks on token sequences (``text`` modalities: token ids ``[N, L]``, int64).

Padding positions (the pad id, see :func:`mmbench.attacks.base.token_id`) and a Hugging Face
tokenizer's ``[CLS]`` / ``[SEP]`` (the modality's ``cls`` / ``sep`` tokens) are never touched, so
blanking or swapping never turns them into words. ``field_blank`` and ``letter_typo`` work on
words: they receive the dataset's :class:`~mmbench.data.textimage.TextSource` (vocabulary or
tokenizer, and raw texts) and give the token ids ``prepare`` would have stored for the perturbed
text, through the same vocabulary or tokenizer.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from mmbench.attacks.base import probability_level, register_attack, token_id, uniform
from mmbench.attacks.noise import adjacent_swap
from mmbench.data.types import ModalitySpec
from mmbench.errors import MMBenchError


def text_positions(x: torch.Tensor, spec: ModalitySpec) -> torch.Tensor:
    """Where ``x`` holds text: not padding, nor the modality's ``cls`` / ``sep`` tokens when it has them."""
    keep = x != token_id(spec, "pad")
    tokens = getattr(spec, "tokens", None) or {}
    for key in ("cls", "sep"):
        if key in tokens:
            keep &= x != tokens[key]
    return keep


@register_attack("token_blank", kinds=("text",))
def token_blank(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                token: int | str = "blank") -> torch.Tensor:
    """Replace each (non-padding) token by the blank token with probability ``level`` (QMF's text noise).

    QMF replaces each whitespace word by ``_`` with p = 0.1 eps in half of the test samples; the
    protocol sets p and the half. ``token``: ``blank`` (the modality's blank id, else its unknown
    id, else 1), ``unk``, ``pad`` or an integer id.
    """
    p = probability_level(level, "token_blank")
    if p == 0.0:
        return x
    blank_id = token_id(spec, "blank", token)
    hit = (uniform(tuple(x.shape), generator).to(x.device) < p) & text_positions(x, spec)
    return torch.where(hit, torch.full((), blank_id, dtype=x.dtype, device=x.device), x)


@register_attack("token_swap", kinds=("text",))
def token_swap(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec) -> torch.Tensor:
    """Swap neighbouring (non-padding) tokens with probability ``level`` per pair.

    The token-level counterpart of MultiBench's letter swaps (which need raw strings); no token
    takes part in two swaps.
    """
    p = probability_level(level, "token_swap")
    if p == 0.0:
        return x
    valid = text_positions(x, spec)
    return adjacent_swap(x, p, generator, valid.reshape(x.shape[0], -1) if x.dim() == 2 else None)


@register_attack("field_blank", kinds=("text",), needs_text=True)
def field_blank(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                source: Any = None) -> torch.Tensor:
    """Each whitespace field of the raw text replaced by one _ with probability level (QMF).

    QMF's text noise on the raw text: each whitespace field (``text.split(" ")``) becomes one
    ``_`` with probability ``level``, then the text is tokenized again (a field of several tokens
    becomes one blank, so the sequence shrinks). Needs the raw text kept by ``prepare``."""
    p = probability_level(level, "field_blank")
    if p == 0.0:
        return x
    if source is None or source.texts is None:
        raise MMBenchError("attack 'field_blank' needs the raw text of the test samples; this dataset was "
                           "prepared without it: run mmbench prepare again with --force")
    fields = [t.split(" ") for t in source.texts]
    hit = uniform((len(fields), max(map(len, fields), default=1)), generator) < p
    rows = torch.nonzero(hit.any(1)).squeeze(1).tolist()
    texts = [" ".join("_" if h else f for f, h in zip(fields[i], hit[i].tolist())) for i in rows]
    out = x.clone()
    if rows:
        out[rows] = torch.from_numpy(source.encode(texts)).to(x.device, x.dtype)
    return out


_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, list[str]]:
    """Letters next to each letter on a QWERTY keyboard: left and right, and the keys touching it in
    the rows above and below (MultiBench's table, which leaves ``a`` out of ``q``'s neighbours)."""
    out: dict[str, list[str]] = {}
    for r, row in enumerate(_KEYBOARD):
        for i, key in enumerate(row):
            near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            if r == 0:
                near += [_KEYBOARD[1][i]] if i < len(_KEYBOARD[1]) and key != "q" else []
            elif r == 1:
                near += [_KEYBOARD[0][i]] + [_KEYBOARD[2][j] for j in (i - 1, i) if 0 <= j < len(_KEYBOARD[2])]
            else:
                near += [_KEYBOARD[1][j] for j in (i, i + 1)]
            out[key] = near
    return out


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()
TYPOS = ("swap", "shuffle_middle", "keyboard", "sticky", "omit")


def last_alnum(word: str) -> int:
    """Index of the last letter or digit of ``word`` (-1 without one)."""
    return next((i for i in range(len(word) - 1, -1, -1) if word[i].isalnum()), -1)


def typo(word: str, kind: str, a: float, b: float) -> str:
    """One letter-level typo of ``word`` (at least five characters up to its last letter), its
    positions picked by the uniform draws ``a`` and ``b``: ``swap`` two neighbouring inner letters,
    ``shuffle_middle`` every letter but the first and last, ``keyboard`` a letter replaced by a
    neighbouring key, ``sticky`` a letter typed twice, ``omit`` an inner letter left out."""
    last = last_alnum(word)
    if kind == "swap":
        i = 1 + int(a * (last - 2))
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "shuffle_middle":
        middle = list(word[1:last])
        random.Random(int(a * 2 ** 32)).shuffle(middle)
        return word[0] + "".join(middle) + word[last:]
    if kind == "keyboard":
        order = list(range(last + 1))
        random.Random(int(a * 2 ** 32)).shuffle(order)
        i = next((j for j in order if word[j] in KEYBOARD_NEIGHBOURS), None)
        if i is None:
            return word
        near = KEYBOARD_NEIGHBOURS[word[i]]
        return word[:i] + near[min(int(b * len(near)), len(near) - 1)] + word[i + 1:]
    if kind == "sticky":
        i = int(a * (last + 1))
        return word[:i] + word[i] + word[i:]
    i = 1 + int(a * (last - 1))  # omit
    return word[:i] + word[i + 1:]


@register_attack("letter_typo", kinds=("text",), needs_text=True)
def letter_typo(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                source: Any = None) -> torch.Tensor:
    """A letter typo in each word of 5+ characters with probability level (MultiBench text).

    MultiBench's text noise: each word of five or more characters gets, with probability
    ``level``, one typo chosen uniformly among :data:`TYPOS`; the typed word is looked up in the
    vocabulary again (usually the unknown token). Shorter words, unknown tokens and padding are
    kept. Needs the dataset's vocabulary."""
    p = probability_level(level, "letter_typo")
    if p == 0.0:
        return x
    if source is None:
        raise MMBenchError("attack 'letter_typo' needs the text modality's vocabulary (text_vocab.txt of the dataset)")
    itos, stoi = source.vocab.itos, source.vocab.stoi
    long_enough = torch.tensor([last_alnum(w) > 3 for w in itos], device=x.device)
    u = uniform((*x.shape, 4), generator).to(x.device)
    known = (x >= 0) & (x < len(itos)) & text_positions(x, spec)
    hit = known & long_enough[x.clamp(0, len(itos) - 1)] & (u[..., 0] < p)
    out = x.clone()
    for pos in torch.nonzero(hit).tolist():
        draw = u[tuple(pos)].tolist()
        word = typo(itos[int(x[tuple(pos)])], TYPOS[min(int(draw[1] * len(TYPOS)), len(TYPOS) - 1)], *draw[2:])
        out[tuple(pos)] = stoi.get(word, token_id(spec, "unk"))
    return out


def resized_pixels(height: int, width: int, short: int = 256) -> int:
    """Pixels of an image after torchvision's ``Resize(short)`` (shorter side to ``short``)."""
    small, large = min(height, width), max(height, width)
    return short * int(short * large / small)


@register_attack("qmf_coupled_blank", kinds=("text",), needs_text=True, needs_hits=True)
def qmf_coupled_blank(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                      source: Any = None, hits: Any = None, image: str = "image", batch_size: int = 16,
                      workers: int = 16) -> torch.Tensor:
    """QMF's text blanking as its Gaussian runs drew it (``qmf`` variant ``coupled``).

    QMF draws, per sample in its loader's order, one numpy number to decide whether the text is
    blanked (>= 0.5) and one per whitespace field (blanked with probability ``level``); its Gaussian
    image noise then calls ``np.random.seed(0)`` and draws one normal per pixel of the image
    resized to a shorter side of 256. So the text draws of the next sample in the same loader
    worker come from a state fixed by that image's size, not from a fresh stream. This replays
    that stream: samples in batches of ``batch_size``, batch b in worker ``b % workers`` (0: one
    process), each worker's first state seeded from the generator; ``hits[image]`` says which
    images got the noise (none when no earlier step reached ``image``) and the dataset's stored
    image sizes give the pixel counts. Call it on every sample (fraction 1): the 50 % choice is
    part of the stream.
    """
    import numpy as np

    p = probability_level(level, "qmf_coupled_blank")
    if p == 0.0:
        return x
    if source is None or source.texts is None or source.image_hw is None:
        raise MMBenchError("attack 'qmf_coupled_blank' needs the raw text and image sizes of the test samples; "
                           "this dataset was prepared without them: run mmbench prepare again with --force")
    noised = hits[image].tolist() if hits and image in hits else [False] * len(x)
    n, streams = len(source.texts), max(int(workers), 1)
    seeds = (uniform((streams,), generator) * 2 ** 32).long().tolist()
    after_noise: dict[int, dict] = {}
    texts: dict[int, str] = {}
    batches = -(-n // max(int(batch_size), 1))
    for w in range(streams):
        rs = np.random.RandomState(seeds[w])
        for k in (k for b in range(w, batches, streams) for k in range(b * batch_size, min((b + 1) * batch_size, n))):
            fields = source.texts[k].split(" ")
            if rs.random_sample() >= 0.5:
                blank = rs.random_sample(len(fields)) >= 1 - p
                if blank.any():
                    texts[k] = " ".join("_" if b else f for f, b in zip(fields, blank))
            if noised[k]:
                pixels = resized_pixels(*source.image_hw[k])
                if pixels not in after_noise:
                    noise = np.random.RandomState(0)
                    noise.standard_normal(pixels)
                    after_noise[pixels] = noise.get_state(legacy=False)
                rs.set_state(after_noise[pixels])
    out = x.clone()
    if texts:
        rows = sorted(texts)
        out[rows] = torch.from_numpy(source.encode([texts[k] for k in rows])).to(x.device, x.dtype)
    return out
