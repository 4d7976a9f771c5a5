"""Train-time frame augmentation: random resized crop + horizontal flip on a whole batch at once.

``crop_flip`` is the transform of OGM-GE and its successors (torchvision's ``RandomResizedCrop`` with
its default scale (0.08, 1) and ratio (3/4, 4/3), then ``RandomHorizontalFlip(0.5)``), drawn for every
image, and for every frame of a video independently, resized back to the stored frame size. Boxes are
drawn with torchvision's algorithm (10 tries, then the central fallback) for all images at once, and
the crops are resampled as two batched matrix products, which is bilinear interpolation of the cropped
region with ``align_corners=False`` (what ``F.interpolate`` gives on the sliced region). See
``docs/augmentation.md``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from mmbench.data.types import MultimodalData

AUGMENTS = ("none", "crop_flip")
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
TRIES = 10


def crop_boxes(n: int, height: int, width: int, generator: torch.Generator, scale=SCALE, ratio=RATIO) -> torch.Tensor:
    """``[n, 4]`` int64 boxes ``(top, left, h, w)`` drawn as torchvision's ``RandomResizedCrop``
    does: up to 10 tries of an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``,
    the first box that fits is kept, else the central crop clamped to ``ratio``."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, TRIES, generator=generator, dtype=torch.float64))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(n, TRIES, generator=generator, dtype=torch.float64))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(1, keepdim=True)  # first try that fits (0 when none does)
    h, w, found = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0], fits.any(1)
    # the central fallback
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    h, w = torch.where(found, h, fh), torch.where(found, w, fw)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.where(found, (u[:, 0] * (height - h + 1)).long(), (height - fh) // 2)
    left = torch.where(found, (u[:, 1] * (width - w + 1)).long(), (width - fw) // 2)
    return torch.stack([top, left, h, w], 1)


def _interp_matrix(start: torch.Tensor, size: torch.Tensor, length: int, out: int) -> torch.Tensor:
    """``[n, out, length]`` rows resampling ``[start, start + size)`` of an axis of ``length`` to ``out``
    points: bilinear, ``align_corners=False``, source positions clamped inside the region."""
    o = torch.arange(out, dtype=torch.float64, device=start.device)
    size_f = size.to(torch.float64)[:, None]
    src = ((o + 0.5) * size_f / out - 0.5).clamp(min=0)
    src = torch.minimum(src, size_f - 1)
    i0 = src.floor()
    frac = (src - i0).float()
    i0 = i0.long()
    i1 = torch.minimum(i0 + 1, size[:, None] - 1)
    m = torch.zeros(len(start), out, length, device=start.device)
    m.scatter_add_(2, (start[:, None] + i0)[..., None], (1 - frac)[..., None])
    m.scatter_add_(2, (start[:, None] + i1)[..., None], frac[..., None])
    return m


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``images`` ``[n, C, H, W]`` cropped to ``boxes`` (``[n, 4]`` top, left, h, w), each resized to
    ``H x W`` bilinearly and mirrored where ``flip`` (``[n]`` bool); same dtype (uint8 rounded)."""
    n, c, height, width = images.shape
    boxes = boxes.to(images.device)
    rows = _interp_matrix(boxes[:, 0], boxes[:, 2], height, height)  # [n, H, H]
    cols = _interp_matrix(boxes[:, 1], boxes[:, 3], width, width)  # [n, W, W]
    cols = torch.where(flip.to(images.device)[:, None, None], cols.flip(1), cols)
    x = images.float()
    out = rows[:, None] @ x @ cols.transpose(1, 2)[:, None]
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def crop_flip(frames: torch.Tensor, generator: torch.Generator, scale=SCALE, ratio=RATIO) -> torch.Tensor:
    """Random resized crop + horizontal flip (p = 0.5) of every image of ``frames`` ``[N, C, H, W]``
    or every frame of ``[N, F, C, H, W]``, each drawn independently from ``generator`` (a CPU one)."""
    images = frames.reshape(-1, *frames.shape[-3:])
    boxes = crop_boxes(len(images), images.shape[-2], images.shape[-1], generator, scale, ratio)
    flip = torch.rand(len(images), generator=generator) < 0.5
    return resized_crops(images, boxes, flip).reshape(frames.shape)


def augment_batch(batch: MultimodalData, name: str, generator: torch.Generator) -> MultimodalData:
    """``batch`` with augmentation ``name`` applied to its image and video modalities (others as they are)."""
    if name == "none":
        return batch
    inputs = {m: crop_flip(x, generator) if batch.meta.modalities[m].kind in ("image", "video") else x
              for m, x in batch.inputs.items()}
    return dataclasses.replace(batch, inputs=inputs)
