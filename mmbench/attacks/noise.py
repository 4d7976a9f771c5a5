"""Noise families for images, audio / time series / vectors, and any modality.

Every function follows :mod:`mmbench.attacks.base`: pure, seeded by its generator, vectorised
over the samples, ``level = 0`` is the identity, and the input dtype is kept (``uint8`` images
are corrupted in float, clipped to [0, 255] and cast back).

Layout conventions: images are ``[N, C, H, W]`` and videos ``[N, T, C, H, W]`` (the channel is
dimension ``-3``; a video's frames share the occlusion rectangle, other draws are per frame);
sequences are ``[N, C, T]`` (time last); vectors ``[N, D]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmbench.attacks.base import (
    channel_shared_shape,
    is_uint8,
    normal,
    per_sample,
    probability_level,
    register_attack,
    restore,
    sigma_for,
    token_id,
    uniform,
    work,
)
from mmbench.data.types import MODALITY_KINDS, ModalitySpec
from mmbench.errors import MMBenchError

CLIP_MODES = ("auto", "range", "wrap")


def _finish(y: torch.Tensor, x: torch.Tensor, clip: str, pixel_max: float) -> torch.Tensor:
    """Clip and cast ``y`` (float) back to ``x``'s dtype.

    ``auto``: ``uint8`` rounded and clipped to [0, 255], floats untouched; ``range``: clipped to
    [0, 255] (``uint8``) or [0, pixel_max] (float); ``wrap``: QMF's one-sided clipping -- values
    above 255 are set to 255, the rest truncated and cast to ``uint8``, so negative values wrap
    around (-1 -> 255); float images are quantised on the 0–255 scale of ``pixel_max`` the same way.
    """
    top = 255.0 if is_uint8(x) else float(pixel_max)
    if clip == "auto":
        return restore(y, x)
    if clip == "range":
        return restore(y.clamp(0.0, top), x)
    if clip == "wrap":
        q = torch.remainder((y * (255.0 / top)).clamp(max=255.0).trunc(), 256.0)
        return q.to(torch.uint8) if is_uint8(x) else (q * (top / 255.0)).to(x.dtype)
    raise MMBenchError(f"clip must be one of {', '.join(CLIP_MODES)}, got {clip!r}")


@register_attack("gaussian", kinds=("vector", "image", "sequence", "video"))
def gaussian(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
             unit: str = "std", pixel_max: float = 1.0, channel_shared: bool = False,
             fixed_pattern: bool = False, clip: str = "auto", float64: bool = False) -> torch.Tensor:
    """Additive Gaussian noise, sigma = level x the modality's training std (or 0-255 pixel units).

    Options: ``unit`` -- ``std`` (sigma = level x training std, the data's own scale), ``absolute``
    (sigma = level in data units) or ``pixel`` (sigma = level on the 0–255 scale, QMF's convention;
    float images are taken to span [0, ``pixel_max``]); ``channel_shared`` -- one noise map per
    image broadcast over the channels (QMF); ``fixed_pattern`` -- QMF's faithful quirk: the noise
    map is ``np.random.seed(0); np.random.normal(0, sigma, ...)`` for every image, whatever the
    attack seed (the seed then only picks which samples are hit); ``clip`` -- ``auto``, ``range``
    or ``wrap`` (QMF: only values above 255 clipped, negatives wrap around in the uint8 cast);
    ``float64`` -- compute the sum in double precision, as QMF's numpy code does (``sigma x noise``
    rounded, then added: the same grey level as QMF for every pixel; in float32 a few values in
    100,000 land one level off at sigma >= 50).
    """
    if float(level) == 0.0:
        return x
    sigma = sigma_for(level, spec, x, unit, pixel_max)
    shape = channel_shared_shape(x) if channel_shared else tuple(x.shape)
    dtype = torch.float64 if float64 else torch.float32
    if fixed_pattern:
        import numpy as np

        one = shape[1:]
        pattern = np.random.RandomState(0).standard_normal(math.prod(one)).reshape(one)
        noise = torch.as_tensor(pattern, dtype=dtype, device=x.device).unsqueeze(0)
    else:
        noise = normal(shape, generator).to(x.device)
    if float64:
        return _finish(x.to(torch.float64) + noise.to(torch.float64) * sigma, x, clip, pixel_max)
    xf = work(x)
    y = torch.add(xf, noise.to(xf.dtype), alpha=sigma)  # one pass: x + sigma * noise
    return _finish(y, x, clip, pixel_max)


WHITE_NOISE_PER = ("step", "sample", "entry")


@register_attack("white_noise", kinds=("vector", "sequence", "image"))
def white_noise(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                unit: str = "std", per: str = "step") -> torch.Tensor:
    """White noise, sigma = level x training std (MultiBench's time-series white noise).

    ``per``: ``step`` -- one draw per sample and time step (the last dimension), shared by all
    channels, MultiBench's rule on a bare ``[N, T, F]`` array (its stocks loader); ``sample`` --
    one draw per sample added to every entry, what the same rule does to an array wrapped in a
    list (its affect and MIMIC loaders); ``entry`` -- one draw per entry. ``[N, D]`` vectors get
    one draw per entry under ``step``. ``unit``: ``std`` or ``absolute`` (sigma = level,
    MultiBench's literal rule on its own features).
    """
    if float(level) == 0.0:
        return x
    if per not in WHITE_NOISE_PER:
        raise MMBenchError(f"white_noise: per must be one of {', '.join(WHITE_NOISE_PER)}, got {per!r}")
    sigma = sigma_for(level, spec, x, unit)
    if per == "sample":
        shape = (x.shape[0], *[1] * (x.dim() - 1))
    elif per == "step" and x.dim() > 2:
        shape = (x.shape[0], *[1] * (x.dim() - 2), x.shape[-1])
    else:
        shape = tuple(x.shape)
    xf = work(x)
    y = torch.add(xf, normal(shape, generator).to(x.device, xf.dtype), alpha=sigma)
    return restore(y, x)


def _extremes(x: torch.Tensor, spec: ModalitySpec, low: float | None, high: float | None,
              pixel_max: float | None) -> tuple[float, float]:
    if is_uint8(x):
        lo, hi = 0.0, 255.0
    elif pixel_max is not None:
        lo, hi = 0.0, float(pixel_max)
    else:
        lo, hi = spec.mean - 3.0 * spec.std, spec.mean + 3.0 * spec.std
    return (lo if low is None else float(low)), (hi if high is None else float(high))


@register_attack("salt_pepper", kinds=("image", "video"))
def salt_pepper(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                per_channel: bool = False, low: float | None = None, high: float | None = None,
                pixel_max: float | None = None) -> torch.Tensor:
    """Salt-and-pepper noise: a share ``level`` (the density) of pixels set to black or white.

    As QMF's ``AddSaltPepperNoise``: each pixel location is pepper with probability density/2 and
    salt with density/2, the same for all channels (``per_channel`` draws each channel apart).
    Pepper/salt are 0/255 for ``uint8`` images; for float data they default to the training
    mean -/+ 3 std, or 0 and ``pixel_max`` for float images stored in [0, pixel_max] (``low`` /
    ``high`` set them explicitly).
    The share of corrupted samples is the attack's ``fraction`` (QMF: 0.5 x eps/10).
    """
    density = probability_level(level, "salt_pepper")
    if density == 0.0:
        return x
    lo, hi = _extremes(x, spec, low, high, pixel_max)
    u = uniform(tuple(x.shape) if per_channel else channel_shared_shape(x), generator).to(x.device)
    y = work(x)
    y = torch.where(u < density / 2, lo, torch.where(u < density, hi, y))
    return restore(y, x)


@register_attack("blur", kinds=("image", "video"), stochastic=False)
def blur(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
         radius: int | None = None) -> torch.Tensor:
    """Gaussian blur with sigma = level pixels (kernel radius ceil(3 sigma), edges replicated).

    Deterministic (the generator is not used); applied per channel over the last two dimensions.
    """
    sigma = float(level)
    if sigma == 0.0:
        return x
    r = int(math.ceil(3 * sigma)) if radius is None else int(radius)
    if r <= 0:
        return x
    y = work(x)
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(y.dtype)
    h, w = y.shape[-2:]
    z = y.reshape(-1, 1, h, w)
    z = F.conv2d(F.pad(z, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    z = F.conv2d(F.pad(z, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return restore(z.reshape(y.shape), x)


@register_attack("occlusion", kinds=("image", "video"))
def occlusion(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
              fill: str = "zero") -> torch.Tensor:
    """One rectangle covering a share ``level`` of each image (sides sqrt(level) x H, W), at a random place.

    Filled with zeros (``fill="zero"``, black for ``uint8``) or the training mean (``fill="mean"``);
    the same rectangle for all channels (and frames).
    """
    share = probability_level(level, "occlusion")
    if share == 0.0:
        return x
    if fill not in ("zero", "mean"):
        raise MMBenchError(f"occlusion: fill must be zero or mean, got {fill!r}")
    n, (h, w) = x.shape[0], x.shape[-2:]
    oh, ow = min(h, max(1, round(math.sqrt(share) * h))), min(w, max(1, round(math.sqrt(share) * w)))
    top = (uniform((n,), generator) * (h - oh + 1)).floor().long().to(x.device)
    left = (uniform((n,), generator) * (w - ow + 1)).floor().long().to(x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + oh)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + ow)
    box = (in_rows[:, :, None] & in_cols[:, None, :]).view(n, *[1] * (x.dim() - 3), h, w)
    value = 0.0 if fill == "zero" else float(spec.mean)
    y = work(x)
    return restore(torch.where(box, value, y), x)


def _zero_where(x: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """``x`` with the entries where ``drop`` (broadcastable) is true set to 0.

    Floats: a multiplication by the kept mask, several times faster than ``torch.where`` on CPU
    (the same values but for non-finite entries, which become NaN instead of 0); other dtypes:
    ``torch.where``.
    """
    if x.is_floating_point():
        return x * ~drop
    return torch.where(drop, torch.zeros((), dtype=x.dtype, device=x.device), x)


@register_attack("dropout", kinds=("vector", "sequence", "image", "video"))
def dropout(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec) -> torch.Tensor:
    """Random dropout: each entry set to 0 independently with probability ``level`` (MultiBench's random drop)."""
    p = probability_level(level, "dropout")
    if p == 0.0:
        return x
    drop = (uniform(tuple(x.shape), generator) < p).to(x.device)
    return _zero_where(x, drop)


@register_attack("structured_dropout", kinds=("vector", "sequence", "image"))
def structured_dropout(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                       span: int = 1) -> torch.Tensor:
    """Structured dropout: each time step starts, with probability ``level``, a run of ``span`` zeroed steps.

    Time is the last dimension; all channels (and, for ``[N, C, F, T]`` spectrograms, all
    frequency bins) of a dropped step are zeroed. ``span = 1`` (the default) is MultiBench's
    time-series structured drop: single steps, each with probability ``level``. Longer runs lie
    inside the sequence (MultiBench's audio version uses 10) and drop about ``1 - (1 - level)^span``
    of the steps; ``span = 3`` is mmbench's own earlier choice (``multibench`` versions 1 and 2).
    """
    p = probability_level(level, "structured_dropout")
    if p == 0.0:
        return x
    n, t = x.shape[0], x.shape[-1]
    span = max(1, min(int(span), t))
    starts = uniform((n, t), generator) < p
    starts[:, t - span + 1:] = False
    if span <= 16:  # a step is dropped when a run starts at it or at one of the span - 1 steps before
        dropped = starts.clone()
        for k in range(1, span):
            dropped[:, k:] |= starts[:, :-k]
    else:
        dropped = F.max_pool1d(F.pad(starts.float().unsqueeze(1), (span - 1, 0)), span, 1).squeeze(1) > 0
    dropped = dropped.view(n, *[1] * (x.dim() - 2), t).to(x.device)
    return _zero_where(x, dropped)


def adjacent_swap(x: torch.Tensor, p: float, generator: torch.Generator,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """Swap neighbours along the last dimension: each sample's positions are tiled into neighbouring
    pairs (from position 0 or 1, at random) and each pair is swapped with probability ``p``, so
    about a share ``p`` of the entries move and none moves twice. ``valid`` ``[N, L]``: positions
    that may move (a pair with an invalid member stays)."""
    n, length = x.shape[0], x.shape[-1]
    if length < 2:
        return x
    pos = torch.arange(length, device=x.device)
    offset = (uniform((n,), generator) < 0.5).to(x.device)
    start = ((pos % 2 == 1)[None, :] == offset[:, None]) & (pos < length - 1)[None, :]
    swap = start & (uniform((n, length), generator).to(x.device) < p)
    if valid is not None:
        pair_ok = valid.clone()
        pair_ok[:, :-1] &= valid[:, 1:]
        swap &= pair_ok
    # the pairs never overlap, so position i takes i + 1 when its pair (i, i+1) swaps and i - 1
    # when the pair (i-1, i) does: index = pos + swap_i - swap_{i-1}
    step = swap.to(torch.int64)
    index = pos + step
    index[:, 1:] -= step[:, :-1]
    index = index.view(n, *[1] * (x.dim() - 2), length).expand_as(x)
    return x.gather(-1, index)


@register_attack("entry_swap", kinds=("vector", "sequence"))
def entry_swap(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec) -> torch.Tensor:
    """Swap neighbouring entries (vectors) or time steps (sequences) with probability ``level`` (MultiBench's tabular swap).

    MultiBench's ``swap_entry`` copies the left neighbour instead of swapping (its two assignments
    run in sequence); mmbench swaps, as the docstring there intends.
    """
    p = probability_level(level, "entry_swap")
    return x if p == 0.0 else adjacent_swap(x, p, generator)


@register_attack("blank", kinds=MODALITY_KINDS)
def blank(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
          value: float | None = None) -> torch.Tensor:
    """Blank the whole modality of a sample with probability ``level``: zeros (text: every token set to padding).

    The input is still fed to the model (compare ``missing``, which masks the modality).
    """
    p = probability_level(level, "blank")
    if p == 0.0:
        return x
    hit = per_sample(uniform((x.shape[0],), generator) < p, x)
    fill = value if value is not None else (token_id(spec, "pad") if spec.kind == "text" else 0)
    if fill == 0:
        return _zero_where(x, hit)
    return torch.where(hit, torch.full((), fill, dtype=x.dtype, device=x.device), x)


@register_attack("missing", kinds=MODALITY_KINDS, output="mask")
def missing(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec) -> torch.Tensor:
    """The modality is absent for a share ``level`` of samples: evaluated through the model's masking.

    Returns the ``[N]`` boolean of samples that lose the modality; the runner evaluates them with
    ``model(batch, mask=[modality])`` (zeroed features or the model's null token), not with zeros.
    """
    p = probability_level(level, "missing")
    return (uniform((x.shape[0],), generator) < p).to(x.device)
