"""Export a model to ONNX, TorchScript or a torch.export program, checked against eager first.

    result = export(model, "resnet18.onnx", format="onnx", input_size=(3, 224, 224))
    result.max_abs_error   # exported file vs eager PyTorch on the same random input

The model is tidied for inference first (`optimize_for_inference`: BatchNorm folded, dropout
and auxiliary heads removed), exported into a temporary directory beside the destination,
loaded back with its own runtime (onnxruntime, `torch.jit.load`, `torch.export.load`) and run on
random input; only when its outputs agree with the untouched eager model's within tolerance is
the file moved into place (`os.replace`), so a failed or wrong export never leaves a file.

Formats:
    onnx              torch.onnx's torch.export-based exporter (needs `pip install 'cnnzoo[onnx]'`)
    torchscript       `torch.jit.trace` (deprecated by PyTorch but still the C++/mobile route)
    exported-program  `torch.export` (.pt2), the format PyTorch's own deployment tools read

A pair that cannot export raises `ExportError` naming the cause and a format that does work
for that model (tried, not guessed).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.atomic import file_mode
from cnnzoo.deploy.fold import FoldReport, optimize_for_inference

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "MissingDependency",
    "export",
    "load_exported",
    "output_error",
    "require_onnx",
]

FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
# Which format to suggest when one fails, in order of preference.
_ALTERNATIVES = {
    "onnx": ("exported-program", "torchscript"),
    "torchscript": ("exported-program", "onnx"),
    "exported-program": ("torchscript", "onnx"),
}
# fp32 kernels that fuse or reorder operations (and the folded weights) differ from eager by
# rounding: ~1e-6 of the output's scale on every registered model. 1e-4 leaves room for deep
# nets and still catches any real mismatch (a wrong layer is off by O(1)).
DEFAULT_RTOL = 1e-4
ONNX_HINT = "pip install 'cnnzoo[onnx]'"


class ExportError(ValueError):
    """A model that cannot be exported to the requested format, or whose export is not exact."""


class MissingDependency(ImportError):
    """An optional package (onnx, onnxruntime, onnxscript) is not installed."""


@dataclass
class ExportResult:
    path: Path
    format: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    max_abs_error: float  # exported vs eager, over the checked inputs
    max_rel_error: float  # max_abs_error / max |eager output|
    seconds: float
    folding: str  # optimize_for_inference's summary
    files: list[Path]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["files"] = [str(f) for f in self.files]
        return d


def require_onnx() -> None:
    """Raise MissingDependency with the install line unless onnx, onnxruntime and onnxscript import."""
    missing = []
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise MissingDependency(f"ONNX export and ONNX Runtime need {', '.join(missing)}: {ONNX_HINT}")


def output_error(out: Any, ref: torch.Tensor) -> tuple[float, float]:
    """(max |out - ref|, that divided by max |ref|): the scale-free error used everywhere here."""
    out_t = torch.as_tensor(out).detach().float().cpu()
    ref_t = ref.detach().float().cpu()
    if out_t.shape != ref_t.shape:
        raise ExportError(f"exported output has shape {tuple(out_t.shape)}, eager {tuple(ref_t.shape)}")
    if not torch.isfinite(out_t).all():
        return float("inf"), float("inf")
    abs_err = float((out_t - ref_t).abs().max()) if ref_t.numel() else 0.0
    scale = float(ref_t.abs().max()) if ref_t.numel() else 0.0
    return abs_err, abs_err / scale if scale > 0 else abs_err


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporters print progress and warn about deprecation and tracer constant-folding of
    # shape checks (the input check in forward, which is meant to be static).
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _reason(e: BaseException) -> str:
    """The innermost cause's first line: exporters wrap the useful message in generic advice."""
    seen = {id(e)}
    while e.__cause__ is not None and id(e.__cause__) not in seen:
        e = e.__cause__
        seen.add(id(e))
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    line = next((t.strip() for t in text if t.strip()), "")
    return f"{type(e).__name__}: {line[:200]}" if line else type(e).__name__


# -- the three formats: write to a path, load back as a callable ---------------------------------
def _batch_dim(x: torch.Tensor, dynamic: bool) -> tuple[dict[int, Any], ...] | None:
    if not dynamic:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=4096)},)


def _write_exported_program(model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool) -> None:
    with _quiet():
        ep = torch.export.export(model, (x,), dynamic_shapes=_batch_dim(x, dynamic))
        torch.export.save(ep, str(path))


def _write_torchscript(model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool) -> None:
    if not hasattr(torch, "jit") or not hasattr(torch.jit, "trace"):
        raise RuntimeError(f"this torch ({torch.__version__}) has no TorchScript")
    with _quiet():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        torch.jit.save(traced, str(path))


def _write_onnx(model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool) -> None:
    require_onnx()
    with _quiet():
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=_batch_dim(x, dynamic),
            verbose=False,
        )
        # external_data=None: one self-contained file below protobuf's 2 GB limit, weights beside it above.
        program.save(str(path), external_data=None)


_WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, Path, bool], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
    "exported-program": _write_exported_program,
}


def onnx_session(
    path: str | os.PathLike | bytes, *, threads: int | None = None, mem_pattern: bool = True
) -> Any:
    """An onnxruntime CPU session with every graph optimisation on (fusions, NCHWc layouts).

    `mem_pattern=False` drops ONNX Runtime's per-shape memory plan, for callers that count memory.

    On a machine with fewer free cores than threads, the worker threads sleep instead of
    spinning between operators (ONNX Runtime's counterpart of OMP_WAIT_POLICY=PASSIVE): a spinning
    worker holds a core its partner is waiting for. EfficientNet-B0 at batch 16 ran 1.25x faster
    so at load 11.5 on 2 cores.
    """
    require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_mem_pattern = mem_pattern
    from cnnzoo.train.progress import busy_load

    if busy_load(opts.intra_op_num_threads) is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        path if isinstance(path, bytes) else os.fspath(path), opts, providers=["CPUExecutionProvider"]
    )


def load_exported(path: str | os.PathLike, format: str | None = None) -> Callable[[torch.Tensor], Any]:
    """A callable running an exported file with its own runtime: x (torch) -> output."""
    path = Path(path)
    format = format or next((f for f, ext in FORMATS.items() if path.suffix == ext), None)
    if format == "onnx":
        session = onnx_session(path)
        name = session.get_inputs()[0].name

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: x.detach().cpu().contiguous().numpy()})[0])

        return run_onnx
    if format == "torchscript":
        with _quiet():
            module = torch.jit.load(str(path), map_location="cpu")
        return torch.no_grad()(module)
    if format == "exported-program":
        with _quiet():
            module = torch.export.load(str(path)).module()
        return torch.no_grad()(module)
    raise ValueError(f"cannot tell the format of {str(path)!r}; pass one of {', '.join(FORMATS)}")


# -- export ---------------------------------------------------------------------------------------
def _alternative(model: nn.Module, x: torch.Tensor, format: str, dynamic: bool, workdir: Path) -> str | None:
    for alt in _ALTERNATIVES[format]:
        try:
            _WRITERS[alt](model, x, workdir / f"probe{FORMATS[alt]}", dynamic)
        except Exception:
            continue
        return alt
    return None


def export(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: str = "onnx",
    input_size: tuple[int, int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    optimize: bool = True,
    rtol: float = DEFAULT_RTOL,
    name: str | None = None,
    overwrite: bool = True,
) -> ExportResult:
    """Export `model` to `path` in `format` after checking the exported outputs against eager.

    Args:
        model: any nn.Module taking one (N, C, H, W) tensor; it is not modified.
        path: destination file (the ONNX weights go beside it above 2 GB).
        format: "onnx", "torchscript" or "exported-program".
        input_size: (C, H, W) of the example input (default: the model's smallest).
        batch: batch size of the example input (and of the file unless `dynamic_batch`).
        dynamic_batch: let the file take any batch size (checked at two sizes).
        optimize: fold BatchNorm and drop training-only modules first (`optimize_for_inference`).
        rtol: largest accepted max |exported - eager| / max |eager|.
        name: how to call the model in messages (default: its `model_name`).
        overwrite: replace an existing file at `path`; False refuses it (`FileExistsError`)
            before any work is done.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if format == "onnx":
        require_onnx()
    name = name or str(getattr(model, "model_name", type(model).__name__))
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(
            f"--out {str(path)!r} is a directory; give a file name such as model{FORMATS[format]}"
        )
    if not overwrite and path.exists():
        raise FileExistsError(f"{str(path)!r} already exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        if input_size is None:
            size = getattr(model, "fixed_input_size", None) or max(
                int(getattr(model, "min_input_size", 32)), 1
            )
            input_size = (int(getattr(model, "in_chans", 3)), size, size)
        # torch.export treats a dimension of size 1 as static, so a dynamic batch is traced at 2.
        trace_batch = max(batch, 2) if dynamic_batch else batch
        x = torch.randn(trace_batch, *input_size)
        with torch.no_grad():
            if hasattr(model, "check_input"):
                model.check_input(x)  # a wrong --input fails here, before any exporter runs
            refs = [(x, model(x))]
            if dynamic_batch:
                x2 = torch.randn(trace_batch + 1, *input_size)
                refs.append((x2, model(x2)))
        report = FoldReport()
        target = model
        if optimize:
            target, report = optimize_for_inference(model, example=x, channels_last=False, return_report=True)
    finally:
        model.train(was_training)

    from cnnzoo.atomic import ensure_free_space

    # The staged file and the probe the exporters write beside it: about twice the weights.
    weights = sum(t.numel() * t.element_size() for t in target.state_dict().values())
    ensure_free_space(
        path.parent,
        2 * weights + (16 << 20),
        what=f"the {format} export",
        fix="free some space or choose another --out",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        staged = workdir / path.name
        try:
            _WRITERS[format](target, x, staged, dynamic_batch)
            run = load_exported(staged, format)
            errors = []
            for xi, ref in refs:
                with torch.no_grad():
                    out = run(xi)
                errors.append(output_error(out, ref))
        except MissingDependency:
            raise
        except ExportError as e:
            raise ExportError(f"{name} exported to {format} gives wrong outputs: {e}") from e
        except Exception as e:
            alt = _alternative(target, x, format, dynamic_batch, workdir)
            instead = f"use --format {alt} instead" if alt else "no other format works either"
            raise ExportError(f"{name} cannot be exported to {format} ({_reason(e)}); {instead}") from e
        abs_err = max(e[0] for e in errors)
        rel_err = max(e[1] for e in errors)
        if not rel_err <= rtol:
            raise ExportError(
                f"{name} exported to {format} differs from eager PyTorch by {rel_err:.2e} of the output's "
                f"scale (max abs {abs_err:.2e}, tolerance {rtol:.0e}); nothing was written"
                + (
                    "; the batch size may have been fixed at export, try without --dynamic-batch"
                    if dynamic_batch and errors[0][1] <= rtol
                    else ""
                )
            )
        files = []
        for staged_file in sorted(workdir.iterdir()):
            if staged_file.name.startswith("probe"):
                continue
            final = path.parent / staged_file.name
            os.chmod(staged_file, file_mode())  # an exporter's own temp files may be private (0600)
            os.replace(staged_file, final)
            files.append(final)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return ExportResult(
        path=path,
        format=format,
        input_shape=tuple(x.shape),
        dynamic_batch=dynamic_batch,
        max_abs_error=abs_err,
        max_rel_error=rel_err,
        seconds=time.perf_counter() - t0,
        folding=report.summary() if optimize else "not optimised",
        files=files,
    )
