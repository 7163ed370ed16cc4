"""Inference speed: torchvision-style eager PyTorch against cnnzoo's inference paths, one run.

For each model and batch size, every contender runs the same weights on the same input; the
timed calls are interleaved round by round (alternating order) after warm-up calls, and the
table gives the median images/s. The anchor is torchvision's own model where the architecture
has a twin (weights copied from ours), else cnnzoo's model run the same way: NCHW, fp32,
BatchNorm unfolded, `torch.inference_mode`. BatchNorm statistics are warmed on random data
first (`cnnzoo.deploy.bench.warm_batchnorm`): fresh ones let activations vanish or explode.

"best" is the fastest cnnzoo path whose output is within 1e-4 (relative to the output's scale)
of the anchor's. Target: best >= 1.5x the anchor at batch 16 for the ImageNet nets.

    python benchmarks/bench_inference.py                          # the BENCHMARKS.md table
    python benchmarks/bench_inference.py --models resnet18 --batches 16 --paths folded,onnxruntime

On a machine shared with other jobs, run it as `OMP_WAIT_POLICY=PASSIVE python ...`: PyTorch's
OpenMP threads otherwise spin at every operator's barrier while their partner thread waits for
a core, and eager timings inflate by up to hundreds of times (ONNX Runtime's own thread pool
degrades gracefully), which would flatter every non-PyTorch path. On an idle machine the default
policy is the one to use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

import torch
import torchvision

import cnnzoo
from cnnzoo.deploy.bench import warm_batchnorm
from cnnzoo.deploy.export import output_error
from cnnzoo.deploy.fastest import build_path, onnx_available, timed

# (model, input side): the table.
MODELS = [
    ("resnet18", 224),
    ("resnet50", 224),
    ("mobilenet_v2", 224),
    ("efficientnet_b0", 224),
    ("lenet5", 28),
    ("resnet20", 32),
]
IMAGENET = {"resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0"}
EXACT = 1e-4


def anchor(name: str, ours: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    twin = cnnzoo.model_info(name).torchvision
    if twin is None:
        return "cnnzoo eager", ours
    tv = getattr(torchvision.models, twin)().eval()
    tv.load_state_dict(ours.state_dict())
    return "torchvision eager", tv


def run_case(name: str, side: int, batch: int, paths: list[str], rounds: int, warmup: int, device) -> dict:
    # Every zoo model shares ZooModel.forward's code object, and dynamo stops compiling a code
    # object after 8 recompilations (falling back to eager): start each case afresh.
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cnnzoo.create_model(name).to(device).eval()
    c = cnnzoo.model_info(name).input_size[0]
    x = torch.randn(batch, c, side, side, device=device)
    warm_batchnorm(model, x[: min(batch, 8)])
    label, ref_model = anchor(name, model)
    ref_model.to(device)

    def eager(inp: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return ref_model(inp)

    runs = {"anchor": eager}
    setup, notes = {"anchor": 0.0}, {}
    for p in paths:
        try:
            runs[p], setup[p] = build_path(p, model, x)
        except Exception as e:  # reported, the others still run
            notes[p] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    outs = {}
    for k, run in runs.items():
        for _ in range(warmup):
            outs[k] = run(x)
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for r in range(rounds):
        for k in order if r % 2 == 0 else reversed(order):
            times[k].append(timed(runs[k], x)[1])
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {"model": name, "input": side, "batch": batch, "anchor": label, "paths": {}}
    for k in runs:
        _, rel = output_error(outs[k], outs["anchor"])
        row["paths"][k] = {
            "images_per_s": batch / med[k],
            "ms": 1e3 * med[k],
            "speedup": med["anchor"] / med[k],
            "max_rel_error": rel,
            "setup_s": setup[k],
        }
    exact = {k: v for k, v in row["paths"].items() if k != "anchor" and v["max_rel_error"] <= EXACT}
    best = max(exact, key=lambda k: exact[k]["images_per_s"]) if exact else "anchor"
    row["best"] = best
    row["notes"] = notes
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="*", help="names (default: the issue's six)")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 16])
    parser.add_argument(
        "--paths",
        default="channels_last,folded,compiled,onnxruntime",
        help="cnnzoo paths to time against the anchor (comma-separated)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paths = [p for p in args.paths.split(",") if p and (p != "onnxruntime" or onnx_available())]
    if device.type == "cuda":
        paths = [p for p in paths if p not in ("compiled", "onnxruntime")] + ["cuda-bf16", "cuda-graph"]
    models = [(m, s) for m, s in MODELS if not args.models or m in args.models]
    models += [(m, cnnzoo.model_info(m).input_size[1]) for m in args.models or [] if m not in dict(MODELS)]
    print(
        f"# inference, median of {args.rounds} interleaved rounds after {args.warmup} warm-up calls; "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {device}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    cols = ["anchor", *paths]
    print("| model | input | batch | " + " | ".join(f"{p} img/s" for p in cols) + " | best | best / anchor |")
    print("|" + " --- |" * 3 + " ---: |" * len(cols) + " --- | ---: |")
    rows = []
    t0 = time.time()
    for name, side in models:
        for batch in args.batches:
            row = run_case(name, side, batch, paths, args.rounds, args.warmup, device)
            rows.append(row)
            cells = []
            for p in cols:
                v = row["paths"].get(p)
                cells.append("-" if v is None else f"{v['images_per_s']:,.1f}")
            best = row["paths"][row["best"]]
            flag = ""
            if name in IMAGENET and batch == 16 and best["speedup"] < 1.5:
                flag = " (< 1.5)"
            print(
                f"| {name} | {side} | {batch} | " + " | ".join(cells) + f" | {row['best']} | "
                f"**{best['speedup']:.2f}x**{flag} |",
                flush=True,
            )
            for p, note in row["notes"].items():
                print(f"#   {p}: {note}", flush=True)
    print(
        f"# anchor: torchvision's model where a twin exists, else cnnzoo eager; {time.time() - t0:.0f}s; "
        f"load average at the end {os.getloadavg()[0]:.1f}"
    )
    worst = max(r["paths"][p]["max_rel_error"] for r in rows for p in r["paths"] if p == r["best"])
    print(f"# largest error of a chosen path vs the anchor: {worst:.1e} of the output's scale")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
