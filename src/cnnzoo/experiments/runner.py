"""One runner for every experiment: resolve a budget, run, time it, write the report.

An experiment module defines `EXPERIMENT = Experiment(...)`: its name, the lecture's claim, one
frozen settings dataclass per budget ("tiny" for the tests, "small" for a few minutes, "full"
for the committed reports) and `run(settings, ctx) -> ExperimentResult`. The runner does
everything they share, so each module is only the experiment itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cnnzoo.experiments.report import REPORT_FILE, RESULT_FILE, ExperimentResult, write_result

__all__ = [
    "BUDGETS",
    "EXPERIMENTS",
    "Context",
    "Experiment",
    "default_out",
    "get_experiment",
    "list_experiments",
    "machine_info",
    "run_experiment",
]

# In the order the lectures make the claims; `cnnzoo report` keeps it.
EXPERIMENTS = (
    "degradation",
    "transfer",
    "activations",
    "equivariance",
    "efficiency",
    "nas",
    "preact",
    "ensemble",
)
BUDGETS = ("tiny", "small", "full")


def default_out(name: str) -> Path:
    """Where a run's report goes unless told: runs/experiments/NAME, beside the training runs.

    The committed reports under reports/ change only when `--out` names them.
    """
    return Path("runs") / "experiments" / name


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    claim: str
    source: str
    budgets: dict[str, Any]  # budget name -> frozen settings dataclass
    run: Callable[[Any, Context], ExperimentResult]
    summary: str = ""  # one line for `cnnzoo experiment --list`


@dataclass
class Context:
    """What a run needs besides its settings: where to write, the seed, the data, a logger."""

    out: Path
    seed: int = 0
    data_root: str | None = None
    log: Callable[[str], None] = print
    budget: str = "small"
    seeds: list[str] = field(default_factory=list)  # what each seed fixed, for the report

    def runs_dir(self, name: str) -> Path:
        """Folder of one training run inside the experiment's output (weights, metrics)."""
        return self.out / "runs" / name


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, EXPERIMENTS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown experiment {name!r}{hint} Choose one of {', '.join(EXPERIMENTS)}")
    module = importlib.import_module(f"cnnzoo.experiments.{name}")
    return module.EXPERIMENT


def list_experiments() -> list[Experiment]:
    return [get_experiment(n) for n in EXPERIMENTS]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and versions, for the report's "Machine" line."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def command_line(
    name: str, budget: str, out: Path, seed: int, threads: int | None, data_root: str | None
) -> str:
    """The `cnnzoo experiment` call that repeats this run."""
    parts = ["cnnzoo", "experiment", name, "--budget", budget, "--out", str(out)]
    if seed:
        parts += ["--seed", str(seed)]
    if threads:
        parts += ["--threads", str(threads)]
    if data_root:
        parts += ["--data-root", data_root]
    return shlex.join(parts)


def resolve_settings(exp: Experiment, budget: str, overrides: dict[str, Any] | None) -> Any:
    if budget not in exp.budgets:
        raise ValueError(f"{exp.name} has no budget {budget!r}; choose one of {', '.join(exp.budgets)}")
    settings = exp.budgets[budget]
    if overrides:
        names = {f.name for f in dataclasses.fields(settings)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(
                f"{exp.name} has no setting {', '.join(unknown)}; its settings are {', '.join(sorted(names))}"
            )
        settings = dataclasses.replace(settings, **overrides)
    return settings


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def run_experiment(
    name: str,
    budget: str = "small",
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    threads: int | None = None,
    data_root: str | None = None,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> ExperimentResult:
    """Run experiment `name` at `budget` and write `out/report.md` (default out: runs/experiments/NAME).

    Args:
        name: one of `EXPERIMENTS` (degradation, transfer, activations, equivariance,
            efficiency, nas).
        budget: "tiny" (seconds, for tests), "small" (minutes on 2 CPU cores) or "full" (what the
            committed reports under reports/ were made with).
        out: the report's folder; it also receives the PNG plots, result.json and the training
            runs (runs/, weights and metrics).
        seed: fixes subsets, initialisations and data order; the report lists what it fixed.
        threads: torch intra-op threads for the run (None leaves torch's default).
        data_root: dataset cache root (default $CNNZOO_DATA or ~/.cache/cnnzoo).
        overrides: settings to change from the budget's, e.g. ``{"epochs": 2}``; listed in the report.
        log: receives progress lines (default: print to stderr).
        overwrite: replace the report already in `out`; without it such a folder is refused
            before anything runs.
    """
    exp = get_experiment(name)
    settings = resolve_settings(exp, budget, overrides)
    out_path = Path(out) if out is not None else default_out(name)
    if out_path.exists() and not out_path.is_dir():
        raise ValueError(f"--out {str(out_path)!r} is a file; give a folder for the report")
    if not overwrite and any((out_path / f).exists() for f in (REPORT_FILE, RESULT_FILE)):
        raise ValueError(f"{str(out_path)!r} already holds a report; pass --overwrite to replace it")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    say = log if log is not None else (lambda text: print(text, file=sys.stderr, flush=True))
    ctx = Context(out=out_path, seed=seed, data_root=data_root, log=say, budget=budget)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        machine = machine_info()
        say(f"{name}: budget {budget}, writing to {out_path}")
        t0 = time.perf_counter()
        result = exp.run(settings, ctx)
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old_threads)
    result.meta.update(
        {
            "command": command_line(name, budget, out_path, seed, threads, data_root),
            "budget": budget,
            "settings": _jsonable(dataclasses.asdict(settings)),
            "overrides": _jsonable(overrides or {}),
            "seed": seed,
            "seeds": "; ".join(ctx.seeds) or f"{seed}",
            "machine": machine,
            "wall_seconds": round(wall, 1),
            "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
    )
    path = write_result(result, out_path)
    say(f"{name}: the claim {result.verdict} ({wall / 60:.1f} min); report in {path}")
    return result
