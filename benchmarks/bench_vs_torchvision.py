"""Training-step speed of cnnzoo's models against torchvision's, same weights, same input, one run.

For every architecture both libraries have, time one forward + backward pass (the unit of
training work) of each, interleaved round by round so that drift in the machine's speed hits
both alike, and report the median images/s and the ratio ours / torchvision (target >= 0.98).

The baseline is the strongest simple alternative for this question: torchvision's own model of
the same architecture, run the same way (eager, NCHW, fp32, the same input and weights), so the
ratio measures cnnzoo's model code alone. Speed settings that apply to any model (channels_last,
bf16, compile) belong to the training and inference benchmarks, where both sides get them.

    python benchmarks/bench_vs_torchvision.py                    # every shared model
    python benchmarks/bench_vs_torchvision.py --names resnet18 vgg11 --batch 16 --size 224
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision

import cnnzoo


def train_step(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(x)
        # GoogLeNet returns (logits, aux2, aux1) in training mode: train all heads, as its recipe does.
        outs = [out] if isinstance(out, torch.Tensor) else [o for o in out if o is not None]
        sum(o.sum() for o in outs).backward()

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench(name: str, batch: int, size: int, rounds: int, warmup: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    tv = getattr(torchvision.models, cnnzoo.model_info(name).torchvision)().to(device).train()
    ours = cnnzoo.create_model(name).to(device).train()
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(batch, 3, size, size, device=device)
    steps = {"cnnzoo": train_step(ours, x), "torchvision": train_step(tv, x)}
    for _ in range(warmup):
        for s in steps.values():
            s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds):
        # Alternate who goes first so neither always runs on a warmer cache.
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for k in order:
            times[k].append(timed(steps[k], device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "name": name,
        "batch": batch,
        "size": size,
        "cnnzoo_img_s": batch / med["cnnzoo"],
        "torchvision_img_s": batch / med["torchvision"],
        "ratio": med["torchvision"] / med["cnnzoo"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--names", nargs="*", default=None, help="models (default: every shared name)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=112, help="input height = width")
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per model and library")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.names or cnnzoo.list_models(torchvision=True)
    print(
        f"# forward+backward, batch {args.batch}, {args.size}x{args.size}, median of {args.rounds} "
        f"interleaved rounds; torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{device}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"{'model':18s} {'cnnzoo img/s':>13s} {'torchvision img/s':>18s} {'ratio':>7s}")
    rows = []
    for name in names:
        row = bench(name, args.batch, args.size, args.rounds, args.warmup, device)
        rows.append(row)
        flag = "" if row["ratio"] >= 0.98 else "  < 0.98"
        print(
            f"{name:18s} {row['cnnzoo_img_s']:13.2f} {row['torchvision_img_s']:18.2f} {row['ratio']:7.3f}{flag}",
            flush=True,
        )
    worst = min(r["ratio"] for r in rows)
    print(f"# lowest ratio {worst:.3f} (target >= 0.98)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
