"""Train-time frame augmentation (``data.augment=crop_flip``): torchvision's random resized crop
boxes, bilinear resampling of the cropped region, flips, and that only training batches see it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import resolve
from mmbench.data.augment import crop_boxes, crop_flip, resized_crops
from mmbench.data.store import load_split
from mmbench.errors import MMBenchError
from mmbench.run import load_trained, train_run
from mmbench.testing import assert_same_run
from tests.test_resume import FAST, Stop, stop_after

AUG = ["data.augment=crop_flip"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape,dtype", [((5, 3, 16, 12), torch.float32), ((4, 3, 2, 10, 10), torch.uint8),
                                         ((3, 1, 7, 9), torch.float64)])
def test_shape_and_dtype_kept_and_seeded(shape, dtype):
    x = (torch.rand(shape, generator=gen(1)) * 255).to(dtype)
    a, b = crop_flip(x, gen(3)), crop_flip(x, gen(3))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, crop_flip(x, gen(4)))


def test_video_frames_draw_their_own_crops():
    frame = torch.rand(1, 1, 3, 12, 12, generator=gen(1)).expand(1, 6, 3, 12, 12)
    out = crop_flip(frame, gen(0))
    assert len({tuple(f.flatten().tolist()) for f in out[0]}) > 1


def test_whole_image_crop_is_identity_or_exact_mirror():
    x = torch.rand(64, 3, 9, 9, generator=gen(1))
    out = crop_flip(x, gen(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 10 < same.sum() < 54  # p = 0.5 flips


def test_crop_equals_interpolate_of_the_sliced_region():
    x = torch.rand(3, 3, 20, 24, generator=gen(1), dtype=torch.float64).float()
    boxes = torch.tensor([[2, 5, 11, 7], [0, 0, 20, 24], [13, 20, 7, 4]])
    flip = torch.tensor([False, False, True])
    out = resized_crops(x, boxes, flip)
    for k, (t, left, h, w) in enumerate(boxes.tolist()):
        ref = F.interpolate(x[k:k + 1, :, t:t + h, left:left + w], size=(20, 24), mode="bilinear",
                            align_corners=False)[0]
        ref = ref.flip(-1) if flip[k] else ref
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=1e-5)


def test_uint8_crop_rounds_the_float_result():
    x = torch.randint(0, 256, (2, 3, 10, 10), generator=gen(2), dtype=torch.uint8)
    boxes, flip = torch.tensor([[1, 2, 5, 6], [3, 0, 7, 4]]), torch.tensor([True, False])
    assert torch.equal(resized_crops(x, boxes, flip), resized_crops(x.float(), boxes, flip).round().to(torch.uint8))


@pytest.mark.parametrize("height,width", [(224, 224), (120, 200), (300, 60)])
def test_crop_statistics_follow_torchvision_bounds(height, width):
    boxes = crop_boxes(20000, height, width, gen(0))
    top, left, h, w = boxes.T
    assert (h > 0).all() and (w > 0).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    fallback = crop_boxes(1, height, width, gen(0), scale=(1e6, 1e6))[0]
    drawn = (boxes != fallback).any(1)
    h, w = h[drawn].double(), w[drawn].double()
    # whole pixels: rounding moves the fraction and the ratio by at most half a pixel per side
    area, aspect = h * w / (height * width), w / h
    slack = 1 / h + 1 / w
    assert (area >= 0.08 * (1 - slack)).all() and (area <= 1).all()
    assert (aspect >= 3 / 4 * (1 - slack)).all() and (aspect <= 4 / 3 * (1 + slack)).all()
    largest = min(height, 4 / 3 * width) * min(width, 4 / 3 * height) / (height * width)  # within the ratio
    assert area.min() < 0.1 and area.max() > 0.95 * largest  # the area fraction spans [0.08, largest]
    if height == width:  # log-uniform aspect: as many boxes wider than tall as taller than wide
        assert abs((aspect > 1).double().mean() - (aspect < 1).double().mean()) < 0.05


def test_fallback_is_the_central_crop_clamped_to_the_ratio():
    boxes = crop_boxes(8, 10, 100, gen(0), scale=(5.0, 5.0))  # no try fits: every box falls back
    assert torch.equal(boxes, torch.tensor([[0, 43, 10, 13]]).expand(8, 4))


def test_augment_is_a_checked_config_field_outside_the_default_run_id(data_dir, tmp_path):
    flags = {"data.dataset": "tiny3", "output.data_dir": str(data_dir), "output.results_dir": str(tmp_path)}
    plain, augmented = resolve(flags=flags), resolve(flags=flags, sets=AUG)
    assert plain.data.augment == "none" and augmented.data.augment == "crop_flip"
    assert plain.run_id() != augmented.run_id()
    d = plain.to_dict()
    d["data"].pop("augment")
    assert type(plain).from_dict(d).run_id() == plain.run_id()
    with pytest.raises(MMBenchError, match="augment"):
        resolve(flags=flags, sets=["data.augment=flip"])


def test_training_batches_only(make_cfg):
    plain, _ = train_run(make_cfg("joint", dataset="tiny3", epochs=2, sets=FAST))
    folder, _ = train_run(make_cfg("joint", dataset="tiny3", epochs=2, sets=[*FAST, *AUG]))
    assert folder.read_metrics()["train_loss"].iloc[0] != plain.read_metrics()["train_loss"].iloc[0]  # applied
    cfg, method, model, test = load_trained(folder)
    summary = folder.read_summary()
    with torch.no_grad():
        assert (model(test).logits.argmax(1) == test.labels).float().mean().item() == pytest.approx(
            summary["test"]["acc"], abs=1e-12)
        val = load_split(cfg.data.dataset, "val", cfg.output.data_dir, cfg.data.modalities)
        assert (model(val).logits.argmax(1) == val.labels).float().mean().item() == pytest.approx(
            summary["val_acc"], abs=1e-12)


def test_resume_identical_with_augmentation(make_cfg, tmp_path):
    full, _ = train_run(make_cfg("joint", dataset="tiny3", epochs=3, sets=[*FAST, *AUG]))
    cfg = make_cfg("joint", dataset="tiny3", epochs=3, sets=[*FAST, *AUG])
    cfg.output.results_dir = str(tmp_path / "stopped")
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(0))
    resumed, _ = train_run(cfg, resume=True)
    assert resumed.read_summary()["resumed_from_epoch"] == 1
    assert_same_run(full, resumed)
