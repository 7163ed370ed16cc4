"""Training speed: cnnzoo's training engine and input path against plain PyTorch, in one run.

Five sections (`--sections`), on Fashion-MNIST from the cnnzoo cache (`cnnzoo data fetch
fashion-mnist`) and on generated crowd images; the machine's load is printed at the start and
the end, and idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) as the machine may be shared:

1. input: images/s of cnnzoo's TensorLoader (uint8 tensors in memory, batched crop + flip
   on tensors) vs torchvision's DataLoader with per-sample transforms (RandomCrop, flip,
   ToTensor, Normalize), one pass over the training set each;
2. throughput: images/s of the engine (fast input path, channels_last) against two bare
   loops over the same model and batches, for ResNet-20 (1x28x28 input) and LeNet-5:
   - "strong": what a competent user writes with the same speed settings as the engine: the
     model and batches in channels_last, fused SGD, and bf16 autocast in the --amp rows. The
     ratio against it is the headline: the engine's own cost or gain.
   - "plain": NCHW, torch's default (for-loop) SGD, fp32: the loop of the issue-5 table, kept
     so that the ratios can be compared with earlier measurements.
   The contenders are timed alternately, median of `--rounds`;
3. race: LeNet-5 to 90% test top-1, `cnnzoo train lenet5 --recipe fast` through the engine
   against the best plain loop (ReLU/max-pool LeNet-5, AdamW one-cycle, batch 256, 3 epochs on
   all training images, fused AdamW and channels_last like the engine), seed by seed (`--seeds`),
   their order alternated: training seconds until the first epoch whose test top-1 (a curve no
   choice reads) reaches 90%, median and range, and the engine's validation-selected result;
4. resnet93: ResNet-20 to 93% test top-1 with `--recipe fast`, `--resnet-seeds` (10 epochs
   each: long on a CPU);
5. counting: the engine's training epoch for resnet50_counter on 256x256 crops vs the counting
   loop cnnzoo had before the engine (a plain loop over the same batches: forward, pixel MSE,
   backward, AdamW step, crop MAE), alternately, median of `--rounds`.

    python benchmarks/bench_train.py                  # everything (an hour or more on 2 cores)
    python benchmarks/bench_train.py --sections race --threads 1
    python benchmarks/bench_train.py --sections input,throughput --steps 30 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: the machine is shared with other jobs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.data import TensorLoader, dataset_info, load_arrays
from cnnzoo.train import Trainer, resolve_config, train
from cnnzoo.train.recipes import fast_recipe

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


# -- 3. time to accuracy ------------------------------------------------------------------------
def fast_run(model: str, seed: int, target: float, threads: int) -> dict:
    """`cnnzoo train MODEL --recipe fast --seed SEED --test-curve` through the engine.

    The time is the training seconds until the first epoch whose test top-1 (the curve, which
    no choice reads) reaches `target`; the run's reported result is the test top-1 of the epoch
    selected on validation.
    """
    cfg = resolve_config(
        "fast", model=model, data=DATA, seed=seed, threads=threads, out=f"/tmp/cnnzoo-bench-fast-{model}",
        overwrite=True, summary=False, progress=False, test_curve=True,
    )  # fmt: skip
    final = train(cfg, log=lambda *_: None)
    rows = [json.loads(line) for line in Path(cfg.out, "metrics.jsonl").read_text().splitlines()]
    return {
        **_first_at(target, [r["train_seconds"] for r in rows], [r["test_top1"] for r in rows]),
        "recipe": cfg.recipe,
        "selected_epoch": final["best_epoch"],
        "selected_test": final["test_top1"],
    }


# The plain loop: a ReLU/max-pool LeNet-5, AdamW with a one-cycle schedule, batch
# 128-256, 3 epochs on all 60,000 training images, test top-1 after every epoch. It gets the
# same speed settings as the engine (fused AdamW, channels_last): the race is between recipes.
PLAIN_90 = dict(batch=256, lr=0.01, epochs=3, pct_start=0.25)


def plain_run(images, labels, test_x, test_y, info, seed: int, target: float) -> dict:
    torch.manual_seed(seed)
    model = cnnzoo.create_model("lenet5", act="relu").to(memory_format=torch.channels_last)
    p = PLAIN_90
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=0.0, fused=True)
    steps_per_epoch = len(images) // p["batch"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=p["lr"], total_steps=steps_per_epoch * p["epochs"], pct_start=p["pct_start"]
    )
    m = torch.tensor(info.mean).view(1, -1, 1, 1)
    s = torch.tensor(info.std).view(1, -1, 1, 1)
    tx = ((test_x.float() / 255 - m) / s).contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(seed)
    seconds, accs = [], []
    for _ in range(p["epochs"]):
        perm = torch.randperm(len(images), generator=g)
        model.train()
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            idx = perm[i * p["batch"] : (i + 1) * p["batch"]]
            x = ((images[idx].float() / 255 - m) / s).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        seconds.append(time.perf_counter() - t0)
        model.eval()
        with torch.no_grad():
            accs.append((model(tx).argmax(1) == test_y).float().mean().item())
    return _first_at(target, seconds, accs)


def race_90(images, labels, test_x, test_y, info, seeds: list[int], threads: int) -> dict[str, list[dict]]:
    """The fast recipe against the plain loop, seed by seed, their order alternated."""
    runs: dict[str, list[dict]] = {"fast": [], "plain": []}
    for i, seed in enumerate(seeds):
        for who in ("fast", "plain") if i % 2 == 0 else ("plain", "fast"):
            if who == "fast":
                r = fast_run("lenet5", seed, 0.90, threads)
            else:
                r = plain_run(images, labels, test_x, test_y, info, seed, 0.90)
            runs[who].append(r)
            print(f"  seed {seed} {who:5s} {_describe_run(r)}", flush=True)
    return runs


def _first_at(target: float, seconds: list[float], accs: list[float]) -> dict:
    """Training seconds and epochs until the first epoch at or above `target` (None: never)."""
    for i, a in enumerate(accs):
        if a >= target:
            return {"seconds": sum(seconds[: i + 1]), "epoch": i + 1, "curve": accs, "total": sum(seconds)}
    return {"seconds": None, "epoch": None, "curve": accs, "total": sum(seconds)}


def _describe_run(r: dict) -> str:
    reached = "not reached" if r["seconds"] is None else f"{r['seconds']:6.1f} s (epoch {r['epoch']})"
    text = f"{reached:>22s}  test by epoch {' '.join(f'{100 * a:.2f}' for a in r['curve'])}"
    if "selected_test" in r:
        text += f"  selected epoch {r['selected_epoch']}: {100 * r['selected_test']:.2f}%"
    return text


def summarise_runs(runs: list[dict], target: float) -> str:
    """Median and range of the time to target over the runs; a run that never reached it counts
    as slower than any that did."""
    times = sorted(math.inf if r["seconds"] is None else r["seconds"] for r in runs)
    reached = [t for t in times if t != math.inf]
    fmt = lambda t: "never" if t == math.inf else f"{t:.1f} s"  # noqa: E731
    text = (
        f"reached {len(reached)}/{len(runs)}; median {fmt(statistics.median(times))}, "
        f"range {fmt(times[0])} - {fmt(times[-1])}"
    )
    epochs = [r["epoch"] for r in runs if r["epoch"] is not None]
    if epochs:
        text += f"; epochs {min(epochs)}-{max(epochs)}"
    selected = [r["selected_test"] for r in runs if "selected_test" in r]
    if selected:
        ok = sum(a >= target for a in selected)
        text += (
            f"; validation-selected test top-1 {100 * min(selected):.2f}-{100 * max(selected):.2f}% "
            f"({ok}/{len(selected)} at or above {100 * target:.0f}%)"
        )
    return text


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


SECTIONS = ("input", "throughput", "race", "resnet93", "counting")


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"from {','.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine is shared)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the LeNet-5 race to 90%%")
    parser.add_argument("--resnet-seeds", default="0", help="seeds of ResNet-20 to 93%% (~10 min each)")
    parser.add_argument("--counting-steps", type=int, default=6, help="counting steps per timed round")
    parser.add_argument("--counting-batch", type=int, default=4)
    parser.add_argument(
        "--variants", default="fp32,--amp", help=f"cnnzoo variants to time, from {','.join(VARIANTS)}"
    )
    args = parser.parse_args()
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    images, labels = load_arrays(DATA, "train")
    test_x, test_y = load_arrays(DATA, "test")
    info = dataset_info(DATA)
    print(
        f"# {DATA}: {len(images)} train images; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, {platform.processor() or platform.machine()}"
    )
    print(f"# start: {load_line()}", flush=True)

    if "input" in sections:
        r = bench_input(images, labels, info.mean, info.std, args.batch)
        print("\n## 1. input path, one pass, crop + flip, batch", args.batch)
        print(f"cnnzoo TensorLoader {r['cnnzoo_img_s']:12,.0f} img/s")
        print(f"torchvision DataLoader + per-sample transforms {r['torchvision_img_s']:12,.0f} img/s")
        print(f"ratio {r['ratio']:.1f}x", flush=True)

    if "throughput" in sections:
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

    if "race" in sections:
        seeds = [int(x) for x in args.seeds.split(",")]
        p = PLAIN_90
        print(
            f"\n## 3. LeNet-5 to 90% Fashion-MNIST test top-1, training seconds, seeds {args.seeds}, "
            f"alternated\nfast: `cnnzoo train lenet5 --recipe fast` ({fast_recipe('lenet5')}); plain: "
            f"ReLU/max-pool LeNet-5, AdamW one-cycle peak {p['lr']}, batch {p['batch']}, {p['epochs']} epochs, "
            "fused, channels_last"
        )
        runs = race_90(images, labels, test_x, test_y, info, seeds, args.threads)
        for who, rs in runs.items():
            print(f"{who:5s} {summarise_runs(rs, 0.90)}")
        med = {
            who: statistics.median(math.inf if r["seconds"] is None else r["seconds"] for r in rs)
            for who, rs in runs.items()
        }
        if math.isfinite(med["fast"]):
            print(f"ratio of medians (plain / fast) {med['plain'] / med['fast']:.2f}", flush=True)

    if "resnet93" in sections:
        print(
            f"\n## 4. ResNet-20 to 93% Fashion-MNIST test top-1 (`--recipe fast`: {fast_recipe('resnet20')}), "
            f"seeds {args.resnet_seeds}"
        )
        rs = []
        for seed in (int(x) for x in args.resnet_seeds.split(",")):
            rs.append(fast_run("resnet20", seed, 0.93, args.threads))
            print(f"  seed {seed} {_describe_run(rs[-1])}  ({rs[-1]['total']:.1f} s in all)", flush=True)
        print(f"fast  {summarise_runs(rs, 0.93)}")

    if "counting" in sections:
        b = args.counting_batch
        print(
            f"\n## 5. counting: resnet50_counter, 256x256 crops, batch {b}, {args.counting_steps} steps, "
            f"median of {args.rounds}"
        )
        c = bench_counting(args.rounds, args.counting_steps, b)
        n = args.counting_steps * b
        print(f"engine        {c['engine_s']:7.2f} s  {n / c['engine_s']:6.2f} img/s")
        print(f"old loop      {c['old_s']:7.2f} s  {n / c['old_s']:6.2f} img/s")
        print(f"ratio (old / engine) {c['ratio']:.2f}")
    print(f"\n# end: {load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
