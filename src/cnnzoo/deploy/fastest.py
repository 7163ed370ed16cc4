"""The inference paths of one model, and choosing the fastest one that is exact within tolerance.

A path is a callable x -> output built from the model once (its set-up cost is measured):

    eager                 the model as it is: NCHW, fp32, BatchNorm unfolded (torchvision-style)
    channels_last         the same model with NHWC weights and input
    folded                `optimize_for_inference`: BN folded, dropout gone, channels_last
    compiled              `torch.compile` of the folded model (inductor, weights frozen as constants)
    onnxruntime           the folded model exported to ONNX, run by onnxruntime with all graph
                          optimisations (needs `pip install 'cnnzoo[onnx]'`)
    bf16                  opt-in, inexact: the folded NHWC model with bf16 weights and activations
                          (oneDNN's bf16 kernels; fast on CPUs with native bf16 dot products,
                          AVX512-BF16 or AMX, slower elsewhere)
    compiled-bf16         opt-in, inexact: `torch.compile` of the `bf16` model (inductor, frozen)
    cuda-bf16             on a GPU: folded, channels_last, bf16 autocast
    cuda-graph            on a GPU: the bf16 path captured once as a CUDA graph and replayed

`choose_fastest` verifies every candidate against eager on the caller's own batch and times it;
a candidate whose output is off by more than `rtol` of the output's scale is never chosen. The
fp32 CPU paths agree with eager to ~1e-6; bf16 paths (about 1e-2 of the output's scale, more on
depthwise nets) do not pass the default tolerance and are only chosen when the caller loosens it
and asks for them (they are in no default list).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnzoo.deploy.export import DEFAULT_RTOL, MissingDependency, onnx_session, output_error, require_onnx
from cnnzoo.deploy.fold import optimize_for_inference

__all__ = [
    "CPU_BF16_PATHS",
    "CPU_PATHS",
    "CUDA_PATHS",
    "PATHS",
    "Candidate",
    "Choice",
    "Predictions",
    "build_path",
    "choose_fastest",
    "onnx_available",
    "run_fastest",
    "timed",
]

Run = Callable[[torch.Tensor], torch.Tensor]
ORT_CHUNK = 8  # images per ONNX Runtime call
CPU_PATHS = ("eager", "channels_last", "folded", "compiled", "onnxruntime")
CPU_BF16_PATHS = ("bf16", "compiled-bf16")  # opt-in: outside the fp32 tolerance
CUDA_PATHS = ("eager", "channels_last", "folded", "cuda-bf16", "cuda-graph")
PATHS = tuple(dict.fromkeys(CPU_PATHS + CPU_BF16_PATHS + CUDA_PATHS))


def onnx_available() -> bool:
    try:
        require_onnx()
    except MissingDependency:
        return False
    return True


def _first(out: Any) -> torch.Tensor:
    # GoogLeNet-style models return a tuple in training mode only; eval paths return tensors.
    return out[0] if isinstance(out, tuple | list) else out


def _eager(model: nn.Module, example: torch.Tensor) -> Run:
    model.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return _first(model(x))

    return run


def _channels_last(model: nn.Module, example: torch.Tensor) -> Run:
    m = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return _first(m(x.contiguous(memory_format=torch.channels_last)))

    return run


def _folded(model: nn.Module, example: torch.Tensor) -> Run:
    m = optimize_for_inference(model, example=example[:1], channels_last=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return _first(m(x.contiguous(memory_format=torch.channels_last)))

    return run


def _compiled(model: nn.Module, example: torch.Tensor, dtype: torch.dtype = torch.float32) -> Run:
    import torch._inductor.config as inductor_config

    m = optimize_for_inference(model, example=example[:1], channels_last=True).to(dtype)
    # Freezing turns the weights into constants, so inductor pre-packs them for oneDNN once
    # instead of on every call; it applies to no-grad inference only.
    inductor_config.freezing = True
    compiled = torch.compile(m, dynamic=False)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = _first(compiled(x.to(dtype).contiguous(memory_format=torch.channels_last)))
        return out.float()

    run(example)  # compiles now, so the set-up time holds the compilation
    return run


def _bf16(model: nn.Module, example: torch.Tensor) -> Run:
    # Weights and activations in bf16 (not autocast): no per-call casts of the weights, and
    # oneDNN runs every convolution, pooling and elementwise op on bf16 NHWC tensors.
    m = optimize_for_inference(model, example=example[:1], channels_last=True).to(torch.bfloat16)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return _first(m(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))).float()

    return run


def _compiled_bf16(model: nn.Module, example: torch.Tensor) -> Run:
    return _compiled(model, example, torch.bfloat16)


def _onnx_bytes(model: nn.Module, x: torch.Tensor) -> bytes:
    """`model` as an ONNX graph with a dynamic batch, exported in this process.

    The TorchScript-based exporter first: for this in-process use it is 3-8x faster than the
    torch.export-based one (0.5-0.9 s against 3-4 s for resnet18, mobilenet_v2, efficientnet_b0)
    and keeps about 170 MB less in the process for good (LeNet-5 at 224 px: +36 MB against
    +207 MB), which `cnnzoo predict`'s peak memory feels. ONNX Runtime runs both graphs equally
    fast. The torch.export-based exporter stays the fallback for what TorchScript cannot trace.
    """
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            buffer = io.BytesIO()
            torch.onnx.export(
                model,
                (x.cpu(),),
                buffer,
                dynamo=False,
                input_names=["input"],
                dynamic_axes={"input": {0: "batch"}},
            )
            return buffer.getvalue()
        except Exception:  # any tracing failure: try the other exporter
            pass
        program = torch.onnx.export(
            model,
            (x.cpu(),),
            dynamo=True,
            input_names=["input"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            verbose=False,
        )
        return program.model_proto.SerializeToString()


def _onnxruntime(model: nn.Module, example: torch.Tensor) -> Run:
    require_onnx()
    m = optimize_for_inference(model, example=example[:1], channels_last=False)
    # torch.export keeps a size-1 dimension static, so the dynamic batch is traced at 2.
    x = example if example.shape[0] > 1 else example.expand(2, *example.shape[1:]).contiguous()
    # No memory pattern: it pre-plans one block per input shape (+83 MB for LeNet-5 at 224 px,
    # batch 32) and bought no speed on resnet18, mobilenet_v2 or efficientnet_b0 here.
    session = onnx_session(_onnx_bytes(m, x), mem_pattern=False)
    device = example.device

    def run(x: torch.Tensor) -> torch.Tensor:
        # ONNX Runtime keeps its largest run's buffers (NCHWc copies of every activation) for good;
        # runs of ORT_CHUNK images keep them a quarter of a 32-image batch's, at the same speed
        # (LeNet-5 at 224 px and resnet18, 1 thread: within 5% either way), and `cnnzoo predict`'s
        # peak memory with them.
        x = x.detach().cpu()
        outs = [
            torch.from_numpy(session.run(None, {"input": x[i : i + ORT_CHUNK].contiguous().numpy()})[0])
            for i in range(0, x.shape[0], ORT_CHUNK)
        ]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)).to(device)

    return run


def _cuda_bf16(model: nn.Module, example: torch.Tensor) -> Run:
    m = optimize_for_inference(model, example=example[:1], channels_last=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return _first(m(x.contiguous(memory_format=torch.channels_last))).float()

    return run


def _cuda_graph(model: nn.Module, example: torch.Tensor) -> Run:
    m = optimize_for_inference(model, example=example[:1], channels_last=True)
    static_in = example.detach().clone().contiguous(memory_format=torch.channels_last)

    def step() -> torch.Tensor:
        # Autocast's cache of bf16 weight copies must be off: a graph cannot own memory that the
        # cache frees when the autocast region ends.
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            return _first(m(static_in)).float()

    with torch.inference_mode():
        # Warm-up on a side stream, as CUDA graph capture requires (cuDNN picks its algorithms).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = step()

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.shape != static_in.shape:
            raise ValueError(
                f"the CUDA graph was captured for {tuple(static_in.shape)}, got {tuple(x.shape)}"
            )
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    return run


_BUILDERS: dict[str, Callable[[nn.Module, torch.Tensor], Run]] = {
    "eager": _eager,
    "channels_last": _channels_last,
    "folded": _folded,
    "compiled": _compiled,
    "onnxruntime": _onnxruntime,
    "bf16": _bf16,
    "compiled-bf16": _compiled_bf16,
    "cuda-bf16": _cuda_bf16,
    "cuda-graph": _cuda_graph,
}


def build_path(name: str, model: nn.Module, example: torch.Tensor) -> tuple[Run, float]:
    """(callable, set-up seconds) of path `name` for `model`; the model itself is not modified."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown inference path {name!r}; choose from {', '.join(PATHS)}")
    if name.startswith("cuda") and example.device.type != "cuda":
        raise ValueError(f"path {name!r} needs a CUDA device (--device cuda)")
    if name in ("compiled", "onnxruntime", *CPU_BF16_PATHS) and example.device.type == "cuda":
        raise ValueError(f"path {name!r} is a CPU path here; on a GPU use cuda-bf16 or cuda-graph")
    t0 = time.perf_counter()
    run = _BUILDERS[name](model, example)
    return run, time.perf_counter() - t0


def timed(run: Run, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(output, seconds) of one call; synchronises a GPU before and after."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = run(x)
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


@dataclass
class Candidate:
    name: str
    run: Run | None
    setup_s: float = 0.0
    seconds: float = float("inf")  # median per call on the example
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    error: str = ""  # why it could not be built or run

    @property
    def exact(self) -> bool:
        return self.run is not None and not self.error


@dataclass
class Choice:
    """The chosen path and every candidate's figures (for the message that says which)."""

    best: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    reference: torch.Tensor | None = None  # eager output on the example

    def describe(self) -> str:
        b = self.best
        eager = next((c for c in self.candidates if c.name == "eager"), None)
        if b.name == "eager" or eager is None:
            others = [c.name for c in self.candidates if c.name != "eager"]
            why = f"faster than {', '.join(others)} here" if others else "the only path tried"
            return f"eager PyTorch ({why})"
        speed = f"{1e3 * b.seconds:.1f} ms vs eager {1e3 * eager.seconds:.1f} ms per batch"
        return f"{b.name} ({speed}; max error {b.max_rel_error:.1e} of the output's scale vs eager)"


def choose_fastest(
    model: nn.Module,
    example: torch.Tensor,
    *,
    paths: Sequence[str] | None = None,
    rtol: float = DEFAULT_RTOL,
    repeats: int = 3,
    expected_calls: int = 1,
) -> Choice:
    """The fastest path whose output on `example` agrees with eager within `rtol` of its scale.

    Paths default to eager, folded and (when installed, and when the work ahead is long enough to
    repay an export of about a second) onnxruntime; `compiled` takes tens of seconds to build and
    is only tried when asked for. `expected_calls` is how many batches the caller will run.
    """
    model.eval()
    reference_run = _eager(model, example)
    reference_run(example)  # first call: allocator and oneDNN warm-up
    reference, t_eager = timed(reference_run, example)
    eager = Candidate("eager", reference_run, seconds=t_eager)
    if paths is None:
        paths = ["eager", "folded"]
        # An ONNX export costs about a second or more; only worth it for a long job.
        if onnx_available() and example.device.type == "cpu" and t_eager * expected_calls > 2.0:
            paths.append("onnxruntime")
    candidates = [eager]
    for name in paths:
        if name == "eager":
            continue
        try:
            run, setup = build_path(name, model, example)
            run(example)
            out, _ = timed(run, example)
        except MissingDependency as e:
            candidates.append(Candidate(name, None, error=str(e)))
            continue
        except Exception as e:  # a path that cannot serve this model is skipped, not fatal
            candidates.append(Candidate(name, None, error=f"{type(e).__name__}: {e}".splitlines()[0][:200]))
            continue
        abs_err, rel_err = output_error(out, reference)
        cand = Candidate(name, run, setup_s=setup, max_abs_error=abs_err, max_rel_error=rel_err)
        if not rel_err <= rtol:
            cand.error = f"output differs from eager by {rel_err:.1e} of its scale (tolerance {rtol:.0e})"
        candidates.append(cand)
    # Interleave the timed calls so that drift in the machine's speed hits every path alike.
    times: dict[str, list[float]] = {c.name: [] for c in candidates if c.exact}
    live = [c for c in candidates if c.exact]
    for r in range(repeats):
        for c in live if r % 2 == 0 else reversed(live):
            times[c.name].append(timed(c.run, example)[1])  # type: ignore[arg-type]
    for c in live:
        c.seconds = statistics.median(times[c.name])
    # Set-up is paid by now; what is left is `expected_calls` calls of the chosen path.
    best = min(live, key=lambda c: c.seconds)
    return Choice(best, candidates, reference)


class Predictions(list):
    """A list of per-image results that also says which inference path produced them (`runtime`)."""

    runtime: dict[str, Any]

    def __init__(self, items: Sequence[Any] = (), runtime: dict[str, Any] | None = None) -> None:
        super().__init__(items)
        self.runtime = runtime or {"path": "eager", "description": "eager PyTorch"}


# Images checked against eager before a faster path takes over: enough to exercise every layer
# on real data, few enough that the eager check costs little next to the whole job.
PROBE_IMAGES = 4


def run_fastest(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 32, rtol: float = DEFAULT_RTOL
) -> tuple[torch.Tensor, Choice | None]:
    """Outputs of `model` on `x` (any number of samples) along the fastest exact path.

    The first `PROBE_IMAGES` samples are run eagerly and by each candidate path; the fastest one
    whose outputs agree runs the rest in batches of `batch_size`. With no more samples than the
    probe, eager's own outputs are the answer (nothing faster can be verified for less).
    """
    if x.shape[0] <= PROBE_IMAGES:
        return _eager(model, x)(x), None
    probe = x[:PROBE_IMAGES]
    # Eager time on the probe x this many calls estimates the whole job's eager time.
    calls = -(-x.shape[0] // PROBE_IMAGES)
    choice = choose_fastest(model, probe, rtol=rtol, expected_calls=calls)
    run = choice.best.run
    assert run is not None
    outs = [run(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs), choice
