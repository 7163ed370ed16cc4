"""``shards:DIR``: WebDataset tar shards, the format for streaming training data to many machines.

A WebDataset shard is a plain POSIX tar file in which the files of one sample sit next to each
other and share a key: ``000000042.jpg`` and ``000000042.cls`` are sample 42's image (the
original file's bytes, never re-encoded) and label (decimal text). Any tar reader can open a
shard, the `webdataset` package reads it as it is, and a node streams its shards sequentially
from a disk or an object store without random access (Aizman et al., "High Performance I/O For
Large Scale Deep Learning", 2019). `cnnzoo data shard imagefolder:PATH --out DIR` writes::

    DIR/index.json            classes, channels, mean/std, and per split its shards'
                              sample counts, sizes and sha256 (checked before a shard is read)
    DIR/train-000000.tar ...  training samples in a fixed shuffled order (readers only shuffle
                              locally, so the writer mixes the classes once)
    DIR/val-000000.tar ...    the folder's val/, or a validation split held out of train
    DIR/test-000000.tar ...

Reading for training. A run reads its shards through ``streams`` parallel shard streams (by
default one per process). Each epoch the shards are permuted by (seed, epoch) and dealt to the
streams, balancing their sample counts; each stream reads its shards in turn through a small
shuffle buffer. Global batch k is the k-th ``batch / streams`` samples of every stream, and
process r reads streams r, r + world, ... only, so every machine reads a disjoint part of the
data. Because the global batch depends on ``streams`` and not on the number of processes, the
same run on 1, 2 or 4 processes (any that divide ``streams``) sees the same batches and reaches
the same weights. A stream shorter than the longest starts its shards again, so every sample
is seen at least once an epoch and every process takes the same number of steps.

Reading for evaluation: process r reads shards r, r + world, ... in order, no padding, so the
processes' counts add up to each split exactly once.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnzoo.data.catalog import DataError, DatasetInfo

__all__ = [
    "SHARDS",
    "ShardLoader",
    "read_index",
    "shard_loaders",
    "shards_info",
    "write_shards",
]

SHARDS = "shards:"
FORMAT = "cnnzoo-shards-v1"
INDEX = "index.json"
SPLITS = ("train", "val", "test")
DEFAULT_SHARD_SAMPLES = 1000
SHUFFLE_BUFFER = 1000


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- writing -------------------------------------------------------------------------------------
def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed metadata: the same images give byte-identical shards (and checksums) on any machine.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "", ""
    tar.addfile(info, io.BytesIO(data))


def _write_shard(path: Path, samples: Sequence[tuple[int, Path, int]]) -> dict[str, Any]:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, file, label in samples:
                ext = file.suffix.lower().lstrip(".")
                ext = "jpg" if ext == "jpeg" else ext
                _tar_member(tar, f"{key:09d}.{ext}", file.read_bytes())
                _tar_member(tar, f"{key:09d}.cls", str(label).encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": path.name, "samples": len(samples), "bytes": path.stat().st_size, "sha256": _sha256(path)}


def write_shards(
    source: str,
    out: str | os.PathLike,
    *,
    shard_samples: int = DEFAULT_SHARD_SAMPLES,
    val_fraction: float = 0.1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write an ``imagefolder:PATH`` dataset as WebDataset shards under `out`; returns the index.

    Train images go into the shards in an order fixed by a hash of their position, so shards mix
    the classes. A folder without val/ gets `val_fraction` of train held out as val shards with
    the same rule as in-memory training (`cnnzoo.data.split_validation`). index.json is written
    last: a folder without it holds no finished shards.
    """
    from cnnzoo.data.catalog import IMAGEFOLDER
    from cnnzoo.data.imagefolder import imagefolder_info, scan_folder
    from cnnzoo.data.loader import split_record, split_validation

    if not source.startswith(IMAGEFOLDER):
        raise DataError(f"cnnzoo data shard reads an image folder: imagefolder:PATH, not {source!r}")
    if shard_samples < 1:
        raise DataError(f"--shard-size must be >= 1 image, got {shard_samples}")
    folder = Path(source[len(IMAGEFOLDER) :]).expanduser().resolve()
    scan = scan_folder(folder)  # the in-memory path's own layout rules and refusals
    classes, layout = scan.classes, scan.layout
    files = {split: list(items) for split, items in scan.files.items()}
    out = Path(out)
    if (out / INDEX).exists() and not overwrite:
        raise DataError(f"{out} already holds shards ({INDEX}); --overwrite replaces them")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)

    record: dict[str, Any] = {"source": "the folder's own val/"}
    if "val" not in files:
        labels = torch.tensor([label for _, label in files["train"]])
        train_idx, val_idx = split_validation(labels, val_fraction)
        record = split_record(train_idx, val_idx, val_fraction)
        files["val"] = [files["train"][i] for i in val_idx.tolist()]
        files["train"] = [files["train"][i] for i in train_idx.tolist()]
    # The folder's own normalisation and size, as training on it directly would use them.
    info = imagefolder_info(folder)

    if overwrite:
        for old in out.glob("*.tar"):
            old.unlink()
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        items = files.get(split, [])
        if split == "train":  # a fixed shuffle, independent of listing order
            order = sorted(
                range(len(items)), key=lambda i: _digest(f"cnnzoo-shard-v1:{items[i][0].name}:{i}")
            )
            items = [items[i] for i in order]
        samples = [(k, f, label) for k, (f, label) in enumerate(items)]
        splits[split] = [
            _write_shard(out / f"{split}-{j:06d}.tar", samples[start : start + shard_samples])
            for j, start in enumerate(range(0, len(samples), shard_samples))
        ]
    index = {
        "format": FORMAT,
        "source": f"image folder {folder} ({layout})",
        "classes": list(classes),
        "in_chans": info.in_chans,
        "image_size": list(info.image_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "stats_note": info.stats_note,
        "val_split": record,
        "splits": splits,
    }
    from cnnzoo.atomic import atomic_write_text

    atomic_write_text(out / INDEX, json.dumps(index, indent=1) + "\n")
    return index


# -- reading -------------------------------------------------------------------------------------
def read_index(folder: str | os.PathLike) -> dict[str, Any]:
    """The shard folder's index.json, checked for its format and for the shards' presence and sizes."""
    folder = Path(folder).expanduser()
    path = folder / INDEX
    if not path.is_file():
        raise DataError(
            f"{folder} holds no {INDEX}; write shards with: cnnzoo data shard imagefolder:PATH --out {folder}"
        )
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not readable JSON ({e}); write the shards again") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} index; write the shards again with cnnzoo data shard")
    for split, shards in index["splits"].items():
        for s in shards:
            name = s["file"]
            if Path(name).name != name or not name.endswith(".tar"):
                raise DataError(f"{path} names {name!r}, which is not a shard file inside {folder}")
            f = folder / name
            if not f.is_file():
                raise DataError(f"{split} shard {f} is missing; write the shards again or restore it")
            if f.stat().st_size != s["bytes"]:
                raise DataError(
                    f"{f} has {f.stat().st_size:,} bytes, the index says {s['bytes']:,}: the shard is "
                    "damaged or was replaced; write the shards again"
                )
    return index


def shards_info(folder: str | os.PathLike) -> DatasetInfo:
    """The DatasetInfo of a shard folder, from its index (nothing is decoded)."""
    folder = Path(folder).expanduser().resolve()
    index = read_index(folder)
    count = {split: sum(s["samples"] for s in index["splits"].get(split, [])) for split in SPLITS}
    return DatasetInfo(
        name=f"{SHARDS}{folder}",
        num_classes=len(index["classes"]),
        in_chans=int(index["in_chans"]),
        image_size=tuple(index["image_size"]),
        classes=tuple(index["classes"]),
        mean=tuple(index["mean"]),
        std=tuple(index["std"]),
        train_size=count["train"],
        test_size=count["test"],
        val_size=count["val"],
        val_split=index.get("val_split"),
        own_val=count["val"] > 0,
        source=f"WebDataset shards {folder}, written from {index['source']}",
        stats_note=index.get("stats_note", ""),
        fetched=True,
        path=str(folder),
        torchvision=None,
    )


def _verified(path: Path, sha256: str) -> None:
    if _sha256(path) != sha256:
        raise DataError(f"{path} fails its sha256 check: the shard is damaged; write the shards again")


def _samples(path: Path) -> Iterator[tuple[bytes, int, str]]:
    """(image bytes, label, key) of each sample of one shard, in stored order."""
    key, image, label = None, None, None
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, ext = member.name.rpartition("/")[2].partition(".")
                if stem != key:
                    if image is not None and label is not None:
                        yield image, label, key
                    key, image, label = stem, None, None
                data = tar.extractfile(member).read()
                if ext == "cls":
                    label = int(data)
                else:
                    image = data
        if image is not None and label is not None:
            yield image, label, key
    except (tarfile.TarError, ValueError) as e:
        raise DataError(f"{path} is not a readable shard ({e}); write the shards again") from e


@dataclass(frozen=True)
class _Shard:
    path: Path
    samples: int
    sha256: str


class _BatchStream(torch.utils.data.IterableDataset):
    """Yields this process's uint8 batches of one epoch; worker w decodes batches w, w + workers, ..."""

    def __init__(self, loader: ShardLoader, epoch: int) -> None:
        self.loader, self.epoch = loader, epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k, batch in enumerate(self.loader._plan(self.epoch)):
            if k % workers == worker:
                yield self.loader._decode_batch(batch, self.epoch)


class ShardLoader:
    """Batches ``(x, y)`` read from WebDataset shards; TensorLoader's interface (set_epoch, len).

    Args:
        shards: the split's shards (from the index), all processes' alike.
        batch_size: samples per batch on this process.
        train: shuffle, augment and pad (training) or read in order (evaluation).
        streams: parallel shard streams of a training run (a multiple of world_size); the global
            batch is batch_size x world_size samples, batch / streams from each stream.
        size: (H, W) of the batches; in_chans: 1 or 3; mean, std: per channel in [0, 1].
        augment: the image folders' augmentations (`cnnzoo.data.transforms.sample_transform`):
            None, "flip", "crop-flip", or an ILSVRC one ("rrc-flip", "scale-flip", "alexnet",
            ...); an evaluation loader given the run's augment takes its evaluation crop.
        workers: DataLoader processes decoding the batches (0: in this process).
    """

    def __init__(
        self,
        shards: Sequence[_Shard],
        *,
        batch_size: int,
        train: bool,
        size: tuple[int, int],
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: str | None = None,
        streams: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        workers: int = 0,
        shuffle_buffer: int = SHUFFLE_BUFFER,
    ) -> None:
        from cnnzoo.data.loader import AUGMENTS
        from cnnzoo.data.transforms import STREAM_AUGMENTS

        if augment not in (*AUGMENTS, *STREAM_AUGMENTS):
            raise DataError(
                f"augment must be one of {', '.join(map(str, (*AUGMENTS, *STREAM_AUGMENTS)))}, not {augment!r}"
            )
        streams = world_size if streams is None else streams
        if train and (streams < world_size or streams % world_size):
            raise DataError(f"shard streams ({streams}) must be a multiple of the {world_size} processes")
        if train and batch_size * world_size % streams:
            raise DataError(
                f"the global batch {batch_size * world_size} is not divisible by the {streams} shard streams"
            )
        if train and len(shards) < streams:
            raise DataError(
                f"{len(shards)} training shard(s) cannot feed {streams} streams: write smaller shards "
                "(cnnzoo data shard --shard-size) or use fewer processes"
            )
        self.shards = list(shards)
        self.batch_size, self.train, self.size, self.in_chans = batch_size, train, tuple(size), in_chans
        self.streams, self.rank, self.world_size, self.seed = streams, rank, world_size, seed
        self.augment, self.workers, self.shuffle_buffer = augment, workers, shuffle_buffer
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.epoch = 0
        self._checked: set[Path] = set()
        self._crop_padding = 4 if min(self.size) >= 32 else 2  # TensorLoader's
        from cnnzoo.data.loader import pixel_normalisation

        self._scale, self._shift = pixel_normalisation(mean, std, in_chans, self.device)

    # -- sizes ------------------------------------------------------------------------------------
    def _assignment(self, epoch: int) -> list[list[_Shard]]:
        """The epoch's shards of each stream (training) or of this process (evaluation)."""
        if not self.train:
            return [self.shards[self.rank :: self.world_size]]
        g = torch.Generator().manual_seed(_digest(f"cnnzoo-shards:{self.seed}:{epoch}"))
        order = torch.randperm(len(self.shards), generator=g).tolist()
        streams: list[list[_Shard]] = [[] for _ in range(self.streams)]
        load = [0] * self.streams
        for i in order:  # each shard to the stream with the fewest samples so far (first on ties)
            j = load.index(min(load))
            streams[j].append(self.shards[i])
            load[j] += self.shards[i].samples
        return streams

    @property
    def _chunk(self) -> int:
        return self.batch_size * self.world_size // self.streams

    def _steps(self, epoch: int) -> int:
        longest = max(sum(s.samples for s in stream) for stream in self._assignment(epoch))
        return math.ceil(longest / self._chunk)

    @property
    def num_samples(self) -> int:
        """Samples this process sees per epoch."""
        if not self.train:
            return sum(s.samples for s in self.shards[self.rank :: self.world_size])
        return self._steps(self.epoch) * self.batch_size

    def __len__(self) -> int:
        if self.train:
            return self._steps(self.epoch)
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # -- one epoch --------------------------------------------------------------------------------
    def _read(self, shards: Sequence[_Shard]) -> Iterator[tuple[bytes, int, str]]:
        for shard in shards:
            if shard.path not in self._checked:  # the checksum is checked before the first use
                _verified(shard.path, shard.sha256)
                self._checked.add(shard.path)
            yield from _samples(shard.path)

    def _stream(self, shards: Sequence[_Shard], steps: int, g: torch.Generator) -> Iterator[Any]:
        """steps x chunk samples of one stream: one whole pass over its shards through the shuffle
        buffer (drained at the end, so every sample comes once), then the first samples of its
        shards again when the stream is shorter than the longest."""
        need = steps * self._chunk
        buffer: list[Any] = []
        given = 0
        for sample in self._read(shards):
            buffer.append(sample)
            if len(buffer) < self.shuffle_buffer:
                continue
            j = int(torch.randint(len(buffer), (1,), generator=g))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            yield buffer.pop()
            given += 1
        while buffer:
            j = int(torch.randint(len(buffer), (1,), generator=g))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            yield buffer.pop()
            given += 1
        while given < need:
            for sample in self._read(shards):
                if given == need:
                    break
                yield sample
                given += 1

    def _plan(self, epoch: int) -> Iterator[list[tuple[bytes, int, str]]]:
        """This process's batches of encoded samples, in order."""
        if not self.train:
            batch: list[Any] = []
            for sample in self._read(self._assignment(epoch)[0]):
                batch.append(sample)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch
            return
        steps = self._steps(epoch)
        mine = range(self.rank, self.streams, self.world_size)
        assignment = self._assignment(epoch)
        readers = [
            self._stream(
                assignment[j],
                steps,
                torch.Generator().manual_seed(_digest(f"cnnzoo-stream:{self.seed}:{epoch}:{j}")),
            )
            for j in mine
        ]
        for _ in range(steps):
            yield [sample for reader in readers for sample in (next(reader) for _ in range(self._chunk))]

    def _decode_batch(
        self, batch: Sequence[tuple[bytes, int, str]], epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from cnnzoo.data.transforms import PLAN_AUGMENTS, decode_bytes, sample_transform

        images = []
        for data, _, key in batch:
            image = decode_bytes(data, channels=self.in_chans, name=f"sample {key} of the shards")
            if not (self.train and self.augment is not None):
                images.append(sample_transform(image, size=self.size, augment=self.augment, train=False))
                continue
            # The augmentation of a sample depends on (seed, epoch, key) only: resume and any
            # number of workers give the same batches. The transforms are the image folders' own.
            g = torch.Generator().manual_seed(_digest(f"cnnzoo-aug:{self.seed}:{epoch}:{key}"))
            offset, flip, seed = None, False, 0
            if self.augment in PLAN_AUGMENTS:
                if self.augment == "crop-flip":
                    offset = tuple(torch.randint(0, 2 * self._crop_padding + 1, (2,), generator=g).tolist())
                flip = bool(torch.rand(1, generator=g) < 0.5)
            else:
                seed = int(torch.randint(0, 2**62, (1,), generator=g))
            image = sample_transform(
                image,
                size=self.size,
                augment=self.augment,
                seed=seed,
                offset=offset,
                flip=flip,
                crop_padding=self._crop_padding,
            )
            images.append(image)
        labels = torch.tensor([label for _, label, _ in batch], dtype=torch.int64)
        return torch.stack(images), labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        dataset = _BatchStream(self, epoch)
        if self.workers:
            batches = torch.utils.data.DataLoader(
                dataset,
                batch_size=None,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=2,
            )
        else:
            batches = dataset
        for x, y in batches:
            x = x.to(self.device, non_blocking=True).float() * self._scale + self._shift
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def shard_loaders(
    folder: str | os.PathLike,
    *,
    batch_size: int,
    eval_batch_size: int | None = None,
    augment: str | None = None,
    resize_to: int | tuple[int, int] | None = None,
    streams: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    workers: int = 0,
) -> tuple[ShardLoader, ShardLoader | None, ShardLoader, DatasetInfo]:
    """Train, validation and test loaders of a shard folder, and its DatasetInfo."""
    folder = Path(folder).expanduser().resolve()
    index = read_index(folder)
    info = shards_info(folder)
    size = info.image_size if resize_to is None else resize_to
    size = (size, size) if isinstance(size, int) else tuple(size)

    def shards(split: str) -> list[_Shard]:
        return [_Shard(folder / s["file"], s["samples"], s["sha256"]) for s in index["splits"].get(split, [])]

    common = dict(
        size=size, in_chans=info.in_chans, mean=info.mean, std=info.std, rank=rank,
        world_size=world_size, seed=seed, device=device, channels_last=channels_last, workers=workers,
    )  # fmt: skip
    train = ShardLoader(
        shards("train"), batch_size=batch_size, train=True, augment=augment, streams=streams, **common
    )
    ev = eval_batch_size or batch_size
    # Evaluation takes the training augmentation's crop (the ILSVRC ones: resize 256, crop 224).
    val = (
        ShardLoader(shards("val"), batch_size=ev, train=False, augment=augment, **common)
        if shards("val")
        else None
    )
    test = ShardLoader(shards("test"), batch_size=ev, train=False, augment=augment, **common)
    return train, val, test, info
