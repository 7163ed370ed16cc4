"""Training speed: cnnzoo's training engine and input path against plain PyTorch, in one run.

Four tables, on Fashion-MNIST from the cnnzoo cache (`cnnzoo data fetch fashion-mnist`) and on
generated crowd images:

1. input path: images/s of cnnzoo's TensorLoader (uint8 tensors in memory, batched crop + flip
   on tensors) vs torchvision's DataLoader with per-sample transforms (RandomCrop, flip,
   ToTensor, Normalize), one pass over the training set each;
2. training throughput: images/s of the engine (fast input path, channels_last) against two bare
   loops over the same model and batches, for ResNet-20 (1x28x28 input) and LeNet-5:
   - "strong": what a competent user writes with the same speed settings as the engine: the
     model and batches in channels_last, fused SGD, and bf16 autocast in the --amp rows. The
     ratio against it is the headline: the engine's own cost or gain.
   - "plain": NCHW, torch's default (for-loop) SGD, fp32: the loop of the issue-5 table, kept
     so that the ratios can be compared with earlier measurements.
   The contenders are timed alternately, median of `--rounds`;
3. time to 90% test top-1 with LeNet-5 (the `lenet-fast` recipe): cnnzoo's `train()` (its test
   curve) vs the same recipe in a bare loop; training seconds until the first epoch at or above
   90%;
4. counting: the engine's training epoch for resnet50_counter on 256x256 crops vs the counting
   loop cnnzoo had before the engine (a plain loop over the same batches: forward, pixel MSE,
   backward, AdamW step, crop MAE), alternately, median of `--rounds`.

    python benchmarks/bench_train.py                  # all four (several minutes on 2 cores)
    python benchmarks/bench_train.py --skip-time-to-90 --skip-counting
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

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
def bare_steps(
    model: nn.Module,
    images,
    labels,
    mean,
    std,
    batch: int,
    steps: int,
    lr: float,
    *,
    strong: bool = False,
    amp: bool = False,
) -> float:
    """A bare loop: index the uint8 tensor, normalise, step. Returns seconds.

    `strong`: the model and batches in channels_last and fused SGD, as the engine runs them;
    `amp`: bf16 autocast around the forward pass and the loss.
    """
    if strong:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, fused=strong or None)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    model.train()
    t0 = time.perf_counter()
    for i in range(steps):
        idx = perm[i * batch : (i + 1) * batch]
        x = (images[idx].float().div_(255) - m) / s
        if strong:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), labels[idx])
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
    """One epoch of the engine over exactly `steps` batches. Returns the epoch's seconds.

    With `compile`, a first epoch over the same batches pays for compilation and is not timed.
    """
    sub = steps * batch
    train_loader = TensorLoader(
        images[:sub], labels[:sub], batch_size=batch, mean=info.mean, std=info.std, seed=0, channels_last=True
    )
    cfg = resolve_config(
        None, model=name, data=DATA, epochs=1, batch_size=batch, lr=lr, optimizer="sgd", weight_decay=1e-4,
        schedule="constant", channels_last=True, amp=amp, compile=compile, out="/tmp/cnnzoo-bench-train",
        overwrite=True, summary=False, progress=False,
    )  # fmt: skip
    trainer = Trainer(cfg, data=(train_loader, None, None, info), log=lambda *_: None)
    try:
        if compile:
            trainer.train_epoch(0)
        return trainer.train_epoch(1)["train_seconds"]
    finally:
        trainer.close()


VARIANTS = {  # cnnzoo train flags timed against the same bare loop; all use channels_last
    "fp32": {},
    "--amp": {"amp": True},  # bf16 autocast: native on CPUs with AVX512-BF16/AMX, emulated (slow) elsewhere
    "--compile": {"compile": True},
}


def bench_throughput(
    name: str, images, labels, info, batch: int, steps: int, rounds: int, variants: list[str]
) -> list[dict]:
    """Rounds alternate the contenders' order; each engine variant against its strong bare loop
    (same flags) and against the plain one."""
    lr = 0.05
    contenders = ["plain", *variants, *(f"strong{v}" for v in variants)]
    times: dict[str, list[float]] = {c: [] for c in contenders}
    for r in range(rounds):
        for who in contenders if r % 2 == 0 else contenders[::-1]:
            if who == "plain" or who.startswith("strong"):
                torch.manual_seed(0)
                model = cnnzoo.create_model(name, num_classes=10, in_chans=1)
                amp = (
                    VARIANTS.get(who.removeprefix("strong"), {}).get("amp", False)
                    if who != "plain"
                    else False
                )
                times[who].append(
                    bare_steps(
                        model,
                        images,
                        labels,
                        info.mean,
                        info.std,
                        batch,
                        steps,
                        lr,
                        strong=who != "plain",
                        amp=amp,
                    )
                )
            else:
                times[who].append(cnnzoo_steps(name, images, labels, info, batch, steps, lr, **VARIANTS[who]))
    med = {k: statistics.median(v) for k, v in times.items()}
    img_s = lambda k: steps * batch / med[k]  # noqa: E731
    return [
        {
            "model": name,
            "variant": v,
            "cnnzoo_img_s": img_s(v),
            "strong_img_s": img_s(f"strong{v}"),
            "plain_img_s": img_s("plain"),
            "ratio_strong": med[f"strong{v}"] / med[v],
            "ratio_plain": med["plain"] / med[v],
        }
        for v in variants
    ]


# -- 3. time to 90% -----------------------------------------------------------------------------
def time_to_90_cnnzoo() -> tuple[float | None, list[float]]:
    cfg = resolve_config(
        "lenet-fast", model="lenet5", data=DATA, out="/tmp/cnnzoo-bench-90", overwrite=True, summary=False,
        progress=False, test_curve=True,
    )  # fmt: skip
    train(cfg, log=lambda *_: None)
    import json
    from pathlib import Path

    # The test curve: the benchmark's question is when test accuracy first reaches 90%.
    rows = [json.loads(line) for line in Path(cfg.out, "metrics.jsonl").read_text().splitlines()]
    return _first_90([r["train_seconds"] for r in rows], [r["test_top1"] for r in rows])


def time_to_90_bare(images, labels, test_x, test_y, info) -> tuple[float | None, list[float]]:
    """The lenet-fast recipe (AdamW, one-cycle, its batch and epochs) in a plain loop."""
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


# -- 4. counting --------------------------------------------------------------------------------
def old_counting_epoch(model: nn.Module, batches, density_scale: float, lr: float, steps: int) -> float:
    """The counting loop cnnzoo had before the engine, over the first `steps` batches; seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    t0 = time.perf_counter()
    for i, (x, target, _) in enumerate(batches.epoch(0)):
        if i == steps:
            break
        pred = model(x)
        loss = F.mse_loss(pred, target)
        loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        est = pred.detach().flatten(1).sum(1) / density_scale
        crop_true = target.flatten(1).sum(1) / density_scale
        float((est - crop_true).abs().sum())
    return time.perf_counter() - t0


class FirstSteps:
    """The first `steps` batches of a loader's epoch, with the loader protocol."""

    def __init__(self, loader, steps: int) -> None:
        self.loader, self.steps = loader, steps

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.steps:
                return
            yield batch


def bench_counting(rounds: int, steps: int, batch: int) -> dict:
    import tempfile

    from cnnzoo.counting.synth import write_synthetic
    from cnnzoo.counting.train import CountConfig, counting_trainer

    root = Path(tempfile.mkdtemp(prefix="cnnzoo-bench-crowd-"))
    write_synthetic(
        root, parts=("B",), train=steps * batch + 4, test=2, size=(288, 352), max_people=80, seed=0
    )
    cfg = dict(
        root=str(root), part="B", model="resnet50_counter", batch_size=batch, crop=(256, 256), scale=None,
        lr=1e-5, epochs=1, out=str(root / "run"), overwrite=True, progress=False, threads=0,
    )  # fmt: skip
    times: dict[str, list[float]] = {"engine": [], "old loop": []}
    for r in range(rounds):
        for who in ("engine", "old loop") if r % 2 == 0 else ("old loop", "engine"):
            torch.manual_seed(0)
            trainer = counting_trainer(CountConfig(**cfg), log=lambda *_: None)
            try:
                batches = trainer.train_loader
                if who == "engine":
                    trainer.train_loader = FirstSteps(batches, steps)  # cut like the old loop's epoch
                    times[who].append(trainer.train_epoch(0)["train_seconds"])
                else:
                    times[who].append(old_counting_epoch(trainer.raw_model, batches, 100.0, 1e-5, steps))
            finally:
                trainer.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"engine_s": med["engine"], "old_s": med["old loop"], "ratio": med["old loop"] / med["engine"]}


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
    parser.add_argument("--skip-counting", action="store_true")
    parser.add_argument("--counting-steps", type=int, default=6, help="counting steps per timed round")
    parser.add_argument("--counting-batch", type=int, default=4)
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
    print(
        f"{'model':10s} {'engine':8s} {'engine img/s':>13s} {'strong bare':>12s} {'ratio':>6s} "
        f"{'plain bare':>11s} {'ratio':>6s}"
    )
    variants = args.variants.split(",")
    for name in ("resnet20", "lenet5"):
        for row in bench_throughput(
            name, images, labels, info, args.batch, args.steps, args.rounds, variants
        ):
            print(
                f"{name:10s} {row['variant']:8s} {row['cnnzoo_img_s']:13.1f} {row['strong_img_s']:12.1f} "
                f"{row['ratio_strong']:6.2f} {row['plain_img_s']:11.1f} {row['ratio_plain']:6.2f}",
                flush=True,
            )

    if not args.skip_time_to_90:
        print("\n## 3. LeNet-5 to 90% Fashion-MNIST test top-1 (lenet-fast recipe), training seconds")
        ours, ours_acc = time_to_90_cnnzoo()
        bare, bare_acc = time_to_90_bare(images, labels, test_x, test_y, info)
        fmt = lambda s: "not reached" if s is None else f"{s:.1f} s"  # noqa: E731
        print(f"cnnzoo train  {fmt(ours):>12s}  top-1 by epoch {[round(a, 4) for a in ours_acc]}")
        print(f"bare loop     {fmt(bare):>12s}  top-1 by epoch {[round(a, 4) for a in bare_acc]}")

    if not args.skip_counting:
        b = args.counting_batch
        print(
            f"\n## 4. counting: resnet50_counter, 256x256 crops, batch {b}, {args.counting_steps} steps, "
            f"median of {args.rounds}"
        )
        c = bench_counting(args.rounds, args.counting_steps, b)
        n = args.counting_steps * b
        print(f"engine        {c['engine_s']:7.2f} s  {n / c['engine_s']:6.2f} img/s")
        print(f"old loop      {c['old_s']:7.2f} s  {n / c['old_s']:6.2f} img/s")
        print(f"ratio (old / engine) {c['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
