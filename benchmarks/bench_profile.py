"""How long `cnnzoo.profile` takes, for every registered model, against fvcore's FlopCountAnalysis.

Part 1 profiles every registered model by name at its default input (meta device: no weights
allocated, no arithmetic) and reports the seconds per model and in total.

Part 2 takes every model with a torchvision twin, builds torchvision's model on the CPU once, and
times in the same run, on that same instance and input:

    cnnzoo  profile(tv_model, input)             - real forward on the CPU, with our tracing
    fvcore  FlopCountAnalysis(tv_model, x).total() - TorchScript trace + its op handlers

and, for reference, `profile(name)` on meta. It also checks that the two agree on the
multiply-accumulates of convolutions and matrix products (fvcore calls them "flops"; its total
also counts BatchNorm and adaptive pooling, ours keeps those out of `macs`).

    python benchmarks/bench_profile.py                      # everything (a few minutes on 2 cores)
    python benchmarks/bench_profile.py --names resnet18 vgg16 --repeats 3
    pip install 'cnnzoo[bench]'                             # fvcore, for part 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch

import cnnzoo

# fvcore operators that are multiply-accumulates in our sense (its handles for these count one
# "flop" per MAC); the rest of its total (batch_norm, adaptive_avg_pool2d, upsample, ...) is not.
FVCORE_MAC_OPS = {"conv", "linear", "matmul", "addmm", "bmm", "einsum", "mm"}


def seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fvcore_analysis() -> Callable | None:
    try:
        with warnings.catch_warnings():  # fvcore's import touches deprecated torch.jit APIs
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return None
    return FlopCountAnalysis


def part1(names: list[str], repeats: int) -> tuple[list[dict], float]:
    rows, total = [], 0.0
    for name in names:
        s = seconds(lambda n=name: cnnzoo.profile(n), repeats)
        p = cnnzoo.profile(name)
        total += s
        rows.append(
            {"model": name, "input": "x".join(map(str, p.input_size)), "seconds": s, "macs": p.total_macs}
        )
    return rows, total


def part2(names: list[str], repeats: int, analysis: Callable) -> list[dict]:
    import torchvision

    rows = []
    for name in names:
        info = cnnzoo.model_info(name)
        tv = getattr(torchvision.models, info.torchvision)().eval()
        size = info.input_size
        x = torch.zeros(1, *size)

        def fv(model: torch.nn.Module = tv, x: torch.Tensor = x) -> object:
            a = analysis(model, x)
            a.unsupported_ops_warnings(False)
            a.uncalled_modules_warnings(False)
            return a

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours_cpu = seconds(lambda m=tv, s=size: cnnzoo.profile(m, s), repeats)
            ours_meta = seconds(lambda n=name: cnnzoo.profile(n), repeats)
            theirs = seconds(lambda: fv().total(), repeats)
            by_op = fv().by_operator()
        fv_macs = sum(v for k, v in by_op.items() if k in FVCORE_MAC_OPS)
        macs = cnnzoo.profile(tv, size).total_macs
        rows.append(
            {
                "model": name,
                "cnnzoo_cpu_s": ours_cpu,
                "cnnzoo_meta_s": ours_meta,
                "fvcore_s": theirs,
                "ratio": theirs / ours_cpu,
                "macs_agree": fv_macs == macs,
                "macs": macs,
                "fvcore_macs": fv_macs,
            }
        )
        print(
            f"  {name:20s} cnnzoo {ours_cpu:7.3f}s (meta {ours_meta:6.3f}s)  fvcore {theirs:7.3f}s  "
            f"ratio {theirs / ours_cpu:5.2f}  MACs agree: {fv_macs == macs}",
            file=sys.stderr,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", help="models to run (default: every registered one)")
    parser.add_argument("--repeats", type=int, default=1, help="timings per model; the median is kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-fvcore", action="store_true", help="part 1 only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.names or cnnzoo.list_models()
    cnnzoo.profile("lenet5")  # the first call imports torch's tracing machinery (~2 s): not timed

    rows1, total = part1(names, args.repeats)
    print(f"part 1: profiled {len(rows1)} models at their default inputs in {total:.2f} s", file=sys.stderr)
    result: dict = {
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {args.threads} threads",
        "profile_all": {"models": len(rows1), "seconds": total, "rows": rows1},
    }
    analysis = None if args.skip_fvcore else fvcore_analysis()
    if analysis is None and not args.skip_fvcore:
        print("part 2 skipped: fvcore is not installed (pip install 'cnnzoo[bench]')", file=sys.stderr)
    if analysis is not None:
        twins = [n for n in names if cnnzoo.model_info(n).torchvision]
        print(f"part 2: {len(twins)} torchvision twins, cnnzoo vs fvcore on the same model", file=sys.stderr)
        rows2 = part2(twins, args.repeats, analysis)
        result["vs_fvcore"] = rows2
        if rows2:
            ours = sum(r["cnnzoo_cpu_s"] for r in rows2)
            theirs = sum(r["fvcore_s"] for r in rows2)
            result["vs_fvcore_total"] = {"cnnzoo_s": ours, "fvcore_s": theirs, "ratio": theirs / ours}

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("| model | input | seconds | GMACs |")
    print("| --- | --- | ---: | ---: |")
    for r in rows1:
        print(f"| {r['model']} | {r['input']} | {r['seconds']:.3f} | {r['macs'] / 1e9:.3f} |")
    print(f"| **all {len(rows1)}** | | **{total:.2f}** | |")
    if "vs_fvcore" in result:
        print()
        print("| model | cnnzoo s (CPU) | cnnzoo s (meta) | fvcore s | fvcore / cnnzoo | MACs agree |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for r in result["vs_fvcore"]:
            print(
                f"| {r['model']} | {r['cnnzoo_cpu_s']:.3f} | {r['cnnzoo_meta_s']:.3f} | {r['fvcore_s']:.3f} | "
                f"{r['ratio']:.2f} | {'yes' if r['macs_agree'] else 'no'} |"
            )
        t = result.get("vs_fvcore_total")
        if t:
            print(
                f"| **total** | **{t['cnnzoo_s']:.2f}** | | **{t['fvcore_s']:.2f}** | **{t['ratio']:.2f}** | |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
