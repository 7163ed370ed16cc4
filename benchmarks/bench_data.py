"""Streamed image folders: images/s of cnnzoo's StreamLoader against torchvision's ImageFolder.

A folder of generated JPEGs (sides 256-375 px, smooth content, quality 90: about the size of an
ImageNet photo at that resolution) is read for training at 224 px with a random resized crop
(area 8-100 %, aspect 3/4-4/3) and a horizontal flip, batches of 64, normalised float32 out:

- cnnzoo: `StreamLoader` over `ImageFileDataset` (``--augment rrc-flip``): torchvision's JPEG
  decoder, the crop on uint8 tensors, uint8 batches out of the workers, normalised batched;
- torchvision ImageFolder (Pillow): the reference recipe a user writes: ``ImageFolder`` with its
  default Pillow loader and ``transforms.v2`` (RandomResizedCrop, RandomHorizontalFlip, ToImage,
  ToDtype, Normalize) in a ``DataLoader``;
- torchvision ImageFolder (decode_image): the same with torchvision's decoder as the loader.

The same worker count, batch size and persistent workers on each side; one warm-up epoch each
(worker start-up is not timed), then `--rounds` epochs each, interleaved, median. The ratio is
cnnzoo's images/s over the faster torchvision column of the same row.

    python benchmarks/bench_data.py                 # 512 images, workers 0/1/2, 3 rounds
    python benchmarks/bench_data.py --images 256 --workers 0 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cnnzoo.data.stream import ImageFileDataset, StreamLoader

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as the reference recipe


def make_jpegs(root: Path, n: int, classes: int = 8, seed: int = 0) -> list[tuple[Path, int]]:
    """n JPEGs in root/<class>/, sides 256-375 px: smooth colour fields plus mild noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(256, 376, 2))
        coarse = rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        pixels = np.asarray(img).astype(np.int16) + rng.integers(-8, 9, (h, w, 3))
        path = root / f"c{i % classes}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        files.append((path, i % classes))
    return files


def cnnzoo_loader(files, workers: int, batch: int) -> StreamLoader:
    ds = ImageFileDataset(
        [f for f, _ in files],
        [c for _, c in files],
        channels=3,
        size=(224, 224),
        augment="rrc-flip",
        train=True,
    )
    return StreamLoader(ds, batch_size=batch, mean=MEAN, std=STD, workers=workers, seed=0)


def torchvision_loader(root: Path, workers: int, batch: int, decoder: str) -> torch.utils.data.DataLoader:
    from torchvision.datasets import ImageFolder
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2

    tf = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    kwargs = {} if decoder == "pil" else {"loader": lambda p: decode_image(p, mode=ImageReadMode.RGB)}
    ds = ImageFolder(str(root), transform=tf, **kwargs)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )


def epoch_rate(loader) -> float:
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 224, 224)
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)  # the main process; workers run one thread each (DataLoader's rule)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision 0.29's decoder notice

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_jpegs(root, args.images)
        mb = sum(f.stat().st_size for f, _ in files) / 1e6
        print(f"{args.images} JPEGs, {mb:.1f} MB; 224-px random resized crop + flip, batch {args.batch}")
        print(
            f"{'workers':>7} {'cnnzoo img/s':>13} {'tv PIL img/s':>13} {'tv decode img/s':>16} {'ratio':>6}"
        )
        for w in args.workers:
            contenders = {
                "cnnzoo": cnnzoo_loader(files, w, args.batch),
                "pil": torchvision_loader(root, w, args.batch, "pil"),
                "decode": torchvision_loader(root, w, args.batch, "decode_image"),
            }
            rates: dict[str, list[float]] = {k: [] for k in contenders}
            for loader in contenders.values():
                epoch_rate(loader)  # warm-up: worker start, page cache
            for _ in range(args.rounds):  # interleaved: a load change hits every contender alike
                for name, loader in contenders.items():
                    rates[name].append(epoch_rate(loader))
            med = {k: statistics.median(v) for k, v in rates.items()}
            ratio = med["cnnzoo"] / max(med["pil"], med["decode"])
            print(f"{w:>7} {med['cnnzoo']:>13.0f} {med['pil']:>13.0f} {med['decode']:>16.0f} {ratio:>6.2f}")
            del contenders
    print(f"load average {os.getloadavg()[0]:.1f} at the end (this machine is shared: figures are noisy)")


if __name__ == "__main__":
    main()
