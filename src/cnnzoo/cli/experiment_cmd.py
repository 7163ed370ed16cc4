"""`cnnzoo experiment NAME` and `cnnzoo report`: reproduce a lecture's claim, collect the reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnzoo.cli.main import UsageError

__all__ = ["add_parsers"]


def cmd_experiment(args: argparse.Namespace) -> int:
    from cnnzoo.experiments import list_experiments, run_experiment
    from cnnzoo.experiments.runner import default_out

    if args.list:
        from cnnzoo.analysis.formats import render_rows

        rows = [
            {"name": e.name, "budgets": ", ".join(e.budgets), "what it runs": e.summary, "claim": e.title}
            for e in list_experiments()
        ]
        print(render_rows(rows, ["name", "budgets", "what it runs"], args.format))
        return 0
    if args.name is None:
        raise UsageError(
            "name an experiment, e.g. `cnnzoo experiment degradation`; `cnnzoo experiment --list` shows them all"
        )
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    from cnnzoo.data import DataError
    from cnnzoo.experiments.runner import get_experiment, parse_overrides

    # Parsed before anything runs: a misspelt setting costs no training.
    overrides = parse_overrides(get_experiment(args.name), args.budget, args.set or [])
    try:
        result = run_experiment(
            args.name,
            args.budget,
            args.out,
            seed=args.seed,
            threads=args.threads,
            data_root=args.data_root,
            overrides=overrides,
            overwrite=args.overwrite,
        )
    except ImportError as e:  # matplotlib missing: the plots are part of the report
        raise UsageError(str(e)) from e
    except DataError as e:
        raise UsageError(str(e)) from e
    out = Path(args.out) if args.out else default_out(args.name)
    lines = [f"{result.title}: {result.headline}"]
    lines += [f"  [{result.label(f)}] {f.claim}: {f.evidence}" for f in result.findings]
    lines.append(
        f"report: {out / 'report.md'} ({result.meta['wall_seconds'] / 60:.1f} min); "
        f"`cnnzoo report --reports {out.parent}` collects all"
    )
    print("\n".join(lines))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cnnzoo.experiments.html import collect_results, write_html_report

    if args.runs:  # training and counting runs: their own report (cli/report_cmd.py)
        from cnnzoo.cli.report_cmd import cmd_run_report

        return cmd_run_report(args)
    out = args.out or f"{args.reports.rstrip('/')}/index.html"
    path = write_html_report(args.reports, out)
    n = len(collect_results(args.reports))
    print(f"wrote {path} ({n} experiment{'s' if n != 1 else ''})")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register `cnnzoo experiment` and `cnnzoo report` on the main parser's subparsers."""
    from cnnzoo.experiments import BUDGETS, EXPERIMENTS

    p = subparsers.add_parser(
        "experiment",
        help="reproduce a lecture's claim on real data and write a report (report.md + plots)",
        description="Runs one experiment and writes OUT/report.md (the claim, whether it held, the exact "
        "command, seeds, machine, wall time, tables) with its PNG plots and result.json. Experiments: "
        + ", ".join(EXPERIMENTS)
        + ". Budgets: tiny (seconds, a smoke test), small (a few minutes on 2 CPU cores), full (what the "
        "reports under reports/ were made with), paper (the papers' own schedules, for a GPU). At tiny "
        "and small the verdict reads 'indicative only: budget too small'. Any setting of the budget "
        "can be changed with --set KEY=VALUE (`cnnzoo experiment --list` names the budgets; a wrong "
        "key lists the settings).",
    )
    # No argparse `choices`: an unknown name is then one line with the closest names (run_experiment).
    p.add_argument("name", nargs="?", metavar="NAME", help="one of: " + ", ".join(EXPERIMENTS))
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--budget", choices=BUDGETS, default="small", help="default: small")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change one of the budget's settings, e.g. --set epochs=12 or --set models=resnet20,resnet56 "
        "(repeatable; tuples comma-separated, booleans true/false)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="report folder (default: runs/experiments/NAME; reports/NAME is the committed one)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the report already in the folder")
    p.add_argument(
        "--seed", type=int, default=0, help="fixes subsets, initialisations, data order (default 0)"
    )
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's)")
    p.add_argument(
        "--data-root", metavar="DIR", help="dataset cache (default: $CNNZOO_DATA or ~/.cache/cnnzoo)"
    )
    p.add_argument("--format", choices=["table", "md", "json", "csv"], default="table", help="for --list")
    p.set_defaults(func=cmd_experiment)

    r = subparsers.add_parser(
        "report",
        help="report a training or counting run (or compare several); without RUN, collect the experiments",
        description="With RUN folders: writes report.md and a self-contained report.html (the command, "
        "settings, curves, final table, confusion matrix or count scatter and density maps; with "
        "several runs the comparison table and their curves overlaid) into --out DIR (default "
        "RUN/report for one run). Without RUN: reads REPORTS/*/result.json and writes one HTML file "
        "with every claim, verdict, table and plot. Images are inlined, no external assets.",
    )
    from cnnzoo.cli.report_cmd import add_run_arguments

    add_run_arguments(r)
    r.add_argument(
        "--reports", default="reports", metavar="DIR", help="folder of experiment reports (default: reports)"
    )
    r.add_argument(
        "--out",
        metavar="FILE_or_DIR",
        help="experiments: the page (default: REPORTS/index.html); runs: the report's folder "
        "(default RUN/report; needed for several runs)",
    )
    r.set_defaults(func=cmd_report)
