"""``imagefolder:PATH``: a folder of images, one sub-folder per class, read in place.

Layouts (classes are the sub-folder names, sorted; label = position):

- split folders, any of ``PATH/train/``, ``PATH/val/``, ``PATH/test/``, each holding
  ``<class>/...`` (torchvision's ImageFolder layout; ImageNet's is train/ + val/). train/ is
  required and names the classes.

  - train/ + test/ (+ val/): the split is the folders'; val/ is the validation set;
  - train/ + val/ (no test/, the ImageNet layout): val/ is the evaluation set, reported as
    *test*, as ImageNet papers report their val accuracy; the validation set that selects the
    epoch is held out of train (the loaders' `val_fraction`), so the reported number is never
    the one that chose the weights;
  - train/ alone: test is split off train as for flat class folders below.
- flat class folders ``PATH/<class>/...``: split per class, deterministically: files ranked by
  ``sha256("cnnzoo-split-v1:<class>:<path inside the class>")``, the first ``round(0.2 * n)``
  are the test set (independent of listing order and library versions; adding a file moves at
  most one other).

Sub-folders inside a class folder belong to that class. An empty class folder, or a folder with
no images, is refused with its name. Every file's header is read when the folder is scanned: a
file that is not a readable image is refused (DataError naming it) before anything trains, on
both paths; a file whose header reads but whose pixels do not decode (a truncated JPEG) is
refused when it is decoded. Nothing is skipped silently: remove or fix the file.

Images become 1-channel when every file is greyscale, else RGB. The image size a run uses
comes from the model or ``--resize`` (see the trainer); the folder's own `image_size` is the size
all its images share, or when sizes differ, the most common train size (`uniform_size` False
says so, and the trainer then uses the model's input size). mean/std are computed on up to
`STATS_SAMPLE` train images (evenly spaced in the sorted list) at that size: the same numbers
whether the folder is then streamed or held in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cnnzoo.data.catalog import DataError, DatasetInfo
from cnnzoo.data.npm import SPLIT_SALT

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TEST_FRACTION = 0.2
STATS_SAMPLE = 1000  # train images mean/std are computed on (all of them in a smaller folder)
HEADER_THREADS = 8
SPLITS = ("train", "val", "test")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")

Files = list[tuple[Path, int]]


@dataclass(frozen=True)
class FolderScan:
    """What scanning a folder finds, before any pixel is decoded."""

    path: Path
    classes: tuple[str, ...]
    files: dict[str, Files]  # "train", "test" and, with its own val/, "val"
    layout: str
    channels: int
    size: tuple[int, int]  # (H, W) every image has, else the most common train size
    uniform: bool


def _images(folder: Path) -> list[Path]:
    """Image files under a class folder, sub-folders included, in sorted relative-path order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath, f)
            for f in filenames
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in EXTENSIONS
        ]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_images(folder: Path) -> list[Path]:
    images = _images(folder)
    if not images:
        raise DataError(
            f"no images found in class folder {folder} ({', '.join(EXTENSIONS)}); add images or remove it"
        )
    return images


def _hash_split(folder: Path, classes: list[str]) -> tuple[Files, Files]:
    train, test = [], []
    for i, c in enumerate(classes):
        imgs = _class_images(folder / c)
        key = lambda f, c=c: hashlib.sha256(  # noqa: E731
            f"{SPLIT_SALT}:{c}:{f.relative_to(folder / c).as_posix()}".encode()
        ).digest()
        held = set(sorted(imgs, key=key)[: round(len(imgs) * TEST_FRACTION)])
        train += [(f, i) for f in imgs if f not in held]
        test += [(f, i) for f in imgs if f in held]
    return train, test


def _scan_files(path: Path) -> tuple[list[str], dict[str, Files], str]:
    """Class names, {split: [(file, label)]} and a description of the layout."""
    if not path.is_dir():
        raise DataError(f"imagefolder path {str(path)!r} is not a directory")
    hint = f"expected {path}/train/<class>/*.jpg with val/ and/or test/ beside it, or {path}/<class>/*.jpg"
    present = [s for s in SPLITS if (path / s).is_dir()]
    split_note = f", split {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} per class by sha256 rank"
    if present:
        if "train" not in present:
            raise DataError(f"{path} has {' and '.join(s + '/' for s in present)} but no train/; {hint}")
        classes = [d.name for d in _class_dirs(path / "train")]
        if not classes:
            raise DataError(f"no class folders in {path}/train; {hint}")
        files: dict[str, Files] = {
            "train": [(f, i) for i, c in enumerate(classes) for f in _class_images(path / "train" / c)]
        }
        for split in present[1:]:
            extra = sorted({d.name for d in _class_dirs(path / split)} - set(classes))
            if extra:
                raise DataError(f"{path}/{split} has classes missing from {path}/train: {', '.join(extra)}")
            files[split] = [
                (f, i)
                for i, c in enumerate(classes)
                if (path / split / c).is_dir()
                for f in _class_images(path / split / c)
            ]
        if present == ["train", "val"]:
            files["test"] = files.pop("val")
            layout = "train/ and val/ folders (ImageNet layout: val/ is the test set; validation is held out of train)"
        elif present == ["train"]:
            files["train"], files["test"] = _hash_split(path / "train", classes)
            layout = f"a train/ folder only{split_note}"
        else:
            layout = " and ".join(s + "/" for s in present) + " folders"
    else:
        classes = [d.name for d in _class_dirs(path)]
        if not classes:
            raise DataError(f"no images found in {path}: no class folders; {hint}")
        train, test = _hash_split(path, classes)
        files = {"train": train, "test": test}
        layout = f"class folders{split_note}"
    return classes, files, layout


def _fingerprint(files: dict[str, Files]) -> tuple:
    return tuple(
        (str(f), s.st_size, s.st_mtime_ns) for split in files.values() for f, _ in split for s in [f.stat()]
    )


def _header(f: Path) -> tuple[str, int, int]:
    from PIL import Image

    try:
        with Image.open(f) as im:  # reads the header only
            return im.mode, im.height, im.width
    except Image.DecompressionBombError as e:
        raise DataError(
            f"{f} is larger than Pillow's safety limit of {Image.MAX_IMAGE_PIXELS:,} pixels (a "
            f"decompression bomb?); downscale it if you trust it, or remove it ({e})"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"{f} is not a readable image ({e}); remove or replace it (unreadable files are "
            "refused, never skipped)"
        ) from None


def _headers(files: dict[str, Files]) -> tuple[int, tuple[int, int], bool]:
    """Channels, the common train size and whether every image has it; refuses unreadable files."""
    from concurrent.futures import ThreadPoolExecutor

    modes: set[str] = set()
    sizes: dict[str, Counter] = {split: Counter() for split in files}
    # Threads overlap the file opens (a cold disk's latency, not Python, is the cost on a large
    # folder); map() keeps the order, so the first unreadable file in sorted order is reported.
    with ThreadPoolExecutor(max_workers=HEADER_THREADS) as pool:
        for split, items in files.items():
            for mode, h, w in pool.map(_header, [f for f, _ in items], chunksize=256):
                modes.add(mode)
                sizes[split][(h, w)] += 1
    # Most common train size; ties go to the larger image (a thumbnail never wins a tie).
    size = max(sizes["train"].items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))[0]
    uniform = all(set(c) <= {size} for c in sizes.values())
    return (1 if modes <= set(_GREY_MODES) else 3), size, uniform


@lru_cache(maxsize=8)
def _scan_cached(path: str, fingerprint: tuple) -> FolderScan:
    classes, files, layout = _scan_files(Path(path))
    channels, size, uniform = _headers(files)
    return FolderScan(Path(path), tuple(classes), files, layout, channels, size, uniform)


def scan_folder(path: str | Path) -> FolderScan:
    """The folder's classes, files, layout, channels and size (cached while its files are unchanged)."""
    p = Path(path).expanduser().resolve()
    _, files, _ = _scan_files(p)
    return _scan_cached(str(p), _fingerprint(files))


def decode_files(
    files: Files, *, channels: int, size: tuple[int, int], crop: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) and int64 labels: each file decoded and resized as the streamed
    loaders' evaluation transform does it (`cnnzoo.data.transforms.resize_cover_crop`)."""
    from cnnzoo.data.transforms import read_image, resize_cover_crop

    out = torch.empty((len(files), channels, size[0], size[1]), dtype=torch.uint8)
    for j, (f, _) in enumerate(files):
        out[j] = resize_cover_crop(read_image(f, channels=channels), size, crop)
    return out, torch.tensor([label for _, label in files], dtype=torch.int64)


def _stats_sample(train: Files) -> Files:
    if len(train) <= STATS_SAMPLE:
        return train
    picks = np.linspace(0, len(train) - 1, STATS_SAMPLE).round().astype(np.int64)
    return [train[int(i)] for i in picks]


def _channel_stats(files: Files, channels: int, size: tuple[int, int]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of the files at `size`, from exact integer sums, one
    image at a time (a float64 copy of a thousand decoded images would take gigabytes)."""
    from cnnzoo.data.transforms import read_image, resize_cover_crop

    s = torch.zeros(channels, dtype=torch.int64)
    s2 = torch.zeros(channels, dtype=torch.int64)
    for f, _ in files:
        x = resize_cover_crop(read_image(f, channels=channels), size).to(torch.int64)
        s += x.sum(dim=(1, 2))
        s2 += (x * x).sum(dim=(1, 2))
    n = len(files) * size[0] * size[1]
    mean = s.double() / n
    std = (s2.double() / n - mean * mean).clamp_min(0).sqrt()
    return [round(float(v) / 255, 4) for v in mean], [round(float(v) / 255, 4) for v in std]


@lru_cache(maxsize=8)
def _info_cached(path: str, fingerprint: tuple) -> DatasetInfo:
    scan = _scan_cached(path, fingerprint)
    sample = _stats_sample(scan.files["train"])
    mean, std = _channel_stats(sample, scan.channels, scan.size)
    n_train = len(scan.files["train"])
    some = "every train image" if len(sample) == n_train else f"{len(sample)} of its {n_train} train images"
    return DatasetInfo(
        name=f"imagefolder:{path}",
        num_classes=len(scan.classes),
        in_chans=scan.channels,
        image_size=scan.size,
        classes=scan.classes,
        mean=tuple(mean),
        std=tuple(std),
        train_size=n_train,
        test_size=len(scan.files["test"]),
        val_size=len(scan.files.get("val", [])),
        own_val="val" in scan.files,
        source=f"image folder {path} ({scan.layout})",
        stats_note=f"computed on {some} (evenly spaced), at {scan.size[0]}x{scan.size[1]}",
        fetched=True,
        path=path,
        torchvision="ImageFolder",
        uniform_size=scan.uniform,
    )


def imagefolder_info(path: str | Path) -> DatasetInfo:
    """The folder's DatasetInfo (reads every header and the stats sample once; cached while the
    files are unchanged)."""
    scan = scan_folder(path)
    return _info_cached(str(scan.path), _fingerprint(scan.files))


@lru_cache(maxsize=4)
def _arrays_cached(
    path: str, fingerprint: tuple, split: str, size: tuple[int, int], crop: float
) -> tuple[torch.Tensor, torch.Tensor]:
    scan = _scan_cached(path, fingerprint)
    return decode_files(scan.files[split], channels=scan.channels, size=size, crop=crop)


def load_imagefolder(
    path: str | Path, split: str, *, size: tuple[int, int] | None = None, crop: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split decoded into memory at `size` (default: the folder's `image_size`)."""
    images, labels = split_arrays(path, split, size=size, crop=crop)
    return images.clone(), labels.clone()


def split_arrays(
    path: str | Path, split: str, *, size: tuple[int, int] | None = None, crop: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`load_imagefolder` without the copy: the cached tensors themselves (do not modify them)."""
    scan = scan_folder(path)
    if split not in scan.files:
        raise DataError(f"{path} has no {split} split ({scan.layout})")
    size = tuple(size) if size is not None else scan.size
    return _arrays_cached(str(scan.path), _fingerprint(scan.files), split, size, crop)
