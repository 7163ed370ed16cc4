"""How long `cnnzoo.profile` takes, for every registered model, against torch's FlopCounterMode and fvcore.

Part 1 profiles every registered model by name at its default input (meta device: no weights
allocated, no arithmetic) and reports the seconds per model and in total.

Part 2 takes every model with a torchvision twin, builds torchvision's model on the CPU once, and
times in the same run, on that same instance and input:

    cnnzoo           profile(tv_model, input)             - real forward on the CPU, with our tracing
    FlopCounterMode  tv_model(x) under torch.utils.flop_counter.FlopCounterMode - the strong
                     baseline: what a competent user runs for a total, shipped with torch, one
                     forward with a dispatch-level counter and no per-layer table
    fvcore           FlopCountAnalysis(tv_model, x).total() - TorchScript trace + its op handlers

the three interleaved repeat by repeat (medians); and on the meta device (no weights, no
arithmetic) `profile(name)` against FlopCounterMode around torchvision's model built on meta,
interleaved the same way. It also checks that they agree on the multiply-accumulates of convolutions and matrix products
(FlopCounterMode counts 2 flops per MAC; fvcore calls one MAC a "flop" and its total also counts
BatchNorm and adaptive pooling, ours keeps those out of `macs`).

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


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each fn, called in alternating order round by round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for r in range(repeats):
        for k in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def flop_counter_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2  # it counts a multiply-add as two flops


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


def part2(names: list[str], repeats: int, analysis: Callable | None) -> list[dict]:
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
            fns = {
                "cnnzoo": lambda m=tv, s=size: cnnzoo.profile(m, s),
                "flop_counter": lambda m=tv, x=x: flop_counter_macs(m, x),
            }
            if analysis is not None:
                fns["fvcore"] = lambda: fv().total()
            med = interleaved(fns, repeats)
            with torch.device("meta"):  # FlopCounterMode needs no weights either
                tv_meta = getattr(torchvision.models, info.torchvision)().eval()
            meta = interleaved(
                {
                    "cnnzoo": lambda n=name: cnnzoo.profile(n),
                    "flop_counter": lambda m=tv_meta, s=size: flop_counter_macs(
                        m, torch.zeros(1, *s, device="meta")
                    ),
                },
                repeats,
            )
            ours_meta = meta["cnnzoo"]
            by_op = fv().by_operator() if analysis is not None else {}
        fv_macs = sum(v for k, v in by_op.items() if k in FVCORE_MAC_OPS) if by_op else None
        med.setdefault("fvcore", float("nan"))
        fc_macs = flop_counter_macs(tv, x)
        macs = cnnzoo.profile(tv, size).total_macs
        ours_cpu = med["cnnzoo"]
        rows.append(
            {
                "model": name,
                "cnnzoo_cpu_s": ours_cpu,
                "cnnzoo_meta_s": ours_meta,
                "flop_counter_meta_s": meta["flop_counter"],
                "flop_counter_s": med["flop_counter"],
                "fvcore_s": med["fvcore"],
                "flop_counter_ratio": med["flop_counter"] / ours_cpu,
                "ratio": med["fvcore"] / ours_cpu,
                "flop_counter_agree": fc_macs == macs,
                "macs_agree": None if fv_macs is None else fv_macs == macs,
                "macs": macs,
                "flop_counter_macs": fc_macs,
                "fvcore_macs": fv_macs,
            }
        )
        print(
            f"  {name:20s} cnnzoo {ours_cpu:7.3f}s (meta {ours_meta:6.3f}s)  FlopCounterMode "
            f"{med['flop_counter']:7.3f}s (meta {meta['flop_counter']:6.3f}s)  fvcore {med['fvcore']:7.3f}s  MACs agree: FlopCounterMode "
            f"{fc_macs == macs}, fvcore {'-' if fv_macs is None else fv_macs == macs}",
            file=sys.stderr,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", help="models to run (default: every registered one)")
    parser.add_argument("--repeats", type=int, default=1, help="timings per model; the median is kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-fvcore", action="store_true", help="leave fvcore's column out of part 2")
    parser.add_argument("--part1-only", action="store_true", help="skip part 2")
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
        print(
            "fvcore is not installed (pip install 'cnnzoo[bench]'): its column is left out", file=sys.stderr
        )
    if not args.part1_only:
        twins = [n for n in names if cnnzoo.model_info(n).torchvision]
        print(
            f"part 2: {len(twins)} torchvision twins, cnnzoo vs FlopCounterMode and fvcore on the same model",
            file=sys.stderr,
        )
        rows2 = part2(twins, args.repeats, analysis)
        result["vs_fvcore"] = rows2
        if rows2 and analysis is None:
            print("(fvcore not installed: its columns are '-')", file=sys.stderr)
        if rows2:
            ours = sum(r["cnnzoo_cpu_s"] for r in rows2)
            theirs = sum(r["fvcore_s"] for r in rows2)
            fc = sum(r["flop_counter_s"] for r in rows2)
            result["vs_fvcore_total"] = {
                "cnnzoo_s": ours,
                "cnnzoo_meta_s": sum(r["cnnzoo_meta_s"] for r in rows2),
                "flop_counter_meta_s": sum(r["flop_counter_meta_s"] for r in rows2),
                "flop_counter_s": fc,
                "fvcore_s": theirs,
                "flop_counter_ratio": fc / ours,
                "ratio": theirs / ours,
            }

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
        print(
            "| model | cnnzoo s (CPU) | FlopCounterMode s (CPU) | FlopCounterMode / cnnzoo | cnnzoo s (meta) "
            "| FlopCounterMode s (meta) | fvcore s | fvcore / cnnzoo | MACs agree (FlopCounterMode, fvcore) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        yes = {True: "yes", False: "no", None: "-"}

        def num(v: float, digits: int) -> str:
            return "-" if v != v else f"{v:.{digits}f}"  # NaN: fvcore not installed

        for r in result["vs_fvcore"]:
            print(
                f"| {r['model']} | {r['cnnzoo_cpu_s']:.3f} | {r['flop_counter_s']:.3f} | "
                f"{r['flop_counter_ratio']:.2f} | {r['cnnzoo_meta_s']:.3f} | {r['flop_counter_meta_s']:.3f} | "
                f"{num(r['fvcore_s'], 3)} | "
                f"{num(r['ratio'], 2)} | {yes[r['flop_counter_agree']]}, {yes[r['macs_agree']]} |"
            )
        t = result.get("vs_fvcore_total")
        if t:
            print(
                f"| **total** | **{t['cnnzoo_s']:.2f}** | **{t['flop_counter_s']:.2f}** | "
                f"**{t['flop_counter_ratio']:.2f}** | {t['cnnzoo_meta_s']:.2f} | {t['flop_counter_meta_s']:.2f} | "
                f"{num(t['fvcore_s'], 2)} | {num(t['ratio'], 2)} | |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
