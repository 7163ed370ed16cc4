"""The processed cache beside the raw files: safetensors arrays plus a JSON manifest.

``<root>/<name>/cnnzoo-train.safetensors`` and ``cnnzoo-test.safetensors`` hold ``images``
(uint8, N x C x H x W) and ``labels`` (int64, N); ``cnnzoo-manifest.json`` says where the raw
files came from, how the split was made, the counts and the sha256 of every file we wrote. No
file here is pickled: safetensors cannot hold code. Every file is written atomically (temp file,
then rename), the manifest last, so a crash leaves either the old complete set or no manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from cnnzoo.atomic import atomic_write, atomic_write_bytes
from cnnzoo.data.catalog import DataError

MANIFEST = "cnnzoo-manifest.json"
FORMAT_VERSION = 1


def processed_name(split: str) -> str:
    return f"cnnzoo-{split}.safetensors"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none (not fetched)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not readable JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise DataError(f"{path} is not a cnnzoo manifest")
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    text = json.dumps({"format": FORMAT_VERSION, **manifest}, indent=2) + "\n"
    return atomic_write_bytes(folder / MANIFEST, text.encode())


def write_split(folder: Path, split: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Write one split's arrays; returns its manifest entry (file, count, shape, sha256)."""
    from safetensors.torch import save_file

    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    tensors = {"images": images.contiguous(), "labels": labels.to(torch.int64).contiguous()}
    path = folder / processed_name(split)
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    return {
        "file": path.name,
        "count": int(images.shape[0]),
        "shape": list(images.shape[1:]),
        "sha256": sha256_file(path),
    }


def fetch_hint(name: str) -> str:
    return f"run `cnnzoo data fetch {name}`"


def read_split(
    folder: Path, split: str, manifest: dict[str, Any], name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one processed split, checking its sha256, count, dtypes and shapes against the manifest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    entry = manifest.get("processed", {}).get(split)
    if not isinstance(entry, dict):
        raise DataError(f"{folder / MANIFEST} lists no {split!r} split; {fetch_hint(name)} to rebuild it")
    path = folder / str(entry.get("file", processed_name(split)))
    fix = f"{fetch_hint(name)} to rebuild it"
    if not path.is_file():
        raise DataError(f"{path} is missing; {fix}")
    if sha256_file(path) != entry.get("sha256"):
        raise DataError(f"{path} is corrupt (its sha256 differs from {MANIFEST}); {fix}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable safetensors file ({e}); {fix}") from e
    images, labels = tensors.get("images"), tensors.get("labels")
    ok = (
        images is not None
        and labels is not None
        and images.dtype == torch.uint8
        and labels.dtype == torch.int64
        and images.ndim == 4
        and list(images.shape[1:]) == list(entry.get("shape", []))
        and images.shape[0] == labels.shape[0] == entry.get("count")
    )
    if not ok:
        raise DataError(f"{path} does not hold the arrays {MANIFEST} describes; {fix}")
    return images, labels
