"""Training speed: cnnzoo's trainer and input path against plain PyTorch, measured in one run.

Three tables (issue 5), on Fashion-MNIST from the cnnzoo cache (`cnnzoo data fetch fashion-mnist`):

1. input path: images/s of cnnzoo's TensorLoader (uint8 tensors in memory, batched crop + flip
   on tensors) vs torchvision's DataLoader with per-sample transforms (RandomCrop, flip,
   ToTensor, Normalize), one pass over the training set each;
2. training throughput: images/s of cnnzoo's Trainer (fast input path, channels_last) vs a bare
   loop (NCHW eager, tensor indexing, the same model, optimiser and batches), for ResNet-20
   (1x28x28 input) and LeNet-5; the two are timed alternately, median of `--rounds`;
3. time to 90% test top-1 with LeNet-5 (the `lenet-fast` recipe): cnnzoo's `train()` vs the same
   recipe in a bare loop; training seconds until the first epoch at or above 90%.

    python benchmarks/bench_train.py                  # all three (a few minutes on 2 cores)
    python benchmarks/bench_train.py --skip-time-to-90
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.data import TensorLoader, dataset_info, load_arrays
from cnnzoo.train import Trainer, resolve_config, train

DATA = "fashion-mnist"


# -- 1. input path ------------------------------------------------------------------------------
def bench_input(images: torch.Tensor, labels: torch.Tensor, mean, std, batch: int) -> dict:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    fast = TensorLoader(images, labels, batch_size=batch, augment="crop-flip", mean=mean, std=std, seed=0)
    t0 = time.perf_counter()
    n_fast = sum(x.shape[0] for x, _ in fast)
    fast_s = time.perf_counter() - t0

    class PerSample(Dataset):
        def __init__(self) -> None:
            self.tf = T.Compose(
                [T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
            )
            self.arr = images[:, 0].numpy()

        def __len__(self) -> int:
            return len(self.arr)

        def __getitem__(self, i: int):
            return self.tf(Image.fromarray(self.arr[i], mode="L")), int(labels[i])

    loader = DataLoader(PerSample(), batch_size=batch, shuffle=True, num_workers=0)
    t0 = time.perf_counter()
    n_tv = sum(x.shape[0] for x, _ in loader)
    tv_s = time.perf_counter() - t0
    return {
        "cnnzoo_img_s": n_fast / fast_s,
        "torchvision_img_s": n_tv / tv_s,
        "ratio": (n_fast / fast_s) / (n_tv / tv_s),
    }


# -- 2. training throughput ---------------------------------------------------------------------
def bare_steps(model: nn.Module, images, labels, mean, std, batch: int, steps: int, lr: float) -> float:
    """The plain loop: NCHW, index the uint8 tensor, normalise, step. Returns seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    model.train()
    t0 = time.perf_counter()
    for i in range(steps):
        idx = perm[i * batch : (i + 1) * batch]
        x = (images[idx].float().div_(255) - m) / s
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def cnnzoo_steps(
    name: str,
    images,
    labels,
    info,
    batch: int,
    steps: int,
    lr: float,
    amp: bool = False,
    compile: bool = False,
) -> float:
    """One epoch of cnnzoo's Trainer over exactly `steps` batches. Returns the epoch's seconds.

    With `compile`, a first epoch over the same batches pays for compilation and is not timed.
    """
    sub = steps * batch
    train_loader = TensorLoader(
        images[:sub], labels[:sub], batch_size=batch, mean=info.mean, std=info.std, seed=0, channels_last=True
    )
    test_loader = TensorLoader(
        images[:batch], labels[:batch], batch_size=batch, shuffle=False, mean=info.mean, std=info.std
    )
    cfg = resolve_config(
        None, model=name, data=DATA, epochs=1, batch_size=batch, lr=lr, optimizer="sgd", weight_decay=1e-4,
        schedule="constant", channels_last=True, amp=amp, compile=compile, out="/tmp/cnnzoo-bench-train",
        summary=False, progress=False,
    )  # fmt: skip
    trainer = Trainer(cfg, data=(train_loader, test_loader, info), log=lambda *_: None)
    if compile:
        trainer.train_epoch(0)
    return trainer.train_epoch(1)["train_seconds"]


VARIANTS = {  # cnnzoo train flags timed against the same bare loop; all use channels_last
    "fp32": {},
    "--amp": {"amp": True},  # bf16 autocast: native on CPUs with AVX512-BF16/AMX, emulated (slow) elsewhere
    "--compile": {"compile": True},
}


def bench_throughput(
    name: str, images, labels, info, batch: int, steps: int, rounds: int, variants: list[str]
) -> list[dict]:
    """Rounds alternate the contenders' order; each cnnzoo variant against the bare loop's median."""
    lr = 0.05
    times: dict[str, list[float]] = {v: [] for v in ["bare", *variants]}
    for r in range(rounds):
        order = ["bare", *variants]
        for who in order if r % 2 == 0 else order[::-1]:
            if who == "bare":
                torch.manual_seed(0)
                model = cnnzoo.create_model(name, num_classes=10, in_chans=1)
                times[who].append(bare_steps(model, images, labels, info.mean, info.std, batch, steps, lr))
            else:
                times[who].append(cnnzoo_steps(name, images, labels, info, batch, steps, lr, **VARIANTS[who]))
    b = statistics.median(times["bare"])
    rows = []
    for v in variants:
        o = statistics.median(times[v])
        rows.append(
            {"model": name, "variant": v, "cnnzoo_img_s": steps * batch / o, "bare_img_s": steps * batch / b,
             "ratio": b / o}
        )  # fmt: skip
    return rows


# -- 3. time to 90% -----------------------------------------------------------------------------
def time_to_90_cnnzoo() -> tuple[float | None, list[float]]:
    cfg = resolve_config(
        "lenet-fast", model="lenet5", data=DATA, out="/tmp/cnnzoo-bench-90", summary=False, progress=False
    )
    train(cfg, log=lambda *_: None)
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in Path(cfg.out, "metrics.jsonl").read_text().splitlines()]
    return _first_90([r["train_seconds"] for r in rows], [r["test_top1"] for r in rows])


def time_to_90_bare(images, labels, test_x, test_y, info) -> tuple[float | None, list[float]]:
    """The lenet-fast recipe (AdamW, one-cycle, batch 64, 7 epochs) in a plain loop."""
    rec = resolve_config("lenet-fast", model="lenet5", data=DATA)
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5")
    opt = torch.optim.AdamW(model.parameters(), lr=rec.lr, weight_decay=rec.weight_decay)
    steps_per_epoch = len(images) // rec.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=rec.lr, total_steps=steps_per_epoch * rec.epochs, pct_start=rec.pct_start
    )
    m = torch.tensor(info.mean).view(1, -1, 1, 1)
    s = torch.tensor(info.std).view(1, -1, 1, 1)
    tx = (test_x.float() / 255 - m) / s
    seconds, accs = [], []
    for epoch in range(rec.epochs):
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch))
        model.train()
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            idx = perm[i * rec.batch_size : (i + 1) * rec.batch_size]
            x = (images[idx].float() / 255 - m) / s
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        seconds.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            accs.append((model(tx).argmax(1) == test_y).float().mean().item())
    return _first_90(seconds, accs)


def _first_90(seconds: list[float], accs: list[float]) -> tuple[float | None, list[float]]:
    for i, a in enumerate(accs):
        if a >= 0.90:
            return sum(seconds[: i + 1]), accs
    return None, accs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-time-to-90", action="store_true")
    parser.add_argument(
        "--variants", default="fp32,--amp", help=f"cnnzoo variants to time, from {','.join(VARIANTS)}"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    images, labels = load_arrays(DATA, "train")
    test_x, test_y = load_arrays(DATA, "test")
    info = dataset_info(DATA)
    print(
        f"# {DATA}: {len(images)} train images; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}"
    )

    r = bench_input(images, labels, info.mean, info.std, args.batch)
    print("\n## 1. input path, one pass, crop + flip, batch", args.batch)
    print(f"cnnzoo TensorLoader {r['cnnzoo_img_s']:12,.0f} img/s")
    print(f"torchvision DataLoader + per-sample transforms {r['torchvision_img_s']:12,.0f} img/s")
    print(f"ratio {r['ratio']:.1f}x")

    print(f"\n## 2. training throughput, batch {args.batch}, {args.steps} steps, median of {args.rounds}")
    print(f"{'model':10s} {'cnnzoo':10s} {'cnnzoo img/s':>13s} {'bare loop img/s':>16s} {'ratio':>7s}")
    variants = args.variants.split(",")
    for name in ("resnet20", "lenet5"):
        for row in bench_throughput(
            name, images, labels, info, args.batch, args.steps, args.rounds, variants
        ):
            print(
                f"{name:10s} {row['variant']:10s} {row['cnnzoo_img_s']:13.1f} {row['bare_img_s']:16.1f} "
                f"{row['ratio']:7.2f}",
                flush=True,
            )

    if not args.skip_time_to_90:
        print("\n## 3. LeNet-5 to 90% Fashion-MNIST test top-1 (lenet-fast recipe), training seconds")
        ours, ours_acc = time_to_90_cnnzoo()
        bare, bare_acc = time_to_90_bare(images, labels, test_x, test_y, info)
        fmt = lambda s: "not reached" if s is None else f"{s:.1f} s"  # noqa: E731
        print(f"cnnzoo train  {fmt(ours):>12s}  top-1 by epoch {[round(a, 4) for a in ours_acc]}")
        print(f"bare loop     {fmt(bare):>12s}  top-1 by epoch {[round(a, 4) for a in bare_acc]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
