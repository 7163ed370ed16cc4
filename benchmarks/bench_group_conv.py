"""What a p4 group convolution costs: `P4Conv2d` against an ordinary conv with the same output maps.

A p4 conv from C to C' fields makes 4C' maps from 4C maps, the work of an ordinary conv from 4C
to 4C' channels; it only learns a quarter of the weights and must rebuild its stacked filter
bank (the four rotated, cycled copies) on every call. Timed in the same run, round by round in
turn, forward + backward, median over rounds:

    anchor   nn.Conv2d(4C, 4C', 3)                  the same maps from an ordinary conv: the
                                                    strongest baseline, a lower bound no p4
                                                    conv can beat (same arithmetic, no rebuild)
    p4       P4Conv2d(C, C', 3)                     one conv over the stacked copies (cnnzoo)
    naive    the paper's group sum, one conv per    16 small convs (the tests' oracle): the
             (output rotation, input rotation)      naive baseline

    python benchmarks/bench_group_conv.py                 # a few seconds on 2 cores
    python benchmarks/bench_group_conv.py --rounds 30 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.layers.group_conv import P4Conv2d


def naive_group_conv(x: torch.Tensor, layer: P4Conv2d) -> torch.Tensor:
    outs = []
    for r in range(4):
        acc = 0
        for s in range(4):
            w = torch.rot90(layer.weight[:, :, (s - r) % 4], r, dims=(-2, -1))
            acc = acc + F.conv2d(x[:, :, s], w, padding=layer.padding)
        outs.append(acc)
    return torch.stack(outs, dim=2)


def step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        fn().square().mean().backward()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}"
    )
    print(
        f"{'layer (C -> C fields, H x W)':32s} {'anchor ms':>10s} {'p4 ms':>8s} {'naive ms':>9s} {'p4/anchor':>10s} {'naive/anchor':>13s}"
    )
    for c_in, c_out, side in ((8, 8, 28), (16, 16, 14), (32, 32, 7)):
        p4 = P4Conv2d(c_in, c_out, 3, bias=False)
        plain = nn.Conv2d(4 * c_in, 4 * c_out, 3, padding=1, bias=False)
        x5 = torch.randn(args.batch, c_in, 4, side, side, requires_grad=True)
        x4 = x5.detach().reshape(args.batch, 4 * c_in, side, side).requires_grad_()
        contenders = {
            "anchor": step(lambda plain=plain, x4=x4: plain(x4)),
            "p4": step(lambda p4=p4, x5=x5: p4(x5)),
            "naive": step(lambda p4=p4, x5=x5: naive_group_conv(x5, p4)),
        }
        for fn in contenders.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for r in range(args.rounds):  # interleaved, alternating order: a load change hits all alike
            for k in list(contenders) if r % 2 == 0 else list(contenders)[::-1]:
                fn = contenders[k]
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
        label = f"{c_in} -> {c_out}, {side} x {side}"
        print(
            f"{label:32s} {ms['anchor']:10.2f} {ms['p4']:8.2f} {ms['naive']:9.2f} "
            f"{ms['p4'] / ms['anchor']:10.2f} {ms['naive'] / ms['anchor']:13.2f}"
        )


if __name__ == "__main__":
    main()
