"""`cnnzoo explore [NAMES...] --out explorer.html`: the architecture explorer page (`analysis/explorer.py`)."""

from __future__ import annotations

import argparse
import sys

from cnnzoo.cli.main import UsageError, add_threads_flag

__all__ = ["add_parser", "cmd_explore"]

_GLOB = set("*?[")


def _resolve_names(patterns: list[str]) -> list[str] | None:
    """The models to embed: None for the whole zoo; a pattern like 'resnet*' expands as in `cnnzoo list`."""
    from cnnzoo.registry import list_models, model_info

    if not patterns:
        return None
    names: list[str] = []
    for text in patterns:
        if _GLOB & set(text):
            found = list_models(text)
            if not found:
                raise UsageError(f"no model matches {text!r}; try `cnnzoo list` for all names")
            names += found
        else:
            model_info(text)  # an unknown name: one line with the closest names
            names.append(text)
    return list(dict.fromkeys(names))


def cmd_explore(args: argparse.Namespace) -> int:
    from cnnzoo.analysis.explorer import write_explorer
    from cnnzoo.train.progress import ProgressBar

    names = _resolve_names(args.names)
    bar: ProgressBar | None = None

    def progress(done: int, total: int, name: str) -> None:
        nonlocal bar
        if bar is None:
            bar = ProgressBar(total, desc="profiling")
        bar.update(1)

    try:
        path, facts = write_explorer(args.out, names, overwrite=args.overwrite, progress=progress)
    except (FileExistsError, IsADirectoryError) as e:
        raise UsageError(str(e)) from e
    finally:
        if bar is not None:
            bar.close()
    print(
        f"wrote {path}: {facts['models']} models, {facts['bytes'] / 1024:,.0f} KB, "
        f"profiled in {facts['seconds']:.1f} s; open it in a browser (it needs no network)",
        file=sys.stderr,
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `cnnzoo explore` on the CLI's subparsers object."""
    p = subparsers.add_parser(
        "explore",
        help="write the architecture explorer: one HTML page with per-layer tables and charts",
        description="One self-contained HTML page (no network, no external files): pick a model to see "
        "the per-layer table `cnnzoo summary` prints, bars of parameters, MACs and activation memory per "
        "layer, the receptive field's growth with depth, and a second model side by side. Every model is "
        "profiled at its default input size on the meta device (no weights are allocated).",
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="models to include, or shell-style patterns like 'resnet*' (default: every registered model)",
    )
    p.add_argument("--out", default="explorer.html", help="the page to write (default: explorer.html)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_threads_flag(p)
    p.set_defaults(func=cmd_explore)
