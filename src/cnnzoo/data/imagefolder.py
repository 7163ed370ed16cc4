"""``imagefolder:PATH``: a folder of images, one sub-folder per class, read in place.

Two layouts, as torchvision's ImageFolder expects them:

- ``PATH/train/<class>/*.png|jpg|...`` and ``PATH/test/<class>/...``: the split is the folders';
  a ``PATH/val/<class>/...`` beside them is the validation set (used instead of holding images
  out of train);
- ``PATH/<class>/...``: split per class, deterministically: files ranked by
  ``sha256("cnnzoo-split-v1:<class>:<file name>")``, the first ``round(0.2 * n)`` are the test set
  (independent of listing order and library versions; adding a file moves at most one other).

Classes are the sub-folder names, sorted (label = position). Images become 1-channel when every
file is greyscale, else RGB; all are resized (Pillow's antialiased bilinear) to the size of the
first train image in sorted order. mean/std are computed from the train images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cnnzoo.data.catalog import DataError, DatasetInfo
from cnnzoo.data.npm import SPLIT_SALT

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TEST_FRACTION = 0.2
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class _Folder:
    info: DatasetInfo
    arrays: dict[str, tuple[torch.Tensor, torch.Tensor]]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(path: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]], str]:
    """Class names, {split: [(file, label)]} and a description of the layout."""
    if not path.is_dir():
        raise DataError(f"imagefolder path {str(path)!r} is not a directory")
    hint = f"expected {path}/train/<class>/*.png and {path}/test/<class>/..., or {path}/<class>/*.png"
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = [d.name for d in _class_dirs(path / "train")]
        extra = sorted({d.name for d in _class_dirs(path / "test")} - set(classes))
        if extra:
            raise DataError(f"{path}/test has classes missing from {path}/train: {', '.join(extra)}")
        files = {
            split: [
                (f, i)
                for i, c in enumerate(classes)
                if (path / split / c).is_dir()
                for f in _images(path / split / c)
            ]
            for split in ("train", "val", "test")
            if (path / split).is_dir()
        }
        if "val" in files:
            extra = sorted({d.name for d in _class_dirs(path / "val")} - set(classes))
            if extra:
                raise DataError(f"{path}/val has classes missing from {path}/train: {', '.join(extra)}")
        layout = "train/, val/ and test/ folders" if "val" in files else "train/ and test/ folders"
    else:
        classes = [d.name for d in _class_dirs(path)]
        files = {"train": [], "test": []}
        for i, c in enumerate(classes):
            imgs = _images(path / c)
            ranked = sorted(
                imgs, key=lambda f, c=c: hashlib.sha256(f"{SPLIT_SALT}:{c}:{f.name}".encode()).digest()
            )
            n_test = round(len(imgs) * TEST_FRACTION)
            test = set(ranked[:n_test])
            files["train"] += [(f, i) for f in imgs if f not in test]
            files["test"] += [(f, i) for f in imgs if f in test]
        layout = f"class folders, split {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} per class by sha256 rank"
    if not classes or not files["train"]:
        raise DataError(f"no images found in {path}; {hint}")
    return classes, files, layout


def _fingerprint(files: dict[str, list[tuple[Path, int]]]) -> tuple:
    return tuple(
        (str(f), s.st_size, s.st_mtime_ns) for split in files.values() for f, _ in split for s in [f.stat()]
    )


def _decode(
    files: list[tuple[Path, int]], mode: str, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    chans = 1 if mode == "L" else 3
    out = np.empty((len(files), size[0], size[1], chans), dtype=np.uint8)
    for j, (f, _) in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if (im.height, im.width) != size:
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                out[j] = np.asarray(im).reshape(size[0], size[1], chans)
        except OSError as e:
            raise DataError(f"{f} is not a readable image ({e})") from e
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), labels


@lru_cache(maxsize=4)
def _load(path: str, fingerprint: tuple) -> _Folder:
    from PIL import Image

    from cnnzoo.data.sources import _channel_stats

    classes, files, layout = _scan(Path(path))
    modes = set()
    for f, _ in [item for split in files.values() for item in split]:
        try:
            with Image.open(f) as im:  # reads the header only
                modes.add(im.mode)
                if f == files["train"][0][0]:
                    size = (im.height, im.width)
        except OSError as e:
            raise DataError(f"{f} is not a readable image ({e})") from e
    mode = "L" if modes <= set(_GREY_MODES) else "RGB"
    arrays = {split: _decode(files[split], mode, size) for split in files}
    mean, std = _channel_stats(arrays["train"][0])
    info = DatasetInfo(
        name=f"imagefolder:{path}",
        num_classes=len(classes),
        in_chans=1 if mode == "L" else 3,
        image_size=size,
        classes=tuple(classes),
        mean=tuple(mean),
        std=tuple(std),
        train_size=len(files["train"]),
        test_size=len(files["test"]),
        val_size=len(files.get("val", [])),
        own_val="val" in files,
        source=f"image folder {path} ({layout})",
        stats_note="computed on this folder's train images",
        fetched=True,
        path=path,
        torchvision="ImageFolder",
    )
    return _Folder(info, arrays)


def _folder(path: str | Path) -> _Folder:
    p = Path(path).expanduser().resolve()
    _, files, _ = _scan(p)
    return _load(str(p), _fingerprint(files))


def imagefolder_info(path: str | Path) -> DatasetInfo:
    """The folder's DatasetInfo (decodes the images once; cached while the files are unchanged)."""
    return _folder(path).info


def load_imagefolder(path: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    arrays = _folder(path).arrays
    if split not in arrays:
        raise DataError(f"{path} has no {split}/ folder")
    images, labels = arrays[split]
    return images.clone(), labels.clone()
