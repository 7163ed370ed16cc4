"""`cnnzoo export` and `cnnzoo bench`: deployment files and inference speed.

`add_parsers(subparsers)` registers both on the main parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cnnzoo.cli.main import UsageError, _parse_input, add_threads_flag, check_output_file

__all__ = ["add_parsers"]


def _input_size(text: str | None, default: tuple[int, int, int]) -> tuple[int, int, int]:
    size = _parse_input(text)
    if size is None:
        return default
    if len(size) != 3:
        raise UsageError(f"--input takes CxHxW, e.g. 3x224x224, not {text!r}")
    return size  # type: ignore[return-value]


def _load(source: str, model: str | None) -> Any:
    from cnnzoo.deploy.source import load_source

    return load_source(source, model=model)


def _missing_onnx(e: ImportError) -> UsageError:
    from cnnzoo.deploy.export import ONNX_HINT

    return UsageError(str(e) if "cnnzoo[onnx]" in str(e) else f"{e}: {ONNX_HINT}")


# -- export ---------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from cnnzoo.deploy.export import FORMATS, MissingDependency, export

    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    src = _load(args.source, args.model)
    input_size = _input_size(args.input, src.input_size)
    if input_size[0] != getattr(src.model, "in_chans", input_size[0]):
        raise UsageError(
            f"--input {args.input}: {src.label} takes {src.model.in_chans} channels, not {input_size[0]}"
        )
    out = args.out
    if out is None:
        stem = Path(args.source).name.split(".")[0] if Path(args.source).exists() else args.source
        out = f"{stem}{FORMATS[args.format]}"
    # Checked before the export's tracing and checks, which take a while on large models.
    check_output_file(out, "--out", overwrite=args.overwrite, make_folders=True)
    try:
        result = export(
            src.model,
            out,
            format=args.format,
            input_size=input_size,
            batch=args.batch,
            dynamic_batch=args.dynamic_batch,
            optimize=not args.no_fold,
            rtol=args.rtol,
            name=src.label,
            overwrite=args.overwrite,
        )
    except MissingDependency as e:
        raise _missing_onnx(e) from e
    except FileExistsError as e:
        raise UsageError(str(e)) from e
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    batch = "dynamic batch" if result.dynamic_batch else f"batch {result.input_shape[0]}"
    shape = "x".join(map(str, result.input_shape[1:]))
    print(
        f"wrote {result.path} ({args.format}, input {shape}, {batch}); outputs match eager PyTorch to "
        f"{result.max_abs_error:.2e} max abs ({result.max_rel_error:.1e} of the output's scale); "
        f"{result.folding}; {result.seconds:.1f}s"
    )
    extra = [f for f in result.files if f != result.path]
    if extra:
        print(f"weights beside it: {', '.join(map(str, extra))}")
    return 0


# -- bench ----------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from cnnzoo.deploy.bench import bench, best_row, render_bench
    from cnnzoo.deploy.fastest import PATHS

    if args.batch < 1 or args.rounds < 1:
        raise UsageError(f"--batch and --rounds must be >= 1, got {args.batch} and {args.rounds}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    from cnnzoo.train.trainer import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    paths = None
    if args.paths:
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
        unknown = [p for p in paths if p not in PATHS]
        if unknown:
            raise UsageError(f"--paths: unknown {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    src = _load(args.source, args.model)
    input_size = _input_size(args.input, src.input_size)
    from cnnzoo.train.progress import warn_if_busy

    warn_if_busy(torch.get_num_threads(), "timings will be noisy and eager PyTorch's inflated")
    progress = (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True)) if args.verbose else None
    rows = bench(
        src.model,
        input_size,
        batch=args.batch,
        paths=paths,
        rounds=args.rounds,
        warmup=args.warmup,
        device=args.device,
        warm_bn=not src.trained,
        log=progress,
    )
    if args.format in ("json", "csv"):
        print(render_bench(rows, args.format))
        return 0
    shape = "x".join(map(str, input_size))
    print(
        f"{src.label}, batch {args.batch} at {shape}, {args.device}, {torch.get_num_threads()} threads, "
        f"median of {args.rounds} interleaved rounds"
        + ("" if src.trained else ", BatchNorm statistics warmed on random data")
    )
    print(render_bench(rows, args.format))
    best = best_row(rows)
    print(f"fastest exact path: {best.path} ({best.speedup:.2f}x eager, {best.images_per_s:,.1f} images/s)")
    return 0


# -- wiring ---------------------------------------------------------------------------------------
def add_parsers(sub: Any) -> None:
    """Register `export` and `bench` on the main parser's subparsers."""
    from cnnzoo.deploy.export import FORMATS

    p = sub.add_parser(
        "export",
        help="export a model to ONNX, TorchScript or torch.export, checked against eager",
        description="NAME_or_CHECKPOINT is a model name (random weights), a run directory, a "
        ".safetensors file from `cnnzoo train` or a torchvision .pth. BatchNorm is folded and "
        "dropout removed first; the exported file is run on random input and compared with eager "
        "PyTorch before it is written (atomically). ONNX needs: pip install 'cnnzoo[onnx]'.",
    )
    p.add_argument("source", metavar="NAME_or_CHECKPOINT")
    p.add_argument("--format", choices=list(FORMATS), default="onnx")
    p.add_argument("--input", metavar="CxHxW", help="input size (default: the model's, or the run's)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the exported graph (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="accept any batch size (checked at two)")
    p.add_argument("--out", metavar="FILE", help="output file (default NAME.onnx / .pt / .pt2 here)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--model", help="architecture, for checkpoint files that do not name it")
    p.add_argument("--no-fold", action="store_true", help="export the model as it is, BatchNorm unfolded")
    p.add_argument(
        "--rtol", type=float, default=1e-4, help="accepted error relative to the output's scale (1e-4)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_threads_flag(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "bench",
        help="inference speed: eager, channels_last, folded, torch.compile, ONNX Runtime",
        description="Times every inference path on the same input: warm-up, interleaved rounds, "
        "median; each path's output is compared with eager's. Untrained models get warmed "
        "BatchNorm statistics first (fresh ones let activations explode or vanish into slow denormals). "
        "`compiled` takes tens of seconds to build.",
    )
    p.add_argument("source", metavar="NAME_or_CHECKPOINT")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input", metavar="CxHxW", help="input size (default: the model's)")
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast, channels_last, CUDA graphs)")
    p.add_argument(
        "--paths",
        metavar="P,P",
        help="comma-separated paths (default: every fp32 one); bf16 and compiled-bf16 are opt-in: "
        "faster on CPUs with native bf16, but not exact",
    )
    p.add_argument("--rounds", type=int, default=10, help="timed calls per path (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per path first")
    p.add_argument("--model", help="architecture, for checkpoint files that do not name it")
    p.add_argument("--format", choices=["table", "md", "json", "csv"], default="table")
    p.add_argument("--verbose", action="store_true", help="progress on stderr")
    p.set_defaults(func=cmd_bench)
