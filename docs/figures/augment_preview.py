"""Draw ``augment_crop_flip.png``: one CREMA-D fixture batch (8 training frames, 64 x 64) above the same
frames after ``data.augment=crop_flip`` (generator seed 0), and print each crop's area fraction.

    python docs/figures/augment_preview.py
"""

import tempfile
from pathlib import Path

import torch
from PIL import Image

from mmbench.data import fixtures
from mmbench.data.augment import crop_boxes, crop_flip
from mmbench.data.store import load_split, prepare

with tempfile.TemporaryDirectory() as tmp:
    fixtures.cremad(Path(tmp, "raw"), train_per_class=10, test_per_class=1, size=96)
    prepare("cremad", Path(tmp, "raw"), Path(tmp, "data"), options={"image_size": 64})
    frames = load_split("cremad", "train", Path(tmp, "data")).index(slice(0, 8)).inputs["visual"][:, 0]
boxes = crop_boxes(len(frames), 64, 64, torch.Generator().manual_seed(0))
augmented = crop_flip(frames, torch.Generator().manual_seed(0))  # the same draws as the boxes above
print("crop area fractions:", " ".join(f"{float(h * w) / 64**2:.2f}" for _, _, h, w in boxes.tolist()))
grid = torch.cat([torch.cat(list(frames), 2), torch.cat(list(augmented), 2)], 1).permute(1, 2, 0).numpy()
Image.fromarray(grid).save(Path(__file__).with_name("augment_crop_flip.png"))
