"""Tiny in-memory datasets with the loader protocol of `cnnzoo.data` (for the trainer's tests).

Each class is a bright square in its own place on a noisy background: learnable in a few steps.
The loader shuffles with a generator seeded by (seed, epoch) and shards a global permutation by
striding (rank::world_size), so N processes with batch B/N see exactly one process's batch B.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cnnzoo.data.loader import split_record, split_validation

NUM_CLASSES = 4
SIDE = 12


@dataclass
class Info:
    num_classes: int = NUM_CLASSES
    in_chans: int = 1
    image_size: tuple[int, int] = (SIDE, SIDE)
    classes: list[str] = field(
        default_factory=lambda: ["top-left", "top-right", "bottom-left", "bottom-right"]
    )
    mean: tuple[float, ...] = (0.3,)
    std: tuple[float, ...] = (0.3,)
    val_split: dict | None = None


def make_images(n: int, seed: int, num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = torch.randint(0, 160, (n, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    half = SIDE // 2
    for k in range(num_classes):
        r, c = divmod(k, 2)
        patch = images[labels == k, :, r * half + 1 : r * half + half - 1, c * half + 1 : c * half + half - 1]
        images[labels == k, :, r * half + 1 : r * half + half - 1, c * half + 1 : c * half + half - 1] = (
            patch + 70
        )
    return images, labels


class FakeLoader:
    def __init__(self, images, labels, *, batch_size, shuffle, seed=0, rank=0, world_size=1, info=None):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.info = info or Info()
        self.crash_at_epoch: int | None = None  # simulate a crash when this epoch starts

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.shuffle:
            order = torch.arange(n)
        else:
            g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
            order = torch.randperm(n, generator=g)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        return -(-len(self._order()) // self.batch_size)

    def __iter__(self):
        if self.crash_at_epoch is not None and self.epoch >= self.crash_at_epoch:
            raise RuntimeError("simulated crash")
        order = self._order()
        mean = torch.tensor(self.info.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.info.std).view(1, -1, 1, 1)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            x = (self.images[idx].float() / 255 - mean) / std
            yield x, self.labels[idx]


def make_loaders(
    name="fake",
    *,
    batch_size,
    root=None,
    augment=None,
    device="cpu",
    resize_to=None,
    seed=0,
    rank=0,
    world_size=1,
    download=False,
    n_train=256,
    n_test=128,
    num_classes=NUM_CLASSES,
    val_fraction=0.1,
):
    """`cnnzoo.data.make_loaders`'s signature over the synthetic images: (train, val, test, info),
    validation held out of train by the library's own rule."""
    info = Info(num_classes=num_classes, classes=Info().classes[:num_classes])

    def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = make_images(n, seed, num_classes)
        if resize_to is not None:  # as the real loader does for models that need a larger input
            x = (
                torch.nn.functional.interpolate(x.float(), size=(resize_to, resize_to))
                .round()
                .to(torch.uint8)
            )
        return x, y

    x, y = images(n_train, 1)
    train_idx, val_idx = split_validation(y, val_fraction)
    val = None
    if val_idx.numel():
        info.val_split = split_record(train_idx, val_idx, val_fraction)
        val = FakeLoader(
            x[val_idx],
            y[val_idx],
            batch_size=batch_size,
            shuffle=False,
            rank=rank,
            world_size=world_size,
            info=info,
        )
    train = FakeLoader(
        x[train_idx],
        y[train_idx],
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        rank=rank,
        world_size=world_size,
        info=info,
    )
    test = FakeLoader(
        *images(n_test, 2),
        batch_size=batch_size,
        shuffle=False,
        rank=rank,
        world_size=world_size,
        info=info,
    )
    return train, val, test, info


def config(tmp_path, name: str = "run", **kw):
    """A TrainConfig for LeNet-5 (ReLU) on these images, quiet and on one thread, in tmp_path/name."""
    from cnnzoo.train import TrainConfig

    base = dict(
        model="lenet5",
        data="fake",
        epochs=2,
        batch_size=32,
        lr=0.01,
        optimizer="adamw",
        weight_decay=1e-4,
        schedule="cosine",
        device="cpu",
        out=str(tmp_path / name),
        summary=False,
        progress=False,
        threads=1,
        model_kwargs={"act": "relu"},
    )
    base.update(kw)
    return TrainConfig(**base)
