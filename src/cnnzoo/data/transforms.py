"""One image at a time: decode a file (or its bytes) and apply a per-sample transform.

These are the pieces the streamed loaders share with the in-memory image-folder path, so both
give the same pixels: `read_image` / `decode_bytes` (torchvision's decoders, Pillow for what
they cannot read), `resize_cover_crop` (evaluation: resize to cover the target, centre crop),
and `sample_transform`, which applies a training augmentation with randomness fixed by the
sample's own seed, never by a process-wide random state (DataLoader workers make that
unreliable; resume must replay an epoch exactly).

Augmentations (`--augment`):

- ``None``, ``"flip"``, ``"crop-flip"``: as the in-memory `TensorLoader` (the image at the
  target size, padded random crop, horizontal flip), driven by the same per-epoch plan, so a
  folder trains identically streamed or in memory;
- ``"rrc-flip"``: random resized crop, area 8-100 %, aspect 3/4-4/3, then flip (Szegedy et al.
  2014, arXiv:1409.4842, section 6; the torchvision ImageNet reference recipe);
- ``"scale-flip"``: scale jittering: shorter side resized to a random S in [256, 512] (scaled
  to the target: 224 -> [256, 512]), random crop, flip (Simonyan & Zisserman 2014,
  arXiv:1409.1556, section 3.1);
- ``"alexnet"``: shorter side 256 (224 -> 256), random crop, flip and PCA colour jitter
  (Krizhevsky et al. 2012, section 4.1);
- ``"rrc-flip-pca"``, ``"scale-flip-pca"``: the above with the PCA colour jitter added.

The last five are per-sample transforms of the full-size image: they need the streamed path.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnzoo.data.catalog import DataError

__all__ = [
    "PLAN_AUGMENTS",
    "STREAM_AUGMENTS",
    "decode_bytes",
    "eval_crop_fraction",
    "pca_lighting",
    "read_image",
    "resize_cover_crop",
    "sample_transform",
]

PLAN_AUGMENTS = (None, "flip", "crop-flip")  # TensorLoader's, driven by the epoch plan
STREAM_AUGMENTS = ("rrc-flip", "rrc-flip-pca", "scale-flip", "scale-flip-pca", "alexnet")
# The ILSVRC evaluation: 224 centre crops of images resized to 256 (224 / 256 = 0.875).
ILSVRC_CROP = 0.875
# Formats torchvision decodes; the rest (BMP, TIFF) and anything it refuses go to Pillow.
_TORCHVISION_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")

# PCA of ImageNet's RGB pixels in [0, 1]: eigenvalues and eigenvectors (columns), as published
# with fb.resnet.torch (Gross & Wilber 2016) for AlexNet's "fancy PCA" jitter, std 0.1.
_PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
_PCA_EIGVEC = torch.tensor(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)
_PCA_STD = 0.1


def eval_crop_fraction(augment: str | None) -> float:
    """The centre crop's share of the resized image: 0.875 with the ILSVRC augmentations, else 1."""
    return ILSVRC_CROP if augment in STREAM_AUGMENTS else 1.0


def _to_uint8(img: torch.Tensor, channels: int) -> torch.Tensor:
    if img.ndim == 4:  # an animated GIF: its first frame
        img = img[0]
    if img.dtype != torch.uint8:  # 16-bit PNG
        from torchvision.transforms.v2.functional import to_dtype

        img = to_dtype(img, torch.uint8, scale=True)
    if img.shape[0] != channels:
        raise ValueError(f"decoded {img.shape[0]} channels, expected {channels}")
    return img


def _pillow(data: bytes | Path, channels: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(im).reshape(im.height, im.width, channels)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def decode_bytes(data: bytes | torch.Tensor, *, channels: int, name: str = "image") -> torch.Tensor:
    """uint8 (channels, H, W) of an encoded image (bytes, or a 1-D uint8 tensor of them); `name`
    is what an error message calls it."""
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        try:
            raw = (
                data
                if isinstance(data, torch.Tensor)
                else torch.frombuffer(bytearray(data), dtype=torch.uint8)
            )
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders for TorchCodec, an extra dependency for
                # what works today; the warning would repeat in every DataLoader worker.
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = decode_image(raw, mode=mode)
            return _to_uint8(decoded, channels)
        except (RuntimeError, ValueError):
            return _pillow(data.numpy().tobytes() if isinstance(data, torch.Tensor) else data, channels)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{name} is not a readable image ({e})") from None


def read_image(path: str | Path, *, channels: int) -> torch.Tensor:
    """uint8 (channels, H, W) of an image file (torchvision's decoder, Pillow as the fallback)."""
    path = Path(path)
    if path.suffix.lower() not in _TORCHVISION_SUFFIXES:
        try:
            return _pillow(path, channels)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"{path} is not a readable image ({e})") from None
    from torchvision.io import read_file

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # as in decode_bytes
            data = read_file(str(path))  # straight into a uint8 tensor, no copy of the bytes
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path} cannot be read ({e})") from None
    return decode_bytes(data, channels=channels, name=str(path))


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    from torchvision.transforms.v2.functional import resize

    if (img.shape[-2], img.shape[-1]) == (h, w):
        return img
    return resize(img, [h, w], antialias=True)


def resize_cover_crop(img: torch.Tensor, size: Sequence[int], crop: float = 1.0) -> torch.Tensor:
    """Resize (bilinear, antialiased) so the image covers size / crop, then take the centre size.

    A square target is torchvision's ``Resize(floor(size / crop))`` + ``CenterCrop(size)``: with
    crop 0.875 and 224 the ILSVRC evaluation (shorter side 256, centre 224). With crop 1 an image
    of the target's aspect is simply resized; any other keeps its aspect and loses the overhang
    instead of being stretched.
    """
    from torchvision.transforms.v2.functional import center_crop, resize

    th, tw = int(size[0]), int(size[1])
    h, w = img.shape[-2:]
    if (h, w) == (th, tw) and crop == 1.0:
        return img
    if th == tw:
        side = math.floor(th / crop + 1e-9)
        if min(h, w) != side:
            img = resize(img, [side], antialias=True)
    else:
        scale = max(th / h, tw / w) / crop
        img = _resize(img, max(th, round(h * scale)), max(tw, round(w * scale)))
    return center_crop(img, [th, tw])


def pca_lighting(img: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """AlexNet's colour jitter on uint8 RGB: add sum_i alpha_i lambda_i v_i to every pixel."""
    if img.shape[0] != 3:
        raise ValueError("PCA colour jitter needs RGB images")
    shift = 255 * (_PCA_EIGVEC @ (alpha * _PCA_EIGVAL))
    return (img.float() + shift.view(3, 1, 1)).round_().clamp_(0, 255).to(torch.uint8)


def _rrc_box(height: int, width: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random box of 8-100 % of the area, aspect 3/4-4/3 drawn log-uniform.

    Szegedy et al. 2014's sampling, with the usual 10 tries and a centre crop of the nearest
    allowed aspect after them. Drawn from `g`: torchvision's RandomResizedCrop draws from the
    global generator, which per-sample seeding would have to save and restore (a millisecond a
    sample) to leave the caller's random state alone.
    """
    area = height * width
    log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        u = torch.rand(2, generator=g, dtype=torch.float64).tolist()
        target = area * (0.08 + 0.92 * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, round(width / (3 / 4))
    elif ratio > 4 / 3:
        w, h = round(height * (4 / 3)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _random_crop(img: torch.Tensor, th: int, tw: int, g: torch.Generator) -> torch.Tensor:
    h, w = img.shape[-2:]
    if h < th or w < tw:  # too small for the crop: pad with zeros, as RandomCrop(pad_if_needed)
        ph, pw = max(0, th - h), max(0, tw - w)
        img = F.pad(img, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = img.shape[-2:]
    top = int(torch.randint(0, h - th + 1, (1,), generator=g))
    left = int(torch.randint(0, w - tw + 1, (1,), generator=g))
    return img[..., top : top + th, left : left + tw]


def _shorter_side(img: torch.Tensor, side: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    s = side / min(h, w)
    return _resize(img, max(side, round(h * s)), max(side, round(w * s)))


def sample_transform(
    img: torch.Tensor,
    *,
    size: Sequence[int],
    augment: str | None,
    seed: int = 0,
    offset: tuple[int, int] | None = None,
    flip: bool = False,
    crop_padding: int = 4,
    train: bool = True,
) -> torch.Tensor:
    """One sample, uint8 (C, H, W) in, uint8 (C, *size) out.

    Evaluation (`train` False) and the plan augmentations start from `resize_cover_crop`; for
    those, `offset` (row, col in the padded image) and `flip` come from the epoch's plan. The
    ILSVRC augmentations draw their randomness from a generator seeded with `seed` only.
    """
    th, tw = int(size[0]), int(size[1])
    if not train or augment in PLAN_AUGMENTS:
        img = resize_cover_crop(img, (th, tw), eval_crop_fraction(augment))
        if not train:
            return img
        if offset is not None:
            p = crop_padding
            img = F.pad(img, (p, p, p, p))[..., offset[0] : offset[0] + th, offset[1] : offset[1] + tw]
        return img.flip(-1) if flip else img
    if augment not in STREAM_AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}")
    g = torch.Generator().manual_seed(seed)
    if augment.startswith("rrc"):
        from torchvision.transforms.v2.functional import resized_crop

        top, left, h, w = _rrc_box(img.shape[-2], img.shape[-1], g)
        img = resized_crop(img, top, left, h, w, [th, tw], antialias=True)
    else:
        base = min(th, tw)
        low = round(base * 256 / 224)
        high = low if augment == "alexnet" else round(base * 512 / 224)
        side = int(torch.randint(low, high + 1, (1,), generator=g))
        img = _random_crop(_shorter_side(img, side), th, tw, g)
    if torch.rand(1, generator=g).item() < 0.5:
        img = img.flip(-1)
    if augment.endswith("pca") or augment == "alexnet":
        img = pca_lighting(img, torch.randn(3, generator=g) * _PCA_STD)
    return img
