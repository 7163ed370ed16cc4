"""`cnnzoo report RUN [RUN...]`: the report of a training or counting run, or the comparison of
several (the experiments' page, `cnnzoo report --reports DIR`, stays in experiment_cmd)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnzoo.cli.main import UsageError, add_threads_flag, check_output_dir

__all__ = ["add_run_arguments", "cmd_run_report"]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The positional RUNs and the flags that only reports of runs take."""
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="run folders of `cnnzoo train` or `cnnzoo count train`: one gives its report, several a "
        "comparison (without RUN: the experiments' page from --reports)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a report the output folder already holds"
    )
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="where the runs' test data is (default: the run's own setting, else $CNNZOO_DATA or "
        "~/.cache/cnnzoo; for counting runs the ShanghaiTech folder)",
    )
    parser.add_argument("--device", default="cpu", help="for the test-set predictions (default cpu)")
    parser.add_argument("--batch-size", type=int, default=256, help="test images per batch (default 256)")
    add_threads_flag(parser)


def cmd_run_report(args: argparse.Namespace) -> int:
    from cnnzoo.train.plots import have_matplotlib
    from cnnzoo.train.run_report import REPORT_DIR, write_run_report

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not have_matplotlib():  # the curves and matrices are the report
        raise UsageError("a run's report draws its plots with matplotlib: pip install 'cnnzoo[plot]'")
    if args.out is None and len(args.runs) > 1:
        raise UsageError("several runs: name the comparison's folder with --out DIR")
    if args.out is not None and Path(args.out).suffix.lower() in (".html", ".htm", ".md"):
        raise UsageError(
            f"--out names a folder for a run's report (report.md, report.html), not {args.out!r}"
        )
    out = Path(args.out) if args.out is not None else Path(args.runs[0]) / REPORT_DIR
    if Path(args.runs[0]).is_dir() or args.out is not None:
        check_output_dir(out, "--out")
    data = write_run_report(
        args.runs,
        args.out,
        overwrite=args.overwrite,
        data_root=args.data_root,
        device=args.device,
        batch_size=args.batch_size,
    )
    folder = Path(data["out"])
    what = "report" if len(args.runs) == 1 else f"comparison of {len(args.runs)} runs"
    print(f"wrote {folder / 'report.html'} and {folder / 'report.md'} ({what})")
    for line in data["missing"]:
        print(f"note: not shown: {line}")
    return 0
