"""Image folders larger than memory: read from disk a batch at a time, in worker processes.

`folder_loaders` is `make_loaders` for ``imagefolder:PATH``. It estimates the decoded size of
the folder at the run's image size (N x C x H x W bytes); within the memory budget the folder
is decoded once into a `TensorLoader` (the fast path), above it, or when the augmentation is a
per-sample one (`cnnzoo.data.transforms.STREAM_AUGMENTS`), it is streamed by a `StreamLoader`.
The choice and its reason are in the returned info's `pipeline` (the trainer logs it).

`StreamLoader` has TensorLoader's interface (set_epoch, iteration over normalised (x, y)
batches, len, num_samples) and its determinism: the epoch's permutation, DDP sharding and the
plan augmentations (flip, crop-flip) are TensorLoader's own (`epoch_plan`), so a folder trains
the same batches streamed or in memory; the ILSVRC augmentations draw from a generator seeded
per (seed, epoch, position in the epoch), so resume replays an epoch exactly whatever the
number of workers. Workers decode and transform to uint8 (a quarter of float32's bytes through
the workers' shared memory); conversion and normalisation happen on the device, batched.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.data.catalog import DataError
from cnnzoo.data.loader import (
    AUGMENTS,
    Loaders,
    TensorLoader,
    epoch_plan,
    pixel_normalisation,
    split_record,
    split_validation,
)
from cnnzoo.data.transforms import STREAM_AUGMENTS, eval_crop_fraction, read_image, sample_transform

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "ImageFileDataset",
    "StreamLoader",
    "folder_loaders",
    "memory_budget_bytes",
    "parse_memory_budget",
]

DEFAULT_MEMORY_BUDGET = "auto"
AUTO_FRACTION = 0.25  # "auto": a quarter of the RAM (and of the GPU's memory when batches live there)
MAX_DEFAULT_WORKERS = 4
PREFETCH_FACTOR = 4  # batches each worker keeps ready
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_memory_budget(text: str | int | None) -> int | None:
    """Bytes of a budget such as ``"2GB"``, ``"512M"``, ``"1.5g"`` or ``0`` (always stream);
    None for ``"auto"`` (and None). Units are decimal (GB = 10^9 bytes); ``GiB`` is binary."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
        if m is None:
            raise ValueError(
                f"--memory-budget takes a size such as 2GB, 512MB, auto or 0 (always stream), not {text!r}"
            )
        base = 1024 ** "kmgt".index(m.group(2)) * 1024 if m.group(3) and m.group(2) else _UNITS[m.group(2)]
        value = round(float(m.group(1)) * base)
    if value < 0:
        raise ValueError(f"--memory-budget must be >= 0, got {text!r}")
    return value


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 10**9  # a platform without sysconf: assume a small machine


def memory_budget_bytes(budget: str | int | None, device: str | torch.device = "cpu") -> tuple[int, str]:
    """The budget in bytes and how it was set (for the log line)."""
    value = parse_memory_budget(budget)
    if value is not None:
        return value, f"--memory-budget {budget}"
    value = int(AUTO_FRACTION * _ram_bytes())
    how = "auto: a quarter of the RAM"
    device = torch.device(device)
    if device.type == "cuda":  # TensorLoader keeps the data on the device
        gpu = int(AUTO_FRACTION * torch.cuda.get_device_properties(device).total_memory)
        if gpu < value:
            value, how = gpu, "auto: a quarter of the GPU's memory"
    return value, how


def _size_text(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


class ImageFileDataset(torch.utils.data.Dataset):
    """Map-style dataset of image files: item -> (uint8 (C, H, W) at `size`, label).

    An item is a file index (evaluation transform) or the tuple a `StreamLoader` plans:
    ``(index, seed, row offset, col offset, flip)`` (row offset < 0: no crop). Paths are kept as
    one numpy byte array, not a list of str, so forked workers do not copy the list's pages
    when they touch the objects' reference counts.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        labels: Sequence[int] | torch.Tensor,
        *,
        channels: int,
        size: tuple[int, int],
        augment: str | None = None,
        train: bool = False,
        crop_padding: int = 4,
    ) -> None:
        if augment not in (*AUGMENTS, *STREAM_AUGMENTS):
            raise ValueError(f"unknown augmentation {augment!r}")
        self.paths = np.array([os.fsencode(str(f)) for f in files])
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.channels, self.size = channels, (int(size[0]), int(size[1]))
        self.augment, self.train, self.crop_padding = augment, train, crop_padding

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int, int, int, bool]) -> tuple[torch.Tensor, int]:
        index, seed, oy, ox, flip = (item, 0, -1, -1, False) if isinstance(item, int) else item
        img = read_image(os.fsdecode(self.paths[index]), channels=self.channels)
        img = sample_transform(
            img,
            size=self.size,
            augment=self.augment,
            seed=seed,
            offset=None if oy < 0 else (oy, ox),
            flip=flip,
            crop_padding=self.crop_padding,
            train=self.train,
        )
        return img.contiguous(), int(self.labels[index])


class _PlanSampler(torch.utils.data.Sampler):
    """Yields the items the loader planned for the current epoch (set before each iteration)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, int, int, bool]] = []

    def __iter__(self) -> Iterator[tuple[int, int, int, int, bool]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _sample_seeds(seed: int, epoch: int, positions: torch.Tensor) -> np.ndarray:
    """A 63-bit seed per (seed, epoch, position): splitmix64 of the epoch seed and the position."""
    from cnnzoo.data.loader import _epoch_seed

    with np.errstate(over="ignore"):
        z = np.uint64(_epoch_seed(seed, epoch)) + positions.numpy().astype(np.uint64) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)


def _one_line(e: DataError) -> str:
    """A worker's DataError arrives with the worker's traceback in its message: keep the message."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else str(e)
    return last.split("DataError: ", 1)[-1] if "Traceback" in str(e) else last


class StreamLoader:
    """Batches ``(x, y)`` of image files decoded per batch, with TensorLoader's interface.

    Args:
        dataset: the files (`ImageFileDataset`; its `train` and `augment` decide the transform).
        batch_size, shuffle, drop_last, mean, std, device, seed, channels_last, rank,
            world_size, pad_shards: as TensorLoader.
        workers: DataLoader worker processes (0: decode in this process). They persist across
            epochs and keep `prefetch` batches each ready; batches are pinned when the device is
            a GPU.
    """

    def __init__(
        self,
        dataset: ImageFileDataset,
        *,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad_shards: bool = True,
        workers: int = 0,
        prefetch: int = PREFETCH_FACTOR,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.dataset = dataset
        self.device = torch.device(device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size, self.pad_shards = rank, world_size, pad_shards
        self.channels_last, self.workers = channels_last, workers
        # The same multiply-add as TensorLoader, so both paths give the same floats.
        self._scale, self._shift = pixel_normalisation(mean, std, dataset.channels, self.device)
        self._sampler = _PlanSampler()
        pin = self.device.type == "cuda"
        self._loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._sampler,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=pin,
            prefetch_factor=prefetch if workers > 0 else None,
        )

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        n, ws = len(self.dataset), self.world_size
        return math.ceil(n / ws) if self.pad_shards else len(range(self.rank, n, ws))

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s permutation and augmentation for the next iteration."""
        self.epoch = epoch

    def plan_items(self, epoch: int) -> list[tuple[int, int, int, int, bool]]:
        """This rank's items of `epoch`, in order: (index, seed, row offset, col offset, flip)."""
        ds = self.dataset
        augment = ds.augment if ds.train else None
        plan = epoch_plan(
            len(ds),
            seed=self.seed,
            epoch=epoch,
            shuffle=self.shuffle,
            augment=augment,
            crop_padding=ds.crop_padding,
            rank=self.rank,
            world_size=self.world_size,
            pad_shards=self.pad_shards,
        )
        k = len(plan.index)
        seeds = (
            _sample_seeds(self.seed, epoch, plan.positions).tolist()
            if augment in STREAM_AUGMENTS
            else [0] * k
        )
        offsets = plan.offsets.tolist() if plan.offsets is not None else [(-1, -1)] * k
        flips = plan.flips.tolist() if plan.flips is not None else [False] * k
        return [
            (i, s, o[0], o[1], f)
            for i, s, o, f in zip(plan.index.tolist(), seeds, offsets, flips, strict=True)
        ]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1  # iterating again without set_epoch gives the next epoch, as TensorLoader
        self._sampler.items = self.plan_items(epoch)  # before iter(): persistent workers prefetch at once
        try:
            for x, y in self._loader:
                # In place: the same two roundings as TensorLoader's x * scale + shift, without
                # allocating two more float batches (a third of this loop's time at 224 px).
                x = x.to(self.device, non_blocking=True).float().mul_(self._scale).add_(self._shift)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y.to(self.device, non_blocking=True)
        except DataError as e:
            raise DataError(_one_line(e)) from None


def _default_workers() -> int:
    return min(
        MAX_DEFAULT_WORKERS,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
    )


def folder_loaders(
    path: str | Path,
    *,
    batch_size: int,
    augment: str | None = None,
    device: str | torch.device = "cpu",
    resize_to: int | tuple[int, int] | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    drop_last: bool = False,
    eval_batch_size: int | None = None,
    val_fraction: float = 0.1,
    memory_budget: str | int | None = None,
    workers: int | None = None,
) -> Loaders:
    """`make_loaders` for an image folder: in memory within `memory_budget`, else streamed.

    `resize_to` is the run's image size (default: the folder's `image_size`). `memory_budget`:
    bytes or a size text (`parse_memory_budget`); None or ``"auto"``: a quarter of the RAM (and
    of the GPU's memory on a GPU); 0 always streams. `workers`: DataLoader processes when
    streaming (default min(4, cores)); the in-memory path uses none.
    """
    from cnnzoo.data.imagefolder import imagefolder_info, scan_folder

    if augment not in (*AUGMENTS, *STREAM_AUGMENTS):
        raise ValueError(
            f"augment must be one of {', '.join(map(str, (*AUGMENTS, *STREAM_AUGMENTS)))}, not {augment!r}"
        )
    scan = scan_folder(path)
    info = imagefolder_info(path)
    if isinstance(resize_to, int):
        resize_to = (resize_to, resize_to)
    size = tuple(resize_to) if resize_to is not None else scan.size
    files = dict(scan.files)
    labels = {s: torch.tensor([label for _, label in items], dtype=torch.int64) for s, items in files.items()}

    if info.own_val and val_fraction > 0:
        record = {"source": "the dataset's own val/ folder", "val_size": len(files["val"])}
        val_files: list | None = files["val"]
        train_files = files["train"]
    else:
        train_idx, val_idx = split_validation(labels["train"], val_fraction)
        record = split_record(train_idx, val_idx, val_fraction) if val_idx.numel() else None
        val_files = [files["train"][i] for i in val_idx.tolist()] if val_idx.numel() else None
        train_files = [files["train"][i] for i in train_idx.tolist()]

    budget, how = memory_budget_bytes(memory_budget, device)
    counted = len(train_files) + len(val_files or []) + len(files["test"])
    need = counted * scan.channels * size[0] * size[1]
    at = f"{size[0]}x{size[1]}"
    if augment in STREAM_AUGMENTS:
        stream, why = True, f"--augment {augment} is a per-sample transform of each full-size image"
    elif need > budget:
        stream, why = (
            True,
            f"{_size_text(need)} decoded at {at} exceeds the budget {_size_text(budget)} ({how})",
        )
    else:
        stream, why = (
            False,
            f"{_size_text(need)} decoded at {at} fits the budget {_size_text(budget)} ({how})",
        )
    n_workers = (_default_workers() if workers is None else workers) if stream else 0
    if stream:
        pipeline = f"streamed from disk, {n_workers} worker process{'es' * (n_workers != 1)}: {why}"
    else:
        pipeline = f"in memory: {why}"
    info = replace(
        info,
        train_size=len(train_files),
        test_size=len(files["test"]),
        val_size=len(val_files or []),
        val_split=record,
        pipeline=pipeline,
    )
    common: dict[str, Any] = dict(
        mean=info.mean,
        std=info.std,
        device=device,
        seed=seed,
        channels_last=channels_last,
        rank=rank,
        world_size=world_size,
    )
    crop = eval_crop_fraction(augment)
    crop_padding = 4 if min(size) >= 32 else 2  # TensorLoader's

    if not stream:
        from cnnzoo.data.imagefolder import split_arrays

        def arrays(split: str, items: list) -> tuple[torch.Tensor, torch.Tensor]:
            images, lab = split_arrays(path, split, size=size, crop=crop)
            where = {f: j for j, (f, _) in enumerate(files[split])}
            keep = torch.tensor([where[f] for f, _ in items], dtype=torch.int64)
            return images[keep], lab[keep]

        def memory(split: str, items: list, train: bool) -> TensorLoader:
            return TensorLoader(
                *arrays(split, items),
                batch_size=batch_size if train else eval_batch_size or batch_size,
                shuffle=train,
                drop_last=drop_last and train,
                augment=augment if train else None,
                pad_shards=train,
                **common,
            )

        val_split = "val" if info.own_val and val_fraction > 0 else "train"
        return Loaders(
            memory("train", train_files, True),
            None if val_files is None else memory(val_split, val_files, False),
            memory("test", files["test"], False),
            info,
        )

    def streamed(items: list, train: bool) -> StreamLoader:
        dataset = ImageFileDataset(
            [f for f, _ in items],
            [label for _, label in items],
            channels=scan.channels,
            size=size,
            augment=augment,
            train=train,
            crop_padding=crop_padding,
        )
        return StreamLoader(
            dataset,
            batch_size=batch_size if train else eval_batch_size or batch_size,
            shuffle=train,
            drop_last=drop_last and train,
            pad_shards=train,
            workers=n_workers,
            **common,
        )

    return Loaders(
        streamed(train_files, True),
        None if val_files is None else streamed(val_files, False),
        streamed(files["test"], False),
        info,
    )
