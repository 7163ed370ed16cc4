"""ShanghaiTech crowd counting (Zhang et al. 2016, CVPR): Part A (482 web images, 33 to 3,139 heads)
and Part B (716 street photographs of 768 x 1024, 9 to 578 heads), read as released.

Both release layouts are accepted, at the dataset root or one folder below it::

    ROOT/part_A_final/train_data/images/IMG_1.jpg          ROOT/part_A/train_data/images/IMG_1.jpg
    ROOT/part_A_final/train_data/ground_truth/GT_IMG_1.mat ROOT/part_A/train_data/ground-truth/GT_IMG_1.mat
    ROOT/part_A_final/test_data/...                        ROOT/part_A/test_data/...

Each ``GT_IMG_n.mat`` holds ``image_info[0, 0][0, 0]["location"]`` (N x 2 head positions, x then
y, MATLAB's 1-based pixel coordinates) and ``["number"]`` (N). Points are converted to 0-based
(x - 1, y - 1); points off the image are dropped with one warning that counts them.

Splits: the release's train and test (A: 300 / 182, B: 400 / 316), and a fixed validation subset
of train for model selection: `split="train"` is train minus that subset, `split="val"` the subset,
`split="trainval"` all of train. Nothing is ever selected on the test split.

Every file is checked when the dataset is built (annotations read, image headers opened), so a
missing or malformed file fails at once with its name, never halfway through an epoch. Images
that are not RGB (Part A has a grayscale JPEG) are converted to RGB with one warning naming them.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cnnzoo.counting.density import inside_image

__all__ = [
    "PARTS",
    "SPLITS",
    "STANDARD_SIZES",
    "SYNTHETIC_MARKER",
    "AnnotationError",
    "CrowdSample",
    "ShanghaiTech",
    "find_part",
    "load_rgb",
    "read_points",
]

PARTS = ("A", "B")
SPLITS = ("train", "val", "trainval", "test")
# Images per split of the release (Zhang et al. 2016, sec. 4.1).
STANDARD_SIZES = {("A", "train"): 300, ("A", "test"): 182, ("B", "train"): 400, ("B", "test"): 316}
SYNTHETIC_MARKER = "cnnzoo-synthetic.json"  # written by `cnnzoo count synth`
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_GT_DIRS = ("ground_truth", "ground-truth")


class AnnotationError(ValueError):
    """An annotation file that cannot be read or does not have ShanghaiTech's structure."""


class CrowdSample(NamedTuple):
    image: torch.Tensor  # uint8, 3 x H x W
    points: np.ndarray  # float64, N x 2, 0-based (x, y)
    name: str  # the image's file name


@dataclass(frozen=True)
class _Item:
    image: Path
    annotation: Path
    points: np.ndarray
    size: tuple[int, int]  # (H, W)


def _natural_key(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def find_part(root: str | os.PathLike, part: str) -> Path:
    """The folder of Part `part` (the one holding train_data/ and test_data/) under `root`."""
    if part not in PARTS:
        raise ValueError(f"part must be 'A' or 'B', got {part!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {str(root)!r} does not exist or is not a folder")
    names = (f"part_{part}_final", f"part_{part}")
    candidates = [root / n for n in names]
    candidates += [
        root / sub / n
        for sub in ("ShanghaiTech", "shanghaitech", "ShanghaiTech_Crowd_Counting_Dataset")
        for n in names
    ]
    for c in candidates:
        if (c / "train_data").is_dir() or (c / "test_data").is_dir():
            return c
    other = "B" if part == "A" else "A"
    if ((root / "train_data").is_dir() or (root / "test_data").is_dir()) and f"part_{other}" not in root.name:
        return root  # the part's own folder was given
    raise FileNotFoundError(
        f"no ShanghaiTech Part {part} under {str(root)!r}: expected {root / names[0]!s}/ (or "
        f"{names[1]}/) holding train_data/ and test_data/, each with images/ and ground_truth/; "
        "`cnnzoo count synth DIR` writes a synthetic copy in this layout"
    )


def read_points(path: str | os.PathLike) -> tuple[np.ndarray, int | None]:
    """(N x 2 head points, 0-based x then y; the file's `number` or None) of a GT_IMG_n.mat file."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {str(path)!r} does not exist")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, MatReadError...
        raise AnnotationError(f"annotation {str(path)!r} is not a readable MATLAB .mat file ({e})") from e
    expected = "image_info[0, 0][0, 0]['location'] (N x 2 head points, x then y)"
    if "image_info" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise AnnotationError(
            f"annotation {str(path)!r} has no 'image_info' (variables: {', '.join(keys) or 'none'}); "
            f"ShanghaiTech files hold {expected}"
        )
    try:
        record = mat["image_info"][0, 0][0, 0]
        location = np.asarray(record["location"], dtype=np.float64)
    except (IndexError, KeyError, ValueError, TypeError) as e:
        raise AnnotationError(
            f"annotation {str(path)!r} does not have ShanghaiTech's structure: expected {expected} ({e})"
        ) from e
    if location.size == 0:
        location = location.reshape(0, 2)
    if location.ndim != 2 or location.shape[1] != 2:
        raise AnnotationError(
            f"annotation {str(path)!r}: 'location' has shape {location.shape}; expected N x 2 (x, y)"
        )
    if not np.isfinite(location).all():
        raise AnnotationError(f"annotation {str(path)!r}: 'location' holds NaN or infinite coordinates")
    number = None
    names = getattr(getattr(record, "dtype", None), "names", None) or ()
    if "number" in names:
        with np.errstate(all="ignore"):
            n = np.asarray(record["number"]).ravel()
        if n.size == 1 and np.isfinite(n[0]):
            number = int(n[0])
    # MATLAB pixel (1, 1) is the top-left pixel's centre; ours is (0, 0).
    return location - 1.0, number


def _bomb(path: str | os.PathLike, e: Exception) -> ValueError:
    from PIL import Image

    return ValueError(
        f"image {os.fspath(path)!r} is larger than Pillow's safety limit of {Image.MAX_IMAGE_PIXELS:,} "
        f"pixels (a decompression bomb?); downscale it if you trust it ({e})"
    )


def load_rgb(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """(H x W x 3 uint8 array, the file's PIL mode) of an image file; other modes are converted to RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im.convert("RGB"))  # writable: torch.from_numpy shares it
    except Image.DecompressionBombError as e:
        raise _bomb(path, e) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"image {os.fspath(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"image {os.fspath(path)!r} cannot be decoded ({e}); replace the file") from e
    return arr, mode


def _image_header(path: Path) -> tuple[tuple[int, int], str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return (im.height, im.width), im.mode
    except Image.DecompressionBombError as e:
        raise _bomb(path, e) from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {str(path)!r} is not an image PIL can read ({e}); replace the file") from e


class ShanghaiTech(Sequence):
    """ShanghaiTech Part A or B: ``image, points, name = ds[i]``.

    `image` is a uint8 3 x H x W tensor, `points` the N x 2 float64 head positions (0-based x, y).

    Args:
        root: the folder holding part_A_final/ (or part_A/) and part_B_final/, or a part's own folder.
        part: "A" or "B".
        split: "train" (train minus the validation subset), "val", "trainval" or "test".
        val_fraction: share of the release's train images held out for validation.
        val_seed: seed of that choice; fixed, so val never changes between runs.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        part: str = "A",
        split: str = "train",
        *,
        val_fraction: float = 0.1,
        val_seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.part, self.split = part, split
        self.part_dir = find_part(root, part)
        self.synthetic = any((d / SYNTHETIC_MARKER).is_file() for d in (self.part_dir, self.part_dir.parent))
        folder = self.part_dir / ("test_data" if split == "test" else "train_data")
        items = self._scan(folder)
        if split != "test" and val_fraction > 0:
            n_val = max(1, round(val_fraction * len(items))) if len(items) > 1 else 0
            order = np.random.default_rng(val_seed).permutation(len(items))
            val = set(order[:n_val].tolist())
            if split == "val":
                items = [it for i, it in enumerate(items) if i in val]
            elif split == "train":
                items = [it for i, it in enumerate(items) if i not in val]
        if not items:
            raise ValueError(
                f"ShanghaiTech Part {part} {split} is empty (val_fraction={val_fraction}); "
                "use more images or another split"
            )
        self._items = items

    def _scan(self, folder: Path) -> list[_Item]:
        images_dir = folder / "images"
        if not images_dir.is_dir():
            raise FileNotFoundError(
                f"{str(images_dir)!r} does not exist; the release has images/ in {folder.name}/"
            )
        gt_dir = next((folder / g for g in _GT_DIRS if (folder / g).is_dir()), None)
        if gt_dir is None:
            raise FileNotFoundError(
                f"no annotations beside {str(images_dir)!r}: expected {folder / _GT_DIRS[0]!s}/ "
                f"(or {_GT_DIRS[1]}/) with one GT_<image name>.mat per image"
            )
        images = sorted(
            (
                p
                for p in images_dir.iterdir()
                if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
            ),
            key=_natural_key,
        )
        if not images:
            raise FileNotFoundError(f"{str(images_dir)!r} holds no .jpg images")
        missing = [gt_dir / f"GT_{p.stem}.mat" for p in images if not (gt_dir / f"GT_{p.stem}.mat").is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"annotation {str(missing[0])!r} for image {missing[0].name[3:-4]} is missing{more}; "
                "every image needs its GT_<name>.mat"
            )
        expected = STANDARD_SIZES.get((self.part, folder.name.split("_")[0]))
        if expected is not None and len(images) != expected and not self.synthetic:
            warnings.warn(
                f"{str(images_dir)!r} holds {len(images)} images, the release {expected}; "
                "results will not compare with published numbers",
                stacklevel=3,
            )
        items, dropped, dropped_files, converted, mismatch = [], 0, [], [], []
        for img in images:
            ann = gt_dir / f"GT_{img.stem}.mat"
            points, number = read_points(ann)
            size, mode = _image_header(img)
            keep = inside_image(points, size)
            if not keep.all():
                dropped += int((~keep).sum())
                dropped_files.append(ann.name)
                points = points[keep]
            if mode != "RGB":
                converted.append(f"{img.name} ({mode})")
            if number is not None and number != len(keep):
                mismatch.append(ann.name)
            items.append(_Item(img, ann, points, size))
        where = f"ShanghaiTech Part {self.part} {folder.name}"
        if dropped:
            warnings.warn(
                f"{where}: {dropped} head points in {len(dropped_files)} annotation files lie outside "
                f"their image and were dropped (first: {dropped_files[0]})",
                stacklevel=3,
            )
        if converted:
            warnings.warn(
                f"{where}: {len(converted)} images are not RGB and are converted to RGB when read: "
                f"{', '.join(converted[:5])}{' ...' if len(converted) > 5 else ''}",
                stacklevel=3,
            )
        if mismatch:
            warnings.warn(
                f"{where}: 'number' differs from the count of 'location' rows in {len(mismatch)} "
                f"files (first: {mismatch[0]}); the rows are used",
                stacklevel=3,
            )
        return items

    # -- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> CrowdSample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        it = self._items[index]
        arr, _ = load_rgb(it.image)
        if arr.shape[:2] != it.size:
            raise ValueError(f"image {str(it.image)!r} decoded to {arr.shape[:2]}, its header said {it.size}")
        image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return CrowdSample(image, it.points.copy(), it.image.name)

    def points(self, index: int) -> np.ndarray:
        """Head points of image `index` without decoding the image."""
        return self._items[index].points.copy()

    def image_path(self, index: int) -> Path:
        return self._items[index].image

    def annotation_path(self, index: int) -> Path:
        return self._items[index].annotation

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of image `index`."""
        return self._items[index].size

    @property
    def counts(self) -> np.ndarray:
        """Head count of every image (after dropping points off the image)."""
        return np.array([len(it.points) for it in self._items], dtype=np.int64)

    @property
    def names(self) -> list[str]:
        return [it.image.name for it in self._items]

    def describe(self) -> dict:
        c = self.counts
        return {
            "part": self.part,
            "split": self.split,
            "folder": str(self.part_dir),
            "images": len(self),
            "heads": int(c.sum()),
            "min_count": int(c.min()),
            "mean_count": float(c.mean()),
            "max_count": int(c.max()),
            "synthetic": self.synthetic,
        }

    def __repr__(self) -> str:
        return f"ShanghaiTech({json.dumps(self.describe())})"
