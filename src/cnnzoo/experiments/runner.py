"""One runner for every experiment: resolve a budget, run, time it, write the report.

An experiment module defines `EXPERIMENT = Experiment(...)`: its name, the lecture's claim, one
frozen settings dataclass per budget ("tiny" for the tests, "small" for a few minutes, "full"
for the committed reports, "paper" for the papers' own schedules, meant for a GPU) and
`run(settings, ctx) -> ExperimentResult`. The runner does everything they share, so each
module is only the experiment itself: settings changed from the command line (`--set
key=value`, parsed to the field's type by `parse_overrides`), the verdict's wording at small
budgets (`cnnzoo.experiments.report`), the command that repeats the run, timing, the report.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import os
import platform
import shlex
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cnnzoo.experiments.report import (
    INDICATIVE_BUDGETS,
    REPORT_FILE,
    RESULT_FILE,
    ExperimentResult,
    write_result,
)

__all__ = [
    "BUDGETS",
    "EXPERIMENTS",
    "INDICATIVE_BUDGETS",
    "Context",
    "Experiment",
    "default_out",
    "format_setting",
    "get_experiment",
    "list_experiments",
    "machine_info",
    "parse_overrides",
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
    "gradflow",
    "lesion",
    "batchnorm",
    "preact",
    "ensemble",
    "finetune",
)
# tiny: seconds (tests); small: minutes on 2 CPU cores; full: the committed reports; paper: the
# papers' schedules (hours on a GPU). tiny and small give indicative verdicts only (report.py).
BUDGETS = ("tiny", "small", "full", "paper")


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
    # Raises when a file the run needs is missing (FileNotFoundError naming it and where it goes);
    # called before anything is logged, written or trained.
    check: Callable[[Any, Context], None] | None = None


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
    name: str,
    budget: str,
    out: Path,
    seed: int,
    threads: int | None,
    data_root: str | None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """The `cnnzoo experiment` call that repeats this run (settings changed as `--set key=value`)."""
    parts = ["cnnzoo", "experiment", name, "--budget", budget, "--out", str(out)]
    if seed:
        parts += ["--seed", str(seed)]
    if threads:
        parts += ["--threads", str(threads)]
    if data_root:
        parts += ["--data-root", data_root]
    for key, value in (overrides or {}).items():
        parts += ["--set", f"{key}={format_setting(value)}"]
    return shlex.join(parts)


# -- settings from the command line -------------------------------------------------------------
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "none"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _example(tp: Any) -> str:
    """A value of type `tp` as `--set` takes it, for the error message."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _example(next(a for a in args if a is not type(None)))
    if origin is tuple:
        if args and args[-1] is not Ellipsis:  # fixed length
            return ",".join(_example(a) for a in args)
        return ",".join([_example(args[0] if args else str)] * 2)
    if origin is dict or tp is dict:
        return "'{\"key\": 1}'"
    return {bool: "true", int: "12", float: "0.1", str: "word"}.get(tp, "VALUE")


def _parse(text: str, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _parse(text, arg)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        items = [t.strip() for t in text.split(",")] if text.strip() else []
        if args and args[-1] is not Ellipsis:  # a fixed length, e.g. tuple[int, int, int]
            if len(items) != len(args):
                raise ValueError(f"needs {len(args)} comma-separated values, got {len(items)}")
            return tuple(_parse(t, a) for t, a in zip(items, args, strict=True))
        inner = args[0] if args else str
        return tuple(_parse(t, inner) for t in items)
    if origin is dict or tp is dict:
        value = json.loads(text)  # json.JSONDecodeError is a ValueError
        if not isinstance(value, dict):
            raise ValueError("needs a JSON object")
        return value
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"not one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}")
    if tp is int:
        return int(text.strip().replace("_", ""))
    if tp is float:
        return float(text)
    if tp is str or tp is Any:
        return text
    raise ValueError(f"settings of type {_type_name(tp)} cannot be set from the command line")


def format_setting(value: Any) -> str:
    """A setting's value as `--set` takes it back: tuples comma-separated, dicts as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return ",".join(format_setting(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _unknown_setting(exp: Experiment, names: list[str], settings: Any) -> ValueError:
    fields = sorted(f.name for f in dataclasses.fields(settings))
    return ValueError(f"{exp.name} has no setting {', '.join(names)}; its settings are {', '.join(fields)}")


def parse_overrides(exp: Experiment, budget: str, pairs: list[str]) -> dict[str, Any]:
    """`["epochs=12", "models=resnet20,resnet56"]` -> {"epochs": 12, "models": ("resnet20", "resnet56")},
    each value parsed to the type of its field in the experiment's settings dataclass."""
    settings = budget_settings(exp, budget)
    hints = typing.get_type_hints(type(settings))
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set takes key=value, e.g. --set epochs=12; got {pair!r}")
        if key not in hints or key not in {f.name for f in dataclasses.fields(settings)}:
            raise _unknown_setting(exp, [key], settings)
        tp = hints[key]
        try:
            parsed[key] = _parse(text, tp)
        except ValueError as e:
            raise ValueError(
                f"--set {key}={text}: {exp.name}'s setting {key} is {_type_name(tp)} ({e}); "
                f"e.g. --set {key}={_example(tp)}"
            ) from None
    return parsed


def budget_settings(exp: Experiment, budget: str) -> Any:
    """The experiment's settings at `budget`, or a ValueError naming the budgets it has."""
    if budget not in exp.budgets:
        raise ValueError(f"{exp.name} has no budget {budget!r}; choose one of {', '.join(exp.budgets)}")
    return exp.budgets[budget]


def resolve_settings(exp: Experiment, budget: str, overrides: dict[str, Any] | None) -> Any:
    settings = budget_settings(exp, budget)
    if overrides:
        names = {f.name for f in dataclasses.fields(settings)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise _unknown_setting(exp, unknown, settings)
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
            efficiency, nas, finetune).
        budget: "tiny" (seconds, for tests), "small" (minutes on 2 CPU cores), "full" (what the
            committed reports under reports/ were made with) or "paper" (the papers' schedules,
            for a GPU). At tiny and small the verdict is "indicative only: budget too small".
        out: the report's folder; it also receives the PNG plots, result.json and the training
            runs (runs/, weights and metrics).
        seed: fixes subsets, initialisations and data order; the report lists what it fixed.
        threads: torch intra-op threads for the run (None leaves torch's default).
        data_root: dataset cache root (default $CNNZOO_DATA or ~/.cache/cnnzoo).
        overrides: settings to change from the budget's, e.g. ``{"epochs": 2}`` (the CLI's
            ``--set epochs=2``, see `parse_overrides`); listed in the report and its command.
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
    if exp.check is not None:
        exp.check(settings, ctx)
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
            "command": command_line(name, budget, out_path, seed, threads, data_root, overrides),
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
    say(f"{name}: {result.headline} ({wall / 60:.1f} min); report in {path}")
    return result
