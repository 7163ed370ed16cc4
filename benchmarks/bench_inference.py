"""Inference speed: cnnzoo's inference paths against torchvision's model compiled, one run.

For each model and batch size every contender runs the same weights (torchvision's model gets
ours copied in) on the same input; after warm-up calls the timed calls are interleaved round by
round (alternating order) and the table gives median images/s. BatchNorm statistics are warmed
on random data first (`cnnzoo.deploy.bench.warm_batchnorm`): fresh ones let activations vanish
or explode into slow denormals.

The baselines are what a competent user does with torchvision's own model, no cnnzoo code:

- torchvision compiled (the headline anchor): the model in channels_last, `torch.compile` with
  inductor's weight freezing on (the same generic settings as cnnzoo's `compiled` path), called
  under `torch.no_grad`;
- torchvision ONNX Runtime: the same model exported with `torch.onnx.export(dynamo=True)` and
  run by ONNX Runtime with every graph optimisation (the same session options as cnnzoo's);
- torchvision OpenVINO, when the `openvino` package is installed (it is not a cnnzoo
  dependency): the same model converted by `openvino.convert_model` and compiled for the CPU
  with fp32 inference precision (OpenVINO's default on a CPU with bf16 units is bf16) and a
  latency hint: a second runtime a user could reach for;
- torchvision eager (the naive baseline): NCHW, fp32, `torch.inference_mode`.

cnnzoo's paths are `cnnzoo.deploy.fastest`'s: channels_last, folded (BN folded into the convs),
compiled (folded + inductor, frozen), onnxruntime (folded, exported), and the opt-in inexact
bf16 and compiled-bf16. "best exact" is the fastest cnnzoo path whose output is within 1e-4 of
torchvision eager's (relative to the output's scale): the one `cnnzoo bench` and `cnnzoo predict`
may choose; "best bf16" is the faster bf16 path, with its error. Target: best exact >= 1.3x
torchvision compiled at batch 16 on the four ImageNet nets.

The arithmetic rate each path reaches (2 x multiply-accumulates x images/s) is printed against a
large fp32 matrix product's rate, timed once in every round: a path near that ceiling can only be
beaten by doing less or cheaper arithmetic (bf16), not by better scheduling.

    python benchmarks/bench_inference.py                          # the BENCHMARKS.md table
    python benchmarks/bench_inference.py --models resnet18 --batches 1 16 --paths folded,onnxruntime

On a machine shared with other jobs, run it as `OMP_WAIT_POLICY=PASSIVE python ...`: PyTorch's
OpenMP threads otherwise spin at every operator's barrier while their partner thread waits for
a core, and PyTorch timings inflate by up to hundreds of times (ONNX Runtime's own thread pool
degrades gracefully), which would flatter the ONNX Runtime columns. On an idle machine the
default policy is the one to use.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

import cnnzoo
from cnnzoo.deploy.bench import warm_batchnorm
from cnnzoo.deploy.export import onnx_session, output_error
from cnnzoo.deploy.fastest import CPU_BF16_PATHS, build_path, onnx_available, timed

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0"]
EXACT = 1e-4
TARGET = 1.3
Run = Callable[[torch.Tensor], torch.Tensor]


def tv_eager(tv: torch.nn.Module) -> Run:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return tv(x)

    return run


def tv_compiled(tv: torch.nn.Module, x: torch.Tensor) -> Run:
    import torch._inductor.config as inductor_config

    m = copy.deepcopy(tv).to(memory_format=torch.channels_last)
    inductor_config.freezing = True
    compiled = torch.compile(m, dynamic=False)

    def run(inp: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return compiled(inp.contiguous(memory_format=torch.channels_last))

    run(x)
    return run


def tv_onnxruntime(tv: torch.nn.Module, x: torch.Tensor) -> Run:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(tv, (x,), dynamo=True, input_names=["input"], verbose=False)
    session = onnx_session(program.model_proto.SerializeToString())

    def run(inp: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"input": inp.contiguous().numpy()})[0])

    return run


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def tv_openvino(tv: torch.nn.Module, x: torch.Tensor) -> Run:
    import openvino

    ov_model = openvino.convert_model(copy.deepcopy(tv), example_input=x)
    config = {
        "INFERENCE_PRECISION_HINT": "f32",  # exact, like the other fp32 columns
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    request = openvino.Core().compile_model(ov_model, "CPU", config).create_infer_request()

    def run(inp: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(request.infer({0: inp.contiguous().numpy()})[0].copy())

    return run


def matmul(n: int = 2048) -> Callable[[], float]:
    """A timed n x n fp32 matrix product, returning its GFLOP/s: the machine's practical ceiling."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def run() -> float:
        t0 = time.perf_counter()
        a @ b
        return 2 * n**3 / (time.perf_counter() - t0) / 1e9

    run()
    return run


def run_case(name: str, batch: int, paths: list[str], rounds: int, warmup: int) -> dict:
    # Every zoo model shares ZooModel.forward's code object, and dynamo stops compiling a code
    # object after 8 recompilations (falling back to eager): start each case afresh.
    torch._dynamo.reset()
    torch.manual_seed(0)
    info = cnnzoo.model_info(name)
    model = cnnzoo.create_model(name).eval()
    x = torch.randn(batch, *info.input_size)
    warm_batchnorm(model, x[: min(batch, 8)])
    tv = getattr(torchvision.models, info.torchvision)().eval()
    tv.load_state_dict(model.state_dict())
    for p in tv.parameters():
        p.requires_grad_(False)

    runs: dict[str, Run] = {"tv eager": tv_eager(tv)}
    setup, notes = {"tv eager": 0.0}, {}
    builders: dict[str, Callable[[], Run]] = {"tv compiled": lambda: tv_compiled(tv, x)}
    if onnx_available():
        builders["tv onnxruntime"] = lambda: tv_onnxruntime(tv, x)
    if openvino_available():
        builders["tv openvino"] = lambda: tv_openvino(tv, x)
    for p in paths:
        builders[p] = lambda p=p: build_path(p, model, x)[0]
    for k, build in builders.items():
        t0 = time.perf_counter()
        try:
            runs[k] = build()
            setup[k] = time.perf_counter() - t0
        except Exception as e:  # reported, the others still run
            notes[k] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    outs = {}
    for k, run in runs.items():
        for _ in range(max(warmup, 1)):
            outs[k] = run(x)
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    ceiling, rates = matmul(), []
    for r in range(rounds):
        for k in order if r % 2 == 0 else reversed(order):
            times[k].append(timed(runs[k], x)[1])
        rates.append(ceiling())  # in every round, so that it sees the same load as the paths
    med = {k: statistics.median(v) for k, v in times.items()}
    macs = cnnzoo.profile(name).total_macs
    anchor = "tv compiled" if "tv compiled" in med else "tv eager"
    row = {"model": name, "batch": batch, "macs": macs, "anchor": anchor, "paths": {}, "notes": notes}
    row["matmul_gflops"] = statistics.median(rates)
    for k in runs:
        _, rel = output_error(outs[k], outs["tv eager"])
        row["paths"][k] = {
            "images_per_s": batch / med[k],
            "ms": 1e3 * med[k],
            "vs_anchor": med[anchor] / med[k],
            "vs_tv_eager": med["tv eager"] / med[k],
            "max_rel_error": rel,
            "gflops": 2 * macs * batch / med[k] / 1e9,
            "setup_s": setup[k],
        }
    ours = {k: v for k, v in row["paths"].items() if not k.startswith("tv ")}
    exact = {k: v for k, v in ours.items() if v["max_rel_error"] <= EXACT and k not in CPU_BF16_PATHS}
    row["best"] = max(exact, key=lambda k: exact[k]["images_per_s"]) if exact else None
    bf16 = {k: v for k, v in ours.items() if k in CPU_BF16_PATHS}
    row["best_bf16"] = max(bf16, key=lambda k: bf16[k]["images_per_s"]) if bf16 else None
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="*", help="names with a torchvision twin (default: the issue's four)"
    )
    parser.add_argument("--batches", nargs="*", type=int, default=[16])
    parser.add_argument(
        "--paths",
        default="channels_last,folded,compiled,onnxruntime,bf16,compiled-bf16",
        help="cnnzoo paths to time against the baselines (comma-separated)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    paths = [p for p in args.paths.split(",") if p and (p != "onnxruntime" or onnx_available())]
    models = args.models or MODELS
    for m in models:
        if not cnnzoo.model_info(m).torchvision:
            parser.error(f"{m} has no torchvision twin to compare with")
    print(
        f"# inference, median of {args.rounds} interleaved rounds after {args.warmup} warm-up calls; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, cpu, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    cols = [
        "tv eager",
        "tv compiled",
        "tv onnxruntime",
        *(["tv openvino"] if openvino_available() else []),
        *paths,
    ]
    print(
        "| model | batch | "
        + " | ".join(f"{p} img/s" for p in cols)
        + " | best exact | vs tv compiled | vs tv eager | best bf16 (error) | vs tv compiled |"
    )
    print("| --- | ---: |" + " ---: |" * len(cols) + " --- | ---: | ---: | --- | ---: |")
    rows = []
    t0 = time.time()
    for name in models:
        for batch in args.batches:
            row = run_case(name, batch, paths, args.rounds, args.warmup)
            rows.append(row)
            cells = []
            for p in cols:
                v = row["paths"].get(p)
                cells.append("-" if v is None else f"{v['images_per_s']:,.1f}")
            best = row["paths"].get(row["best"]) if row["best"] else None
            flag = "" if best is None or best["vs_anchor"] >= TARGET or batch != 16 else f" (< {TARGET})"
            exact_cells = (
                f"{row['best']} | **{best['vs_anchor']:.2f}x**{flag} | {best['vs_tv_eager']:.2f}x"
                if best
                else "- | - | -"
            )
            b16 = row["paths"].get(row["best_bf16"]) if row["best_bf16"] else None
            bf16_cells = (
                f"{row['best_bf16']} ({b16['max_rel_error']:.0e}) | {b16['vs_anchor']:.2f}x"
                if b16
                else "- | -"
            )
            print(
                f"| {name} | {batch} | " + " | ".join(cells) + f" | {exact_cells} | {bf16_cells} |",
                flush=True,
            )
            rates = ", ".join(f"{k} {v['gflops']:.0f}" for k, v in row["paths"].items())
            print(f"#   GFLOP/s: {rates}; fp32 2048^3 matmul {row['matmul_gflops']:.0f}", flush=True)
            errs = ", ".join(f"{k} {v['max_rel_error']:.1e}" for k, v in row["paths"].items())
            print(f"#   error vs tv eager: {errs}", flush=True)
            setups = ", ".join(f"{k} {v['setup_s']:.1f}" for k, v in row["paths"].items() if v["setup_s"])
            print(f"#   set-up (s): {setups}", flush=True)
            for p, note in row["notes"].items():
                print(f"#   {p}: {note}", flush=True)
    print(f"# {time.time() - t0:.0f}s; load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
