"""`cnnzoo VERB ...`: list, describe, profile and compare the zoo (more verbs join as their issues land).

Human-readable output by default, `--format json|csv` for scripts. Errors are one line on
stderr with exit code 2, never a traceback: the user made a mistake we can name.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (argparse prints the usage first, over several)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


# -- output helpers ---------------------------------------------------------------------------
def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    """`--threads N`, one spelling on every verb that computes (main() applies it)."""
    parser.add_argument(
        "--threads", type=int, metavar="N", help="torch threads (default: torch's, one per core)"
    )


def show_defaults(group: Any, defaults: Any, prefix: str = "") -> None:
    """Append "(default: PREFIX value)" to the help of a group's flags that do not say one.

    The flags default to None so that a recipe's value shows through; the help still says what
    a run gets when neither the flag nor the recipe sets it (the dataclass's default).
    """
    for action in group._group_actions:
        if "default" in (action.help or "") or not hasattr(defaults, action.dest):
            continue
        value = getattr(defaults, action.dest)
        if isinstance(value, tuple | list):
            value = ",".join(map(str, value)) if value else "none"
        elif value is None:
            value = "none"
        action.help = f"{action.help + ' ' if action.help else ''}(default: {prefix}{value})"


def check_output_file(
    path: str | os.PathLike, flag: str, *, overwrite: bool | None = False, make_folders: bool = False
) -> Path:
    """Refuse, before any work, an output file that cannot be written or would replace a file.

    `overwrite` None: the verb replaces its own output by design (no --overwrite flag). The folder
    must exist (or, with `make_folders`, its nearest existing parent) and take a new file (probed with a temporary file, removed at once: permission
    bits say nothing to root, and read-only mounts or sysfs refuse root too).
    """
    import tempfile

    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a folder; name a file")
    if path.exists() and overwrite is False:
        raise UsageError(f"{flag} {str(path)!r} already exists; pass --overwrite to replace it")
    folder = path.parent
    if make_folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(
            f"{flag} {str(path)!r}: the folder {str(folder)!r} {what}; create it or choose another"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".cnnzoo-probe-")
    except OSError as e:
        raise UsageError(
            f"{flag} {str(path)!r}: cannot write in {str(folder)!r} ({e.strerror}); choose another place"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Refuse, before any work, an output folder that is a file or cannot be created or written."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a file; name a folder")
    check_output_file(path / ".cnnzoo-probe", flag, overwrite=None, make_folders=True)
    return path


def _os_error_line(e: OSError) -> str:
    """One line for an operating-system error the user can act on (disk full, permissions, ...)."""
    import errno

    from cnnzoo.atomic import NotEnoughSpace

    if isinstance(e, NotEnoughSpace):
        return str(e)
    where = f" {e.filename!r}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"the disk is full (writing{where}); free some space or choose another place, then run again"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where} ({e.strerror}); choose another place or fix its permissions"
    return f"{e.strerror or e}{':' + where if where else ''}"


def _apply_threads(args: argparse.Namespace) -> None:
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


# -- verbs ------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from cnnzoo.registry import list_models, model_info, num_params

    names = list_models(args.pattern, family=args.family)
    if not names:
        if args.family and not list_models(family=args.family):
            families = sorted({model_info(n).family for n in list_models()})
            raise UsageError(f"no family {args.family!r}; families: {', '.join(families)}")
        raise UsageError(f"no model matches {args.pattern!r}; try `cnnzoo list` for all names")
    rows = []
    for n in names:
        info = model_info(n)
        params = num_params(n)  # from the table written from the models: no model is built
        rows.append(
            {
                "name": n,
                "family": info.family,
                "params": f"{params:,}" if args.format in ("table", "md") else params,
                "input": "x".join(map(str, info.input_size)),
                "torchvision": info.torchvision or "",
                "paper": info.paper,
            }
        )
    from cnnzoo.analysis.formats import render_rows

    print(render_rows(rows, ["name", "family", "params", "input", "torchvision", "paper"], args.format))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from cnnzoo.registry import model_facts, model_info

    info = model_info(args.name).to_dict()
    info.update(model_facts(args.name))  # params, num_features, feature_info: no model is built
    if args.format == "json":
        print(json.dumps(info, indent=2))
        return 0
    c, h, w = info["input_size"]
    lines = [
        f"{info['name']}: {info['description']}",
        f"  family        {info['family']}",
        f"  paper         {info['paper']} ({info['year']})",
        f"  input         {c}x{h}x{w} (smallest accepted: {info['min_input_size']}x{info['min_input_size']})",
        f"  classes       {info['num_classes']} (default head)",
        f"  parameters    {info['params']:,}",
        f"  torchvision   {info['torchvision'] or '-'}",
        "  stages        "
        + ", ".join(f"{f['module']} ({f['num_chs']} ch, /{f['reduction']})" for f in info["feature_info"]),
    ]
    print("\n".join(lines))
    return 0


def _model_arg(text: str) -> tuple[str, Any]:
    """KEY=VALUE of --model-arg; the value is JSON when it parses (32, 0.5, true), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--model-arg takes KEY=VALUE, e.g. act=relu, not {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _parse_input(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        size = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        size = ()
    if not size or any(v < 1 for v in size):
        raise UsageError(f"--input takes CxHxW, e.g. 3x224x224, not {text!r}")
    if len(size) == 4:  # NxCxHxW, as torchinfo users type it: the tables are per image
        if size[0] != 1:
            print(
                f"note: --input {text}: the figures are per image; a batch of {size[0]} multiplies "
                "memory and MACs by it",
                file=sys.stderr,
            )
        size = size[1:]
    return size


_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _user_model(spec: str, kwargs: dict[str, Any]) -> Any:
    """The nn.Module a `path/to/file.py:Name` or `package.module:name` names: a module itself, or
    a class or function called with the --model-arg options."""
    import importlib
    import importlib.util

    from torch import nn

    where, _, attr = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser()
            if not path.is_file():
                raise UsageError(f"{where!r} is not a Python file; summary takes FILE.py:NAME")
            module_spec = importlib.util.spec_from_file_location(f"cnnzoo_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        obj = getattr(module, attr)
        model = obj if isinstance(obj, nn.Module) else obj(**kwargs)
    except UsageError:
        raise
    except Exception as e:  # the user's own code: say where it failed, in one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"could not build a model from {spec!r}: {type(e).__name__}: {first}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec!r} gave a {type(model).__name__}, not a torch.nn.Module")
    return model


def _summary_subject(args: argparse.Namespace) -> tuple[Any, tuple[int, ...] | None, dict[str, Any]]:
    """(a registered name or a module, the input size, model options) for `summary`: a zoo name,
    a run folder or weights file, or the user's own model (FILE.py:NAME, package.module:NAME)."""
    kwargs = dict(args.model_arg or [])
    size = _parse_input(args.input)
    source = Path(args.name).expanduser()
    if source.is_dir() or (source.is_file() and source.suffix in _WEIGHT_SUFFIXES):
        if kwargs:
            raise UsageError("--model-arg builds a zoo model; a run's model is built as it was trained")
        from cnnzoo.train.evaluate import default_input_size, load_model

        loaded = load_model(source, model=args.model)
        run_size = loaded.run.get("input_size")
        return loaded.model, size or (tuple(run_size) if run_size else default_input_size(loaded.model)), {}
    from cnnzoo.registry import is_model

    if ":" in args.name and not is_model(args.name):
        return _user_model(args.name, kwargs), size, {}
    if size is None and isinstance(kwargs.get("img_size"), int) and is_model(args.name):
        from cnnzoo.registry import model_info

        # A net built for another size (LeNet-5's img_size) is profiled at that size.
        size = (model_info(args.name).input_size[0], kwargs["img_size"], kwargs["img_size"])
    return args.name, size, kwargs


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnzoo.analysis import profile
    from cnnzoo.analysis.formats import render_profile

    if args.depth is not None and args.depth < 1:
        raise UsageError(f"--depth must be >= 1, got {args.depth}")
    subject, size, kwargs = _summary_subject(args)
    p = profile(subject, size, **kwargs)
    print(render_profile(p, args.format, depth=args.depth, all_rows=args.all))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnzoo.analysis.compare import compare, plot_accuracy_vs_macs
    from cnnzoo.analysis.formats import render_rows
    from cnnzoo.registry import model_info

    for name in args.names:
        model_info(name)  # an unknown name fails before any work
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise UsageError("--plot needs matplotlib: pip install 'cnnzoo[plot]'") from e
        check_output_file(args.plot, "--plot", overwrite=args.overwrite)
    rows = compare(args.names, _parse_input(args.input))
    if args.format in ("json", "csv"):
        print(render_rows(rows, list(rows[0]), args.format))
    else:
        table = [
            {
                "name": r["name"],
                "input": r["input"],
                "params (M)": f"{r['params'] / 1e6:.2f}",
                "MACs (G)": f"{r['macs'] / 1e9:.3f}",
                "memory (MiB)": f"{r['memory_bytes'] / 2**20:.1f}",
                "RF": "" if r["receptive_field"] is None else r["receptive_field"],
                "top-1 (%)": "" if r["top1"] is None else f"{r['top1']:.2f}",
                # Errors, to read beside the competition's: one model, one crop.
                "top-5 err (%)": "" if r["top5"] is None else f"{100 - r['top5']:.2f}",
                "ILSVRC top-5 err (%)": "" if r["ilsvrc_top5_error"] is None else r["ilsvrc_top5_error"],
            }
            for r in rows
        ]
        print(render_rows(table, list(table[0]), args.format))
    if args.plot:
        try:
            path = plot_accuracy_vs_macs(rows, args.plot)
        except ImportError as e:
            raise UsageError(str(e)) from e
        print(f"wrote {path}", file=sys.stderr)
        unknown = [r["name"] for r in rows if r["top1"] is None]
        if unknown and len(unknown) < len(rows):
            print(f"no published ImageNet top-1, named under the plot: {', '.join(unknown)}", file=sys.stderr)
        elif unknown:
            print(
                "no published ImageNet top-1 for any of them: plotted parameters against MACs",
                file=sys.stderr,
            )
    return 0


# -- wiring -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from cnnzoo import __version__

    parser = _Parser(
        prog="cnnzoo",
        description="The classic CNNs of the lectures: build, inspect, compare.",
    )
    parser.add_argument("--version", action="version", version=f"cnnzoo {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    p = sub.add_parser("list", help="list registered models (name, family, params, paper)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*'")
    p.add_argument("--family", help="only this family, e.g. resnet, vgg")
    p.add_argument("--format", choices=["table", "md", "json", "csv"], default="table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="what cnnzoo knows about one model")
    p.add_argument("name", help="a model name from `cnnzoo list`")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "summary",
        help="the lecture's per-layer table: shapes, memory, params, MACs, receptive field",
        description="One row per layer in execution order, the lecture's columns, with totals. "
        "Elementwise rows (activations, BatchNorm, residual adds) are hidden unless --all.",
    )
    p.add_argument(
        "name",
        metavar="MODEL",
        help="a model name from `cnnzoo list`, a run folder or weights file, or your own model as "
        "path/to/file.py:Name or package.module:name (a module, or a class/function building one)",
    )
    p.add_argument(
        "--input", metavar="CxHxW", help="input size, e.g. 3x224x224 or 1x3x224x224 (default: the model's)"
    )
    p.add_argument(
        "--model-arg",
        action="append",
        type=_model_arg,
        metavar="KEY=VALUE",
        help="builder option, e.g. img_size=32 or width_mult=0.5 (repeatable)",
    )
    p.add_argument("--model", help="architecture, for weights files that do not name it")
    p.add_argument("--format", choices=["table", "md", "csv", "json"], default="table")
    p.add_argument("--depth", type=int, metavar="N", help="merge rows into modules N levels deep")
    p.add_argument("--all", action="store_true", help="also show elementwise rows")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "compare",
        help="models side by side: params, MACs, memory, receptive field, top-1",
        description="Top-1 and top-5 err are torchvision's published ImageNet numbers for its "
        "single-model weights (one 224 crop; blank without a torchvision twin). ILSVRC top-5 err "
        "is the family's competition entry (2012-2015): ensembles tested on many crops, so lower.",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="model names from `cnnzoo list`")
    p.add_argument("--input", metavar="CxHxW", help="one input size for all (default: each model's)")
    p.add_argument("--format", choices=["table", "md", "csv", "json"], default="table")
    p.add_argument("--plot", metavar="OUT.png", help="also plot top-1 against MACs (needs matplotlib)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.set_defaults(func=cmd_compare)
    # Verbs of the other packages register themselves.
    from cnnzoo.cli import (
        count_cmd,
        data_cmd,
        deploy_cmd,
        experiment_cmd,
        explore_cmd,
        train_cmd,
        visualize_cmd,
    )

    explore_cmd.add_parser(sub)
    data_cmd.add_parser(sub)
    train_cmd.add_parsers(sub)
    deploy_cmd.add_parsers(sub)
    count_cmd.add_parser(sub)
    experiment_cmd.add_parsers(sub)
    visualize_cmd.add_parser(sub)
    return parser


def _out_of_memory_line(args: argparse.Namespace) -> str:
    batch = getattr(args, "batch_size", None) or getattr(args, "batch", None)
    hint = f"lower --batch-size (it is {batch})" if batch else "lower the batch size"
    return f"cnnzoo: error: out of memory; {hint} or use a smaller model or input"


def main(argv: Sequence[str] | None = None) -> int:
    # Line by line, also when redirected to a file or a pipe (a cluster job's log, `| tee`).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from cnnzoo.registry import UnknownModelError
    from cnnzoo.weights import CheckpointError

    try:
        _apply_threads(args)
        return func(args)
    except (UsageError, UnknownModelError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"cnnzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnzoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cnnzoo list | head -1`): stop quietly, as Unix tools do. Python
        # would report the pipe again when it flushes stdout at exit, so point stdout at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status a shell reports for such a tool
    except MemoryError:
        print(_out_of_memory_line(args), file=sys.stderr)
        return 2
    except OSError as e:
        print(f"cnnzoo: error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if "out of memory" not in str(e).lower():
            raise
        print(_out_of_memory_line(args), file=sys.stderr)
        return 2
    except Exception as e:
        # safetensors reports a failed write (a full disk, a read-only folder) as its own error
        # type, not as an OSError.
        if type(e).__name__ != "SafetensorError" or "I/O error" not in str(e):
            raise
        print(
            f"cnnzoo: error: writing failed ({e}); free some space or choose another place", file=sys.stderr
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
