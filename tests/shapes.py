"""A small image folder the tests write: three easily told grey shapes on a noisy background.

Used where a test needs real files on disk (PNG, or JPEG for every other image): `cnnzoo train`
in subprocesses and under torchrun, WebDataset shards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "stripes")


def draw(kind: int, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 grey image of shape `kind` (circle, square, stripes), jittered and noisy."""
    img = rng.integers(0, 40, (16, 16)).astype(np.uint8)
    cy, cx = rng.integers(5, 11, 2)
    yy, xx = np.mgrid[:16, :16]
    if kind == 0:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12] = 220
    elif kind == 1:
        img[cy - 3 : cy + 3, cx - 3 : cx + 3] = 220
    else:
        img[::3] = 220
    return img


def write_folder(root: Path, *, train: int = 40, test: int = 12, jpeg_every_other: bool = False) -> Path:
    """root/train/<class>/*.png and root/test/<class>/*.png, `train` and `test` images a class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                ext = "jpg" if jpeg_every_other and i % 2 == 0 else "png"
                Image.fromarray(draw(c, rng), mode="L").save(root / split / cls / f"{i}.{ext}")
    return root
