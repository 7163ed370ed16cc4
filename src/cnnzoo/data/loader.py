"""The fast input path: a dataset held as uint8 tensors on the device, augmented a batch at a time.

A DataLoader with per-sample transforms spends most of a small CNN's step in Python (one PIL
image, one crop, one flip, one ToTensor per sample). Here a batch is one gather from the uint8
tensor; crop and flip are one more gather with per-sample offsets; conversion, resize and
normalisation are batched tensor ops.

Randomness is a function of (seed, epoch) only, drawn on the CPU for the whole epoch: the
permutation and every sample's crop offset and flip. So `set_epoch(e)` replays epoch e exactly
(resume is bit-exact), the same batches come out on any device, and a sample's augmentation
depends on its position in the epoch's permutation, not on which rank draws it: with
DistributedSampler-style interleaved shards, the union of the ranks' k-th batches is the
single-process k-th batch of the same global size, augmentation included.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "AUGMENTS",
    "VAL_SPLIT_RULE",
    "EpochPlan",
    "Loaders",
    "TensorLoader",
    "epoch_plan",
    "make_loaders",
    "split_validation",
]

AUGMENTS = (None, "flip", "crop-flip")


def pixel_normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, C, 1, 1) on `device`, with x = pixel * scale + shift equal to
    (pixel / 255 - mean) / std: the /255 and the normalisation folded into one multiply-add, the
    same floats on every input path (in memory, streamed folders, shards)."""
    c = channels
    m = torch.tensor(list(mean) if mean is not None else [0.0] * c, dtype=torch.float32)
    s = torch.tensor(list(std) if std is not None else [1.0] * c, dtype=torch.float32)
    if m.numel() != c or s.numel() != c:
        raise ValueError(f"mean and std need {c} values (one per channel), got {m.numel()} and {s.numel()}")
    return (1 / (255 * s)).view(1, c, 1, 1).to(device), (-m / s).view(1, c, 1, 1).to(device)


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"cnnzoo-loader:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class EpochPlan(NamedTuple):
    """One rank's share of an epoch: which samples, where they sit in the epoch, how augmented."""

    positions: torch.Tensor  # positions in the epoch's permutation (global, rank-independent)
    index: torch.Tensor  # the samples at those positions
    offsets: torch.Tensor | None  # crop offsets (n, 2) into the padded image ("crop-flip")
    flips: torch.Tensor | None  # horizontal flips (n,) ("flip", "crop-flip")


def epoch_plan(
    n: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    augment: str | None = None,
    crop_padding: int = 4,
    rank: int = 0,
    world_size: int = 1,
    pad_shards: bool = True,
) -> EpochPlan:
    """The permutation and plan augmentation of epoch `epoch`, a function of (seed, epoch) only.

    Drawn on the CPU for the whole epoch, then sharded like DistributedSampler: rank r gets
    positions r, r + world_size, ...; with `pad_shards` the positions are first padded with
    their own head so every rank gets ceil(n / world_size) (a few samples repeat).
    """
    g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    perm = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    offsets = flips = None
    if augment == "crop-flip":
        offsets = torch.randint(0, 2 * crop_padding + 1, (n, 2), generator=g)
    if augment in ("flip", "crop-flip"):
        flips = torch.rand(n, generator=g) < 0.5
    positions = torch.arange(n)
    if pad_shards and n % world_size:
        positions = torch.cat([positions, positions[: world_size - n % world_size]])
    positions = positions[rank::world_size]
    take = lambda t: None if t is None else t[positions]  # noqa: E731
    return EpochPlan(positions, perm[positions], take(offsets), take(flips))


class TensorLoader:
    """Batches ``(x, y)`` of a uint8 (N, C, H, W) dataset kept on `device`.

    Args:
        images: uint8 (N, C, H, W); labels: int64 (N,).
        batch_size: samples per batch on this rank.
        shuffle: a fresh permutation each epoch (else the stored order).
        drop_last: drop this rank's last, smaller batch.
        augment: None, ``"flip"`` (horizontal, p = 0.5) or ``"crop-flip"`` (random crop of the
            zero-padded image, padding 4 px, 2 px below 32 px, then the flip).
        mean, std: per-channel statistics in [0, 1]; x = (pixel / 255 - mean) / std. None: /255 only.
        device: where the data and the batches live.
        seed: with the epoch, fixes the permutation and augmentation.
        resize_to: resize batches (bilinear, antialiased when shrinking) to this side or (H, W).
        channels_last: yield x in channels_last memory format.
        rank, world_size: shard each epoch's permutation like DistributedSampler: rank r gets
            positions r, r + world_size, ...; with `pad_shards` the permutation is first padded
            with its own head so every rank gets ceil(N / world_size) samples (a few repeat).
        crop_padding: override the crop's padding.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        augment: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        resize_to: int | tuple[int, int] | None = None,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad_shards: bool = True,
        crop_padding: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(map(str, AUGMENTS))}, not {augment!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size, self.pad_shards = rank, world_size, pad_shards
        self.channels_last = channels_last
        c, h, w = images.shape[1:]
        self.crop_padding = crop_padding if crop_padding is not None else (4 if min(h, w) >= 32 else 2)
        if isinstance(resize_to, int):
            resize_to = (resize_to, resize_to)
        self.resize_to = None if resize_to is None or tuple(resize_to) == (h, w) else tuple(resize_to)
        self._scale, self._shift = pixel_normalisation(mean, std, c, self.device)

    # -- sizes -------------------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        n, ws = self.images.shape[0], self.world_size
        if self.pad_shards:
            return math.ceil(n / ws)
        return len(range(self.rank, n, ws))

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s permutation and augmentation for the next iteration."""
        self.epoch = epoch

    # -- one epoch ---------------------------------------------------------------------------------
    def _plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """This rank's sample indices, and their crop offsets (n, 2) and flips (n,), for `epoch`."""
        plan = epoch_plan(
            self.images.shape[0],
            seed=self.seed,
            epoch=epoch,
            shuffle=self.shuffle,
            augment=self.augment,
            crop_padding=self.crop_padding,
            rank=self.rank,
            world_size=self.world_size,
            pad_shards=self.pad_shards,
        )
        take = lambda t: None if t is None else t.to(self.device)  # noqa: E731
        return take(plan.index), take(plan.offsets), take(plan.flips)

    def _augment(
        self, x: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None
    ) -> torch.Tensor:
        # Crop and flip as one gather on uint8: output pixel (i, j) reads padded pixel
        # (oy + i, ox + j), or (oy + i, ox + W - 1 - j) when flipped.
        b, c, h, w = x.shape
        dev = x.device
        cols = torch.arange(w, device=dev).expand(b, w)
        if flips is not None:
            cols = torch.where(flips[:, None], w - 1 - cols, cols)
        if offsets is None:
            return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
        p = self.crop_padding
        x = F.pad(x, (p, p, p, p))
        rows = offsets[:, 0:1] + torch.arange(h, device=dev)
        cols = offsets[:, 1:2] + cols
        x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))
        return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1  # iterating again without set_epoch gives the next epoch, not a repeat
        index, offsets, flips = self._plan(epoch)
        for k in range(len(self)):
            sl = slice(k * self.batch_size, (k + 1) * self.batch_size)
            idx = index[sl]
            x = self.images[idx]
            if self.augment is not None:
                x = self._augment(x, None if offsets is None else offsets[sl], flips[sl])
            x = x.float()
            if self.resize_to is not None:
                shrink = self.resize_to[0] < x.shape[2] or self.resize_to[1] < x.shape[3]
                x = F.interpolate(
                    x, size=self.resize_to, mode="bilinear", align_corners=False, antialias=shrink
                )
            x = x * self._scale + self._shift
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]


VAL_SPLIT_RULE = (
    "per class, the round(fraction x n_class) training images whose positions have the lowest "
    "sha256('cnnzoo-val-v1:<position>') are held out for validation"
)


def split_validation(labels: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train positions, validation positions) of a training split, stratified and deterministic.

    Each class gives round(fraction x its size) images (at least one when fraction > 0 and the
    class has two or more), chosen by a hash of their position: the same files give the same
    split on any machine, torch version or seed, so runs with different seeds are selected on the
    same validation images. Both index tensors are sorted.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    labels = labels.cpu()
    n = labels.shape[0]
    if fraction == 0 or n == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.int64)
    rank = torch.tensor(
        [
            int.from_bytes(hashlib.sha256(f"cnnzoo-val-v1:{i}".encode()).digest()[:8], "little")
            for i in range(n)
        ],
        dtype=torch.float64,
    )
    val = []
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        k = round(fraction * where.numel())
        if k == 0 and where.numel() >= 2:
            k = 1
        k = min(k, where.numel() - 1)  # every class keeps a training image
        val.append(where[rank[where].argsort()[:k]])
    val_idx = torch.cat(val).sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val_idx] = False
    return keep.nonzero().flatten(), val_idx


def split_record(train_idx: torch.Tensor, val_idx: torch.Tensor, fraction: float) -> dict[str, Any]:
    """What a run records of its validation split: rule, sizes and a digest of the positions."""
    digest = hashlib.sha256(val_idx.to(torch.int64).numpy().tobytes()).hexdigest()
    return {
        "fraction": fraction,
        "rule": VAL_SPLIT_RULE,
        "train_size": int(train_idx.numel()),
        "val_size": int(val_idx.numel()),
        "val_positions_sha256": digest,
    }


class Loaders(NamedTuple):
    """What `make_loaders` returns; `val` is None when no validation split was asked for."""

    train: Any
    val: Any
    test: Any
    info: Any


def make_loaders(
    name_or_spec: str,
    *,
    batch_size: int,
    root: str | os.PathLike | None = None,
    augment: str | None = None,
    device: str | torch.device = "cpu",
    resize_to: int | tuple[int, int] | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    download: bool = False,
    channels_last: bool = False,
    drop_last: bool = False,
    eval_batch_size: int | None = None,
    val_fraction: float = 0.1,
    streams: int | None = None,
    memory_budget: str | int | None = None,
    workers: int | None = None,
) -> Loaders:
    """Train, validation and test loaders for a dataset name or ``imagefolder:PATH``, and its info.

    `val_fraction` of the training split is held out for validation (`split_validation`:
    stratified, deterministic); 0 gives no validation loader. A dataset with its own validation
    split (an image folder's val/) uses it instead. The train loader shuffles, augments
    and pads its shards to equal size (DDP needs the same step count on every rank). The
    validation and test loaders keep the stored order, never augment and do not pad, so the
    ranks' slices cover each set exactly once: sum correct counts and sample counts over ranks
    for exact metrics. The returned info's sizes are those actually loaded, and its `val_split`
    records how validation was chosen.

    ``imagefolder:PATH`` goes to `cnnzoo.data.stream.folder_loaders`: held in memory within
    `memory_budget` (None: "auto"), streamed from disk by `workers` processes above it.
    ``shards:DIR`` streams WebDataset shards (`cnnzoo.data.shards`): `streams` parallel shard
    streams fix the global batches (default: one per process), `workers` DataLoader processes
    decode them (default min(4, cores)); its validation split is the val shards written beside
    train.
    """
    from dataclasses import replace

    from cnnzoo.data.catalog import IMAGEFOLDER, SHARDS, dataset_info

    if name_or_spec.startswith(SHARDS):
        from cnnzoo.data.shards import shard_loaders
        from cnnzoo.data.stream import _default_workers

        return Loaders(
            *shard_loaders(
                name_or_spec[len(SHARDS) :],
                batch_size=batch_size,
                eval_batch_size=eval_batch_size,
                augment=augment,
                resize_to=resize_to,
                streams=streams,
                rank=rank,
                world_size=world_size,
                seed=seed,
                device=device,
                channels_last=channels_last,
                workers=_default_workers() if workers is None else workers,
            )
        )

    if name_or_spec.startswith(IMAGEFOLDER):
        from cnnzoo.data.stream import folder_loaders

        return folder_loaders(
            name_or_spec[len(IMAGEFOLDER) :],
            batch_size=batch_size,
            augment=augment,
            device=device,
            resize_to=resize_to,
            seed=seed,
            rank=rank,
            world_size=world_size,
            channels_last=channels_last,
            drop_last=drop_last,
            eval_batch_size=eval_batch_size,
            val_fraction=val_fraction,
            memory_budget=memory_budget,
            workers=workers,
        )
    from cnnzoo.data.sources import load_arrays
    from cnnzoo.data.transforms import STREAM_AUGMENTS

    if augment in STREAM_AUGMENTS:
        raise ValueError(
            f"--augment {augment} transforms each full-size image and needs --data imagefolder:PATH; "
            f"{name_or_spec} is batched in memory: use crop-flip or flip"
        )
    train = load_arrays(name_or_spec, "train", root, download=download)
    test = load_arrays(name_or_spec, "test", root, download=download)
    info = dataset_info(name_or_spec, root=root)
    if info.own_val and val_fraction > 0:  # an image folder's val/: the dataset's own split
        val = load_arrays(name_or_spec, "val", root)
        record = {"source": "the dataset's own val/ folder", "val_size": int(val[0].shape[0])}
    else:
        train_idx, val_idx = split_validation(train[1], val_fraction)
        val = (train[0][val_idx], train[1][val_idx]) if val_idx.numel() else None
        record = split_record(train_idx, val_idx, val_fraction) if val is not None else None
        if val is not None:
            train = (train[0][train_idx], train[1][train_idx])
    info = replace(
        info,
        train_size=int(train[0].shape[0]),
        test_size=int(test[0].shape[0]),
        val_size=0 if val is None else int(val[0].shape[0]),
        val_split=record,
    )
    common = dict(
        mean=info.mean,
        std=info.std,
        device=device,
        seed=seed,
        resize_to=resize_to,
        channels_last=channels_last,
        rank=rank,
        world_size=world_size,
    )
    train_loader = TensorLoader(
        *train, batch_size=batch_size, shuffle=True, drop_last=drop_last, augment=augment, **common
    )

    def evaluation(arrays: tuple[torch.Tensor, torch.Tensor]) -> TensorLoader:
        return TensorLoader(
            *arrays,
            batch_size=eval_batch_size or batch_size,
            shuffle=False,
            augment=None,
            pad_shards=False,
            **common,
        )

    return Loaders(train_loader, None if val is None else evaluation(val), evaluation(test), info)
