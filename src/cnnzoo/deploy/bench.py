"""Inference speed of one model along every path, measured fairly (`cnnzoo bench`).

Fair means: the same weights and the same input for every path; a warm-up call per path
(allocators, oneDNN primitive caches, lazy initialisation); the timed calls interleaved round by
round, in alternating order, so that drift in a shared machine's speed hits every path alike;
the median per path. Each path's output is compared with eager's, so a fast wrong path shows.

An untrained model's BatchNorm layers hold fresh statistics (mean 0, variance 1) that normalise
nothing: deep nets' activations explode or vanish (ResNet-110's logits reach 3.6e7, MobileNet
v1's 1e-18, against ~1 after warming), values no trained net computes, and once they reach the
denormal range x86 arithmetic takes slow paths (the issue measured 10-40x). `warm_batchnorm`
runs a few training-mode forward passes on random data first, as a short training run would.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.deploy.export import MissingDependency, output_error
from cnnzoo.deploy.fastest import CPU_PATHS, CUDA_PATHS, build_path, onnx_available, timed

__all__ = ["BenchRow", "bench", "default_paths", "render_bench", "warm_batchnorm"]

_BN = nn.modules.batchnorm._BatchNorm
EXACT_RTOL = 1e-4  # paths within this of eager (relative to the output's scale) count as exact


@dataclass
class BenchRow:
    path: str
    ms: float  # median milliseconds per batch
    images_per_s: float
    speedup: float  # eager's median time / this path's
    max_rel_error: float  # vs eager, relative to the output's scale
    setup_s: float  # building the path (folding, export, compilation)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def warm_batchnorm(model: nn.Module, example: torch.Tensor, *, steps: int = 3) -> None:
    """Replace fresh BatchNorm statistics by the average of `steps` batches of random input.

    Uses BN's cumulative average (momentum None) so that three batches give the plain mean of
    their statistics; momentum and eval mode are restored afterwards.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for _ in range(steps):
            model(torch.randn_like(example))
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)


def default_paths(device: torch.device) -> tuple[str, ...]:
    if device.type == "cuda":
        return CUDA_PATHS
    paths = [p for p in CPU_PATHS if p != "onnxruntime" or onnx_available()]
    return tuple(paths)


def bench(
    model: nn.Module,
    input_size: tuple[int, int, int],
    *,
    batch: int = 16,
    paths: Sequence[str] | None = None,
    rounds: int = 10,
    warmup: int = 2,
    device: str | torch.device = "cpu",
    warm_bn: bool = True,
    log: Any = None,
) -> list[BenchRow]:
    """Median time per batch of each inference path, interleaved; the first path is the anchor.

    `warm_bn` replaces fresh BatchNorm statistics first (pass False for trained weights).
    Paths that cannot be built (a missing optional package, an export that fails) get a row
    with the reason instead of a time.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available here; use --device cpu")
    if batch < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f"batch and rounds must be >= 1 and warmup >= 0, got {batch}, {rounds}, {warmup}")
    paths = list(paths or default_paths(device))
    if "eager" in paths:  # eager is the anchor every ratio refers to
        paths.remove("eager")
    paths.insert(0, "eager")
    model = model.to(device).eval()
    x = torch.randn(batch, *input_size, device=device)
    if hasattr(model, "check_input"):
        model.check_input(x)
    if warm_bn:
        warm_batchnorm(model, x[: min(batch, 8)])
    say = log or (lambda _msg: None)

    runs, setups, notes = {}, {}, {}
    for name in paths:
        say(f"building {name} ...")
        try:
            runs[name], setups[name] = build_path(name, model, x)
        except MissingDependency as e:
            notes[name] = str(e)
        except Exception as e:  # reported in the table, the other paths still run
            notes[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
    if "eager" not in runs:
        raise ValueError(f"the model does not run eagerly on {tuple(x.shape)}: {notes.get('eager')}")

    outputs = {}
    for name, run in runs.items():
        for _ in range(max(warmup, 1)):
            outputs[name] = run(x)
    times: dict[str, list[float]] = {n: [] for n in runs}
    order = list(runs)
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}")
        for name in order if r % 2 == 0 else reversed(order):
            times[name].append(timed(runs[name], x)[1])

    eager_s = statistics.median(times["eager"])
    rows = []
    for name in paths:
        if name not in runs:
            rows.append(
                BenchRow(name, float("nan"), float("nan"), float("nan"), float("nan"), 0.0, notes[name])
            )
            continue
        med = statistics.median(times[name])
        _, rel = output_error(outputs[name], outputs["eager"])
        note = "" if rel <= EXACT_RTOL else f"not exact (tolerance {EXACT_RTOL:.0e})"
        rows.append(BenchRow(name, 1e3 * med, batch / med, eager_s / med, rel, setups[name], note))
    return rows


def best_row(rows: list[BenchRow]) -> BenchRow:
    """The fastest path that is exact within tolerance (eager at worst)."""
    exact = [r for r in rows if r.ms == r.ms and not r.note]
    return min(exact, key=lambda r: r.ms)


def render_bench(rows: list[BenchRow], fmt: str = "table") -> str:
    from cnnzoo.analysis.formats import render_rows

    if fmt in ("json", "csv"):
        return render_rows([r.to_dict() for r in rows], list(rows[0].to_dict()), fmt)
    table = [
        {
            "path": r.path,
            "ms/batch": "-" if r.ms != r.ms else f"{r.ms:.2f}",
            "images/s": "-" if r.ms != r.ms else f"{r.images_per_s:,.1f}",
            "vs eager": "-" if r.ms != r.ms else f"{r.speedup:.2f}x",
            "max error": "-" if r.ms != r.ms else f"{r.max_rel_error:.1e}",
            "set-up (s)": "-" if r.ms != r.ms else f"{r.setup_s:.1f}",
            "note": r.note,
        }
        for r in rows
    ]
    return render_rows(table, list(table[0]), fmt)
