"""Input pipelines: cnnzoo's loaders against the strongest plain-torch loader a user would write.

1. In memory (`TensorLoader`), Fashion-MNIST's 60,000 training images from the cnnzoo cache,
   random crop (zero padding 2) + horizontal flip, batch 128, normalised float32 out:

   - cnnzoo: `TensorLoader(augment="crop-flip")`;
   - plain torch (the headline baseline): 15 lines a competent user writes: the uint8 tensor
     padded once, a shuffled permutation split into batches, per-sample crop offsets and flips
     applied to the whole batch by one advanced-indexing gather, then one multiply-add;
   - per-sample PIL (the naive baseline): a `Dataset` whose `__getitem__` makes a PIL image and
     runs torchvision's `RandomCrop`, `RandomHorizontalFlip`, `ToTensor`, `Normalize`, in a
     `DataLoader` (0 workers).

   One warm-up epoch each, then `--rounds` epochs each, interleaved; medians.

2. Streamed image folders (`StreamLoader`): a folder of generated JPEGs (sides 256-375 px, smooth content, quality 90: about the size of an
ImageNet photo at that resolution) is read for training at 224 px with a random resized crop
(area 8-100 %, aspect 3/4-4/3) and a horizontal flip, batches of 64, normalised float32 out:

- cnnzoo: `StreamLoader` over `ImageFileDataset` (``--augment rrc-flip``): torchvision's JPEG
  decoder, the crop on uint8 tensors, uint8 batches out of the workers, normalised batched;
- torchvision ImageFolder (Pillow): the reference recipe a user writes: ``ImageFolder`` with its
  default Pillow loader and ``transforms.v2`` (RandomResizedCrop, RandomHorizontalFlip, ToImage,
  ToDtype, Normalize) in a ``DataLoader``;
- torchvision ImageFolder (decode_image): the same with torchvision's decoder as the loader;
- torchvision ImageFolder, uint8 out (the strong baseline): torchvision's decoder, the v2 crop
  and flip on uint8 tensors, uint8 batches collated and normalised once per batch in the main
  process: what cnnzoo does, written with torchvision's own pieces.

The same worker count, batch size and persistent workers on each side; one warm-up epoch each
(worker start-up is not timed), then `--rounds` epochs each, interleaved, median. The ratio is
cnnzoo's images/s over the fastest torchvision column of the same row.

    python benchmarks/bench_data.py                 # both parts: 5 in-memory rounds; 512 images, workers 0/1/2
    python benchmarks/bench_data.py --skip-folders  # the in-memory part alone
    python benchmarks/bench_data.py --skip-memory --images 256 --workers 0 2
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
import torch.nn.functional as F

from cnnzoo.data import TensorLoader, dataset_info, load_arrays
from cnnzoo.data.stream import ImageFileDataset, StreamLoader

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as the reference recipe


# -- 1. in memory -------------------------------------------------------------------------------
def plain_torch_loader(images: torch.Tensor, labels: torch.Tensor, batch: int, mean, std, pad: int = 2):
    """The plain-torch loader: `epoch()` gives the same batches as TensorLoader's crop-flip, no cnnzoo."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))  # once: uint8, every crop is a window of it
    scale = (1 / (255 * torch.tensor(std))).view(1, c, 1, 1)
    shift = (-torch.tensor(mean) / torch.tensor(std)).view(1, c, 1, 1)
    ch, ar_h, ar_w = torch.arange(c).view(1, c, 1, 1), torch.arange(h), torch.arange(w)

    def epoch():
        for idx in torch.randperm(n).split(batch):
            b = idx.numel()
            oy, ox = torch.randint(0, 2 * pad + 1, (2, b, 1))
            cols = torch.where(torch.rand(b, 1) < 0.5, w - 1 - ar_w, ar_w) + ox
            rows = (oy + ar_h).view(b, 1, h, 1)
            x = padded[idx.view(b, 1, 1, 1), ch, rows, cols.view(b, 1, 1, w)]
            yield x.float() * scale + shift, labels[idx]

    return epoch


def pil_loader(images: torch.Tensor, labels: torch.Tensor, batch: int, mean, std):
    from PIL import Image
    from torchvision import transforms as T

    class PerSample(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.tf = T.Compose(
                [T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
            )
            self.arr = images[:, 0].numpy()

        def __len__(self) -> int:
            return len(self.arr)

        def __getitem__(self, i: int):
            return self.tf(Image.fromarray(self.arr[i], mode="L")), int(labels[i])

    return torch.utils.data.DataLoader(PerSample(), batch_size=batch, shuffle=True, num_workers=0)


def bench_memory(rounds: int, batch: int) -> None:
    images, labels = load_arrays("fashion-mnist", "train")
    info = dataset_info("fashion-mnist")
    mean, std = info.mean, info.std
    zoo = TensorLoader(images, labels, batch_size=batch, augment="crop-flip", mean=mean, std=std, seed=0)
    plain = plain_torch_loader(images, labels, batch, mean, std)
    pil = pil_loader(images, labels, batch, mean, std)
    contenders = {"cnnzoo": lambda: zoo, "plain": plain, "pil": lambda: pil}
    # The three agree on what a batch is: shape, dtype and the normalised value range.
    for make in contenders.values():
        x, y = next(iter(make()))
        assert x.shape == (batch, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (batch,)
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds + 1):  # round 0 warms up
        for k in contenders if r % 2 else reversed(contenders):
            t0 = time.perf_counter()
            m = sum(x.shape[0] for x, _ in contenders[k]())
            if r:
                rates[k].append(m / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"\n## 1. in memory: Fashion-MNIST train ({len(images):,} images), crop (pad 2) + flip, batch {batch}, "
        f"median of {rounds} interleaved epochs"
    )
    print(
        f"{'cnnzoo TensorLoader img/s':>26} {'plain torch img/s':>18} {'ratio':>6} {'per-sample PIL img/s':>21} {'ratio':>6}"
    )
    print(
        f"{med['cnnzoo']:>26,.0f} {med['plain']:>18,.0f} {med['cnnzoo'] / med['plain']:>6.2f} "
        f"{med['pil']:>21,.0f} {med['cnnzoo'] / med['pil']:>6.1f}",
        flush=True,
    )


# -- 2. streamed image folders -----------------------------------------------------------------
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


class NormaliseBatches:
    """A uint8 loader's batches as normalised float32: one multiply-add per batch."""

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        self.loader = loader
        self.scale = (1 / (255 * torch.tensor(STD))).view(1, 3, 1, 1)
        self.shift = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)

    def __iter__(self):
        for x, y in self.loader:
            yield x.as_subclass(torch.Tensor).float() * self.scale + self.shift, y


def torchvision_loader(root: Path, workers: int, batch: int, decoder: str):
    """`decoder`: "pil" or "decode_image" (float32 per sample), or "uint8" (decode_image, uint8 batches)."""
    from torchvision.datasets import ImageFolder
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2

    steps = [v2.ToImage(), v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()]
    if decoder != "uint8":
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    kwargs = {} if decoder == "pil" else {"loader": lambda p: decode_image(p, mode=ImageReadMode.RGB)}
    ds = ImageFolder(str(root), transform=v2.Compose(steps), **kwargs)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
    return NormaliseBatches(loader) if decoder == "uint8" else loader


def epoch_rate(loader) -> float:
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 224, 224)
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--memory-rounds", type=int, default=5, help="in-memory epochs per contender")
    p.add_argument("--memory-batch", type=int, default=128)
    p.add_argument("--skip-memory", action="store_true", help="only the streamed folders")
    p.add_argument("--skip-folders", action="store_true", help="only the in-memory loaders")
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
    if not args.skip_memory:
        bench_memory(args.memory_rounds, args.memory_batch)
    if not args.skip_folders:
        bench_folders(args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (this machine is shared: figures are noisy)")


def bench_folders(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_jpegs(root, args.images)
        mb = sum(f.stat().st_size for f, _ in files) / 1e6
        print(
            f"\n## 2. streamed folder: {args.images} JPEGs, {mb:.1f} MB; 224-px random resized crop + flip, "
            f"batch {args.batch}, median of {args.rounds} interleaved epochs"
        )
        print(
            f"{'workers':>7} {'cnnzoo img/s':>13} {'tv uint8 img/s':>15} {'tv PIL img/s':>13} "
            f"{'tv decode img/s':>16} {'ratio':>6}"
        )
        for w in args.workers:
            contenders = {
                "cnnzoo": cnnzoo_loader(files, w, args.batch),
                "pil": torchvision_loader(root, w, args.batch, "pil"),
                "decode": torchvision_loader(root, w, args.batch, "decode_image"),
                "uint8": torchvision_loader(root, w, args.batch, "uint8"),
            }
            rates: dict[str, list[float]] = {k: [] for k in contenders}
            for loader in contenders.values():
                epoch_rate(loader)  # warm-up: worker start, page cache
            for r in range(args.rounds):  # interleaved, alternating order: a load change hits all alike
                for name in list(contenders) if r % 2 == 0 else list(contenders)[::-1]:
                    rates[name].append(epoch_rate(contenders[name]))
            med = {k: statistics.median(v) for k, v in rates.items()}
            ratio = med["cnnzoo"] / max(med["pil"], med["decode"], med["uint8"])
            print(
                f"{w:>7} {med['cnnzoo']:>13.0f} {med['uint8']:>15.0f} {med['pil']:>13.0f} "
                f"{med['decode']:>16.0f} {ratio:>6.2f}",
                flush=True,
            )
            del contenders


if __name__ == "__main__":
    main()
