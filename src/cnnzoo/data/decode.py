"""One image decoder for the inference verbs (`predict`, `count predict`), and their input lists.

`expand_images` turns the IMAGE arguments of a command line (files, folders searched recursively
for image files, quoted globs) into one sorted list of paths; only the names are held, so ten
thousand inputs cost a few hundred kilobytes. `decode_image` reads one file with Pillow:

- a JPEG far larger than the model needs is decoded at 1/2, 1/4 or 1/8 scale by the JPEG
  decoder itself (Pillow's draft mode: the DCT is scaled, the full-size pixels never exist);
  it stays at least twice the requested size, so the antialiased resize that follows still
  has the pixels it averages, and an image under 4x the requested size decodes exactly as before;
- an image over Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, 89.5 M pixels by
  default; a few kilobytes of PNG can claim gigapixels) is refused before its pixels are read;
- every failure is one `ImageDecodeError` line naming the file.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from cnnzoo.data.catalog import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "decode_image", "expand_images"]

# What Pillow reads without plug-ins and people keep photos in; explicit file arguments are
# decoded whatever their extension, this list only filters what folders contribute.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


class ImageDecodeError(DataError):
    """An input that is not a readable image, or one over the decompression-bomb limit."""


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _folder_images(folder: Path) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()  # os.walk visits folders in the order of this list: sorted, so runs agree
        found += [
            os.path.join(parent, f) for f in sorted(files) if Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return found


def expand_images(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """The image files named by `inputs`, in the order given (each folder's and glob's sorted).

    A folder contributes its image files, recursively; a pattern with ``*``, ``?`` or ``[`` that
    is not itself a file is expanded here (``**`` spans folders), so a quoted glob works where a
    shell's would overflow the command line. A missing file, an empty folder or a glob matching
    nothing is an error naming it.
    """
    out: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = _folder_images(path)
            if not found:
                exts = ", ".join(sorted(IMAGE_EXTENSIONS))
                raise FileNotFoundError(f"folder {text!r} holds no image files ({exts})")
            out += found
        elif path.exists():
            out.append(text)
        elif _is_glob(text):
            found = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"no file matches {text!r}")
            out += found
        else:
            raise FileNotFoundError(f"image {text!r} does not exist")
    return out


def decode_image(
    path: str | os.PathLike, *, channels: int = 3, min_size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, str]:
    """(C x H x W uint8 tensor, the file's own PIL mode) of one image file.

    `channels` 1 gives grey ("L"), 3 gives RGB; any other count repeats RGB's channels. With
    `min_size` (height, width), a JPEG at least four times larger in both sides is decoded at a
    reduced scale that keeps it at least twice `min_size` (see the module's docstring).
    """
    from PIL import Image, UnidentifiedImageError

    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; both are refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(name) as im:
                mode = im.mode
                if min_size is not None and im.format == "JPEG":
                    h, w = min_size
                    im.draft(im.mode, (2 * w, 2 * h))
                im = im.convert("L" if channels == 1 else "RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image {name!r} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(
            f"image {name!r} has more pixels than Pillow's decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS:,}; refusing to decode it"
        ) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"image {name!r} cannot be decoded (not a format Pillow reads)") from None
    except (OSError, ValueError, SyntaxError) as e:
        # SyntaxError is how some of Pillow's plug-ins report a malformed header.
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageDecodeError(f"image {name!r} cannot be decoded ({reason})") from None
    img = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, -1)
    img = img.permute(2, 0, 1)
    if channels not in (1, 3):
        img = img.repeat(-(-channels // img.shape[0]), 1, 1)[:channels]
    return img, mode
