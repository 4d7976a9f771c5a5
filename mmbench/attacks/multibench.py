"""MultiBench's visual perturbation chain (``robustness/visual_robust.py``), vectorised, and
mmbench's own audio noise modelled on MultiBench's ``robustness/audio_robust.py``.

MultiBench applies ten perturbations in sequence to every test image, each with probability p
(the noise level): grayscale; low contrast (factor 0.5); inversion; white balance (a random
colour temperature of its Kelvin table); colorize (blend 0.3 with red, blue or green); salt and
pepper (on grayscale); Gaussian N(0, p) on grayscale; rotation by U(-20, 20) degrees; horizontal
flip; random crop (4/5 of each side, resized back). White balance and colorize only act on images
still in colour, as there. MultiBench converts every image to RGB before the chain and back to its
own mode after it, so a one-channel (grey) image is tinted by white balance and colorize and then
turned back to grey (a grey-128 image about 23 and 21 levels darker on average). mmbench does the same with
``grey_as_rgb`` (``multibench`` version 3); without it (versions 1 and 2) both steps skip
one-channel images, which differs from MultiBench.

Design decisions (documented differences):

- images are processed as float on a 0..``top`` scale (``top`` = 255 for ``uint8``, else
  ``pixel_max``) instead of PIL images; rotation and crop resample bilinearly with black fill;
- salt and pepper: each pixel is salt with probability p/2 and pepper with p/2 (MultiBench draws
  ceil(p·size/2) coordinates of each with replacement, and writes salt as the value 1, nearly
  black, where white is meant: mmbench writes white);
- the Gaussian step's sigma is p on the 0–255 scale, as there (under one grey level for p < 1).

Audio (:func:`multibench_audio`) is mmbench's own attack, not what MultiBench's published audio
curves ran: no MultiBench loader calls ``add_audio_noise`` (the affect datasets' audio curves use
the time-series noise, ``multibench`` version 3). It follows ``add_audio_noise``'s idea: for each
sample with probability p, one of additive white Gaussian noise (sigma = p), random dropout and
structured dropout (runs of 10 steps). That function's released code has two bugs that mmbench does
not copy:
samples that draw no noise are returned as zeros (the output array starts as ``np.zeros``), and
the random dropout calls the structured one with its arguments swapped (``step = p``, which
fails for a float p); mmbench keeps unhit samples as they are and drops single time steps with
probability p (the structured dropout with a span of 1, as intended).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmbench.attacks.base import (
    is_uint8,
    normal,
    per_sample,
    probability_level,
    register_attack,
    restore,
    sigma_for,
    uniform,
    work,
)
from mmbench.attacks.noise import structured_dropout
from mmbench.data.types import ModalitySpec

#: MultiBench's Kelvin table: temperature -> RGB
KELVIN = ((255, 56, 0), (255, 109, 0), (255, 137, 18), (255, 161, 72), (255, 180, 107), (255, 196, 137),
          (255, 209, 163), (255, 219, 186), (255, 228, 206), (255, 236, 224), (255, 243, 239), (255, 249, 253),
          (245, 243, 255), (235, 238, 255), (227, 233, 255), (220, 229, 255), (214, 225, 255), (208, 222, 255),
          (204, 219, 255))
#: PIL's colour names used by colorize: red, blue, green (PIL's "green" is (0, 128, 0))
COLORS = ((255, 0, 0), (0, 0, 255), (0, 128, 0))
LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> L


def _gray(y: torch.Tensor) -> torch.Tensor:
    if y.shape[1] != 3:
        return y
    w = torch.tensor(LUMA, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
    return (y * w).sum(1, keepdim=True).expand_as(y)


def _warp(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(y.dtype), list(y.shape), align_corners=False)
    return F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@register_attack("multibench_visual", kinds=("image", "video"))
def multibench_visual(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                      pixel_max: float = 1.0, grey_as_rgb: bool = False) -> torch.Tensor:
    """MultiBench's visual chain: ten perturbations (grayscale ... random crop), each with probability ``level``.

    Images ``[N, C, H, W]`` or videos ``[N, T, C, H, W]`` (a video's frames share every draw but the
    pixel noise). Float images are taken to span [0, ``pixel_max``]. ``grey_as_rgb``: one-channel
    images go through the chain as three equal channels and come back as PIL's luma (MultiBench's
    ``convert('RGB')`` ... ``convert(mode)``); otherwise white balance and colorize skip them.
    """
    p = probability_level(level, "multibench_visual")
    if p == 0.0:
        return x
    top = 255.0 if is_uint8(x) else float(pixel_max)
    c, h, w = x.shape[-3:]
    y = work(x).reshape(-1, c, h, w).clone()
    grey_in = grey_as_rgb and c == 1
    if grey_in:
        y, c = y.expand(-1, 3, h, w).clone(), 3
    n, frames = y.shape[0], y.shape[0] // max(x.shape[0], 1)
    dev = y.device

    def draw() -> torch.Tensor:  # one U[0, 1) per sample, shared by its frames
        return uniform((x.shape[0],), generator).to(dev).repeat_interleave(frames)

    def fires() -> torch.Tensor:
        return draw() <= p

    def where(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(per_sample(mask, old), new, old)

    gray = torch.zeros(n, dtype=torch.bool, device=dev) | (c != 3)
    hit = fires()  # grayscale
    y, gray = where(hit, _gray(y), y), gray | hit
    hit = fires()  # low contrast: blend with the mean grey level, factor 0.5
    mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
    y = where(hit, mean + 0.5 * (y - mean), y)
    hit = fires()  # inversion
    y = where(hit, top - y, y)
    hit = fires() & ~gray  # white balance
    pick = (draw() * len(KELVIN)).long().clamp(max=len(KELVIN) - 1).to(dev)
    if c == 3:
        scale = torch.tensor(KELVIN, dtype=y.dtype, device=dev)[pick].view(n, 3, 1, 1) / 255.0
        y = where(hit, y * scale, y)
    hit = fires() & ~gray  # colorize
    pick = (draw() * len(COLORS)).long().clamp(max=len(COLORS) - 1).to(dev)
    if c == 3:
        color = torch.tensor(COLORS, dtype=y.dtype, device=dev)[pick].view(n, 3, 1, 1) * (top / 255.0)
        y = where(hit, 0.7 * y + 0.3 * color, y)
    hit = fires()  # salt and pepper on grayscale
    u = uniform((n, 1, h, w), generator).to(dev)
    sp = torch.where(u < p / 2, torch.zeros_like(u), torch.where(u < p, torch.full_like(u, top), _gray(y)[:, :1]))
    y, gray = where(hit, sp.expand_as(y), y), gray | hit
    hit = fires()  # Gaussian on grayscale, sigma = p grey levels
    noisy = _gray(y)[:, :1] + normal((n, 1, h, w), generator).to(dev, y.dtype) * (p * top / 255.0)
    y, gray = where(hit, noisy.expand_as(y), y), gray | hit
    hit = fires()  # rotation by U(-20, 20) degrees
    angle = (draw().to(y.dtype) * 40 - 20) * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    if hit.any():  # warped only where it fires (grid_sample treats each sample on its own)
        y = y.index_put((hit,), _warp(y[hit], theta[hit]))
    hit = fires()  # horizontal flip
    y = where(hit, y.flip(-1), y)
    hit = fires()  # random crop of 4/5 of each side, resized back
    oy = draw().to(y.dtype) * 0.2  # offset as a share of the side, in [0, 1/5)
    ox = draw().to(y.dtype) * 0.2
    one = torch.ones_like(ox)
    theta = torch.stack([torch.stack([0.8 * one, 0 * one, 2 * ox - 0.2], 1),
                         torch.stack([0 * one, 0.8 * one, 2 * oy - 0.2], 1)], 1)
    if hit.any():
        y = y.index_put((hit,), _warp(y[hit], theta[hit]))
    if grey_in:
        y = _gray(y)[:, :1]
    return restore(y.reshape(x.shape), x)


#: the three audio perturbations MultiBench chooses from, in its order
AUDIO_NOISES = ("white_gaussian", "random_dropout", "structured_dropout")


@register_attack("multibench_audio", kinds=("image", "sequence"))
def multibench_audio(x: torch.Tensor, level: float, generator: torch.Generator, spec: ModalitySpec, *,
                     unit: str = "std", span: int = 10) -> torch.Tensor:
    """MultiBench's audio noise: with probability ``level`` per sample, one of three perturbations (uniform choice).

    Additive white Gaussian noise on every entry with sigma = ``level`` (``unit``: ``std`` x the
    training std, the default, or ``absolute``, MultiBench's literal sigma); random dropout: each
    time step (the last dimension: ``[C, T]`` sequences, ``[1, F, T]`` spectrograms) zeroed with
    probability ``level``; structured dropout: each step starts, with probability ``level``, a run
    of ``span`` zeroed steps (MultiBench: 10). Unhit samples are unchanged (see the module doc).
    """
    p = probability_level(level, "multibench_audio")
    if p == 0.0:
        return x
    n = x.shape[0]
    hit = uniform((n,), generator).to(x.device) <= p
    choice = (uniform((n,), generator) * len(AUDIO_NOISES)).long().clamp(max=len(AUDIO_NOISES) - 1).to(x.device)
    y = work(x)
    noisy = y + sigma_for(p, spec, x, unit) * normal(tuple(x.shape), generator).to(x.device, y.dtype)
    random_drop = structured_dropout(y, p, generator, spec, span=1)
    struct_drop = structured_dropout(y, p, generator, spec, span=span)
    out = torch.where(per_sample(hit & (choice == 0), y), noisy, y)
    out = torch.where(per_sample(hit & (choice == 1), y), random_drop, out)
    out = torch.where(per_sample(hit & (choice == 2), y), struct_drop, out)
    return restore(out, x)
