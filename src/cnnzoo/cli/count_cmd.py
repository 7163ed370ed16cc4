"""`cnnzoo count {synth,train,eval,predict}`: crowd counting on ShanghaiTech.

`add_parser(subparsers)` registers the `count` verb and its sub-verbs on the main parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cnnzoo.cli.main import UsageError, add_threads_flag, check_output_dir, check_output_file, show_defaults
from cnnzoo.words import plural

__all__ = ["add_parser"]


def _size(text: str) -> tuple[int, int] | str:
    if text.lower() == "none":
        return "none"
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes HxW, e.g. 576x768 (or none), not {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def _range(text: str) -> tuple[float, float] | str:
    if text.lower() == "none":
        return "none"
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes LO,HI, e.g. 0.8,1.2 (or none), not {text!r}") from None
    return lo, hi


# -- synth ---------------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    from cnnzoo.counting.synth import write_synthetic

    parts = tuple(p.strip().upper() for p in args.parts.split(",") if p.strip())
    size = args.size if args.size != "none" else None
    if size is None:
        raise UsageError("--size needs HxW, e.g. 192x256")
    written = write_synthetic(
        args.dir,
        parts=parts,
        train=args.train,
        test=args.test,
        size=size,
        max_people=args.max_people,
        seed=args.seed,
        layout=args.layout,
    )
    if args.format == "json":
        print(json.dumps(written, indent=2))
        return 0
    for part, info in written["parts"].items():
        print(
            f"Part {part}: {info['train_data']} train + {info['test_data']} test images in {info['folder']}"
        )
    print(
        # From scratch (no ImageNet trunk offline) a counter needs a larger lr than the published
        # fine-tuning recipes' 1e-5; measured on 2 CPU cores in docs/counting.md.
        f"train with: cnnzoo count train --root {args.dir} --part {parts[0]} --model resnet18_counter "
        "--epochs 20 --lr 1e-3 --batch-size 4 --threads 1"
    )
    return 0


# -- train ---------------------------------------------------------------------------------------
_OVERRIDES = (
    "part",
    "model",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "schedule",
    "warmup",
    "backbone_lr_mult",
    "crop",
    "scale",
    "density",
    "sigma",
    "density_scale",
    "val_fraction",
    "pretrained",
    "seed",
    "device",
    "out",
    "overwrite",
    "threads",
    "amp",
    "channels_last",
    "compile",
    "progress",
    "cache_dir",
    "eval_every",
    "checkpoint_every",
)


def _count_config(args: argparse.Namespace) -> Any:
    from cnnzoo.counting.train import CountConfig, resolve_count_config

    overrides = {k: getattr(args, k) for k in _OVERRIDES}
    if args.no_flip:
        overrides["flip"] = False
    if args.resume is not None:
        if args.overwrite:
            raise UsageError("--resume continues a run and --overwrite replaces it; pass one of them")
        run_dir = Path(args.resume or args.out or "")
        saved_path = run_dir / "config.json"
        if not str(args.resume or args.out or "") or not saved_path.is_file():
            raise UsageError(f"--resume: {str(run_dir)!r} holds no counting run (no config.json)")
        base = CountConfig.from_dict(json.loads(saved_path.read_text())).to_dict()
        base.update({k: v for k, v in overrides.items() if v is not None})
        base.update(out=str(run_dir), resume=True, overwrite=False)
        return CountConfig.from_dict(base)
    if not args.root:
        raise UsageError(
            "which dataset? pass --root DIR (the folder holding part_A_final/ and part_B_final/)"
        )
    return resolve_count_config(args.recipe, root=args.root, **overrides)


def cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch

    from cnnzoo.counting.train import COUNT_RECIPES, train_counter
    from cnnzoo.train import TrainingError

    if args.recipes:
        for name, values in COUNT_RECIPES.items():
            print(f"{name}: {json.dumps(values)}")
        return 0
    config = _count_config(args)
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        final = train_counter(config)
    except TrainingError as e:
        raise UsageError(str(e)) from e
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports for everyone
    if args.format == "json":
        print(json.dumps(final, indent=2))
    else:
        print(
            f"{final['model']} on ShanghaiTech Part {final['part']}: test MAE {final['test_mae']:.2f}, "
            f"RMSE {final['test_rmse']:.2f} ({plural(final['test_images'], 'image')}) with the epoch-{final['best_epoch']} "
            f"model chosen on validation (val MAE {final['val_mae']:.2f}); predicting the training "
            f"mean count gives test MAE {final['mean_baseline_test_mae']:.2f}; run in {final['out']}"
        )
    return 0


# -- eval ----------------------------------------------------------------------------------------
def _run_config(checkpoint: Path) -> dict[str, Any]:
    for folder in (checkpoint, checkpoint.parent, checkpoint.parent.parent.parent):
        cfg = folder / "config.json"
        if cfg.is_file():
            try:
                return json.loads(cfg.read_text())
            except ValueError:
                return {}
    return {}


def cmd_eval(args: argparse.Namespace) -> int:
    from cnnzoo.counting.models import load_counter
    from cnnzoo.counting.shanghaitech import ShanghaiTech
    from cnnzoo.counting.train import evaluate_counter, write_rows_csv
    from cnnzoo.train.plots import have_matplotlib

    model, info = load_counter(args.checkpoint, device=args.device)
    ckpt = Path(args.checkpoint)
    run = _run_config(ckpt)
    root = args.root or run.get("root")
    part = args.part or info.get("part") or run.get("part")
    if not root or not part:
        raise UsageError("which dataset? pass --root DIR and --part A|B (the run does not say)")
    ds = ShanghaiTech(root, part, args.split, val_fraction=run.get("val_fraction", 0.1))
    result = evaluate_counter(model, ds, device=args.device, progress=args.progress, desc=args.split)
    base = ckpt if ckpt.is_dir() else ckpt.parent
    csv_path = Path(args.csv) if args.csv else base / f"eval-{part}-{args.split}.csv"
    write_rows_csv(result["rows"], csv_path)
    summary = {
        "checkpoint": info["path"],
        "model": info.get("name"),
        "part": part,
        "split": args.split,
        "images": result["images"],
        "mae": result["mae"],
        "rmse": result["rmse"],
        "csv": str(csv_path),
    }
    scatter = (
        args.scatter if args.scatter is not None else str(base / f"eval-{part}-{args.split}-scatter.png")
    )
    if scatter and have_matplotlib():
        from cnnzoo.counting.plots import plot_scatter

        title = f"{info.get('name')}, Part {part} {args.split}: MAE {result['mae']:.2f}, RMSE {result['rmse']:.2f}"
        summary["scatter"] = str(plot_scatter(result["rows"], scatter, title=title))
    if args.format == "json":
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{summary['model']} on ShanghaiTech Part {part} {args.split} ({plural(result['images'], 'image')}): "
        f"MAE {result['mae']:.2f}, RMSE {result['rmse']:.2f}"
    )
    print(
        f"wrote {csv_path}" + (f" and {summary['scatter']}" if "scatter" in summary else ""), file=sys.stderr
    )
    return 0


# -- predict -------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from cnnzoo.cli.streaming import RowWriter
    from cnnzoo.cli.train_cmd import PROGRESS_IMAGES
    from cnnzoo.counting.train import iter_counts
    from cnnzoo.data.decode import expand_images
    from cnnzoo.train.plots import have_matplotlib
    from cnnzoo.train.progress import ProgressBar

    files = expand_images(args.images)
    out = Path(args.out) if args.out else Path(".")
    single_file = args.out is not None and out.suffix.lower() == ".png"
    if single_file and len(files) > 1:
        raise UsageError("--out names one .png but several images were given; pass a folder")
    draw = have_matplotlib() and args.out != ""
    if draw:  # checked before the first image is counted, not at the first picture
        if single_file:
            check_output_file(out, "--out", overwrite=None)
        else:
            check_output_dir(out, "--out")
    columns = ["image", "count", "picture"] + (["error"] if args.skip_unreadable else [])
    writer = RowWriter(sys.stdout, "json" if args.format == "json" else "csv", columns)
    show = (
        args.progress if args.progress is not None else sys.stderr.isatty() or len(files) >= PROGRESS_IMAGES
    )
    bar = ProgressBar(len(files), desc="count", enabled=show)
    clear = bar.enabled and sys.stdout.isatty() and sys.stderr.isatty()
    skipped = 0
    try:
        for r in iter_counts(
            args.checkpoint, files, device=args.device, skip_unreadable=args.skip_unreadable
        ):
            if clear:
                sys.stderr.write("\r" + " " * 100 + "\r")
            bar.update(1)
            if "error" in r:
                skipped += 1
                print(f"cnnzoo: skipped: {r['error']}", file=sys.stderr)
                if args.format != "text":
                    writer.write(r)
                continue
            row = {"image": r["image"], "count": round(r["count"], 2)}
            if r["mode"] != "RGB":
                print(f"note: {r['image']} is {r['mode']}, counted as RGB", file=sys.stderr)
            if draw:
                from cnnzoo.counting.plots import plot_density_overlay

                path = out if single_file else out / f"{Path(r['image']).stem}-density.png"
                row["picture"] = str(
                    plot_density_overlay(r["rgb"], r["density"], path, count=r["count"], title=r["model"])
                )
            if args.format == "text":
                pic = f"  ({row['picture']})" if "picture" in row else ""
                print(f"{row['image']}: {row['count']:.1f} people{pic}", flush=True)
            else:
                writer.write(row)
    finally:
        bar.close()
    if skipped:
        print(f"cnnzoo: skipped {skipped} of {len(files)} images that could not be read", file=sys.stderr)
    return 0


# -- wiring --------------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> None:
    """Register `count` and its sub-verbs synth, train, eval and predict."""
    from cnnzoo.counting.models import list_counters
    from cnnzoo.counting.train import COUNT_RECIPES, CountConfig

    top = subparsers.add_parser(
        "count",
        help="crowd counting on ShanghaiTech: synthetic data, training, evaluation, density pictures",
        description="Crowd counting with density maps (docs/counting.md). Place the dataset as "
        "ROOT/part_A_final/{train_data,test_data}/{images,ground_truth}/ (or part_A/, ground-truth/).",
    )
    sub = top.add_subparsers(dest="count_verb", metavar="SUBVERB")
    sub.required = True

    p = sub.add_parser(
        "synth",
        help="write synthetic crowds in ShanghaiTech's layout (images + GT_IMG_n.mat)",
        description="People of varying size under a ground-plane perspective, with clutter; counts "
        "drawn uniformly from 0 to --max-people.",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--parts", default="A,B", help="A, B or A,B (default)")
    p.add_argument("--train", type=int, default=40, help="training images per part (default 40)")
    p.add_argument("--test", type=int, default=20, help="test images per part (default 20)")
    p.add_argument(
        "--size", type=_size, default=(192, 256), metavar="HxW", help="image size (default 192x256)"
    )
    p.add_argument("--max-people", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=["final", "plain"], default="final", help="part_X_final/ or part_X/")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "train",
        help="train a counter; model selection on validation, MAE/RMSE on test",
        description="Writes OUT/config.json, metrics.jsonl, model.safetensors (best on validation), "
        "last.safetensors, checkpoints/, final.json, test_predictions.csv, curves.png, test_scatter.png.",
    )
    p.add_argument("--root", help="folder holding part_A_final/ and part_B_final/ (or part_A/, part_B/)")
    p.add_argument("--part", choices=["A", "B"])
    p.add_argument("--model", choices=list_counters(), help="counter (default resnet50_counter)")
    p.add_argument("--recipe", choices=list(COUNT_RECIPES), help="a published recipe's settings")
    p.add_argument("--recipes", action="store_true", help="list the recipes and exit")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--optimizer", choices=["adamw", "sgd"])
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=["cosine", "step", "plateau", "onecycle", "constant"])
    g.add_argument("--warmup", type=float, metavar="EPOCHS")
    g.add_argument("--backbone-lr-mult", type=float, metavar="M", help="trunk lr = lr x M")
    show_defaults(g, CountConfig(), "the recipe's, else ")
    g = p.add_argument_group("data")
    g.add_argument(
        "--crop", type=_size, metavar="HxW", help="random crop, multiples of 8 (or none: whole images)"
    )
    g.add_argument("--scale", type=_range, metavar="LO,HI", help="random rescaling range (or none)")
    g.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    g.add_argument(
        "--density", choices=["adaptive", "fixed"], help="kernels (default: adaptive for A, fixed for B)"
    )
    g.add_argument("--sigma", type=float, help="fixed kernel width in pixels (default 4)")
    g.add_argument("--density-scale", type=float, help="density multiplier of the targets (default 100)")
    g.add_argument("--val-fraction", type=float, help="share of train held out for model selection (0.1)")
    g.add_argument("--cache-dir", help="keep the pooled density maps here")
    show_defaults(g, CountConfig(), "the recipe's, else ")
    g = p.add_argument_group("run")
    g.add_argument(
        "--pretrained", metavar="PATH|imagenet", help="trunk weights: a file or torchvision's ImageNet"
    )
    g.add_argument("--seed", type=int)
    g.add_argument("--out", help="run directory (default runs/MODEL-shanghaitech-PART)")
    g.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="DIR",
        help="continue the run in DIR (or --out); --epochs N extends it, a new --lr starts a new schedule phase",
    )
    g.add_argument(
        "--overwrite", action="store_true", default=None, help="replace the run that --out already holds"
    )
    g.add_argument("--eval-every", type=int, metavar="N", help="epochs between validations (default 1)")
    g.add_argument("--checkpoint-every", type=int, metavar="N", help="epochs between checkpoints (default 1)")
    g = p.add_argument_group("speed")
    g.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    g.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="MAE/RMSE of a counter on full images (batch 1), per-image CSV and a scatter plot",
        description="CHECKPOINT is a run directory of `cnnzoo count train` or its model.safetensors.",
    )
    p.add_argument("checkpoint", metavar="RUN_or_CHECKPOINT")
    p.add_argument("--root", help="dataset root (default: the run's)")
    p.add_argument("--part", choices=["A", "B"], help="default: the run's")
    p.add_argument("--split", choices=["test", "val", "train", "trainval"], default="test")
    p.add_argument("--csv", metavar="OUT.csv", help="per-image counts (default beside the checkpoint)")
    p.add_argument("--scatter", metavar="OUT.png", help="estimated vs true counts ('' for none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--format", choices=["text", "json"], default="text")
    add_threads_flag(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "predict",
        help="count the people in images and draw each density map over its image",
        description="Writes IMAGE-density.png (into --out, default the current folder). IMAGE may be "
        "a file, a folder (searched recursively for image files) or a quoted glob; images are "
        "counted one at a time and each line is printed as soon as it is known.",
    )
    p.add_argument("checkpoint", metavar="RUN_or_CHECKPOINT")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", metavar="DIR_or_PNG", help="folder for the pictures, or one .png ('' for none)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--format",
        choices=["text", "json", "csv"],
        default="text",
        help="text, csv, or json (JSON lines: one object per image)",
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="report an unreadable image (on stderr and as an 'error' row) and go on, instead of stopping",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: on a terminal, or from 1000 images)",
    )
    add_threads_flag(p)
    p.set_defaults(func=cmd_predict)
