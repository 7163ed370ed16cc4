"""`cnnzoo train`, `cnnzoo eval`, `cnnzoo predict`: the trainer's verbs.

`add_parsers(subparsers)` registers them on the main parser. Flags left out keep the recipe's
value (or TrainConfig's default); flags given override it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cnnzoo.analysis.formats import render_rows as _render
from cnnzoo.cli.main import UsageError, _model_arg, add_threads_flag, check_output_file, show_defaults
from cnnzoo.words import plural

__all__ = ["add_parsers"]


def _milestones(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"--milestones takes fractions of the run, e.g. 0.5,0.75, not {text!r}"
        )
    return values


# -- train --------------------------------------------------------------------------------------
_OVERRIDES = (
    "data",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "milestones",
    "gamma",
    "patience",
    "warmup",
    "label_smoothing",
    "augment",
    "amp",
    "channels_last",
    "compile",
    "seed",
    "device",
    "out",
    "pretrained",
    "freeze_backbone",
    "backbone_lr_mult",
    "resize_to",
    "threads",
    "workers",
    "memory_budget",
    "progress",
    "data_root",
    "download",
    "checkpoint_every",
    "overwrite",
    "val_fraction",
    "eval_every",
    "test_curve",
    "shard_streams",
)


def _config_from_args(args: argparse.Namespace) -> Any:
    from cnnzoo.train import TrainConfig, resolve_config

    overrides = {k: getattr(args, k) for k in _OVERRIDES}
    if args.model_arg:
        overrides["model_kwargs"] = dict(args.model_arg)
    if args.no_summary:
        overrides["summary"] = False
    if args.resume is not None:
        if args.overwrite:
            raise UsageError("--resume continues a run and --overwrite replaces it; pass one of them")
        run_dir = Path(args.resume or args.out or "")
        if not str(run_dir) or str(run_dir) == ".":
            raise UsageError("--resume needs the run directory: --resume DIR (or --out DIR --resume)")
        saved_path = run_dir / "config.json"
        if not saved_path.is_file():
            raise UsageError(f"--resume: {str(run_dir)!r} holds no run (no config.json)")
        saved = json.loads(saved_path.read_text())
        if args.model and args.model != saved.get("model"):
            raise UsageError(f"--resume: {str(run_dir)!r} trained {saved.get('model')}, not {args.model}")
        # What the run used, then what this command changes; the engine applies the changes
        # from the resume on (and records them) or refuses them with the reason.
        base = TrainConfig.from_dict(saved).to_dict()
        base.update({k: v for k, v in overrides.items() if v is not None})
        base.update(out=str(run_dir), resume=True, overwrite=False)
        return TrainConfig.from_dict(base)
    if not args.model:
        raise UsageError("which model? `cnnzoo train MODEL --data NAME` (see `cnnzoo list`)")
    if not args.data:
        raise UsageError("which dataset? pass --data NAME, e.g. --data fashion-mnist")
    recipe = args.recipe
    if recipe is None:
        from cnnzoo.train.recipes import default_recipe  # imported only when needed

        recipe = default_recipe(args.model)
    return resolve_config(recipe, model=args.model, **overrides)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from cnnzoo.train import RECIPES, TrainingError, train

    if args.recipes:
        from cnnzoo.train.recipes import DEFAULT_RECIPES, FAST_RECIPES, MODEL_DEFAULT_RECIPES

        def default_for(name: str) -> str:
            families = [f for f, r in DEFAULT_RECIPES.items() if r == name]
            models = [m for m, r in MODEL_DEFAULT_RECIPES.items() if r == name]
            fast = [f for f, r in FAST_RECIPES.items() if r == name]
            text = ", ".join(families + models)
            if fast:
                text += ("; " if text else "") + "--recipe fast: " + ", ".join(fast)
            return text or "-"

        rows = [
            {
                "recipe": r.name,
                "default for": default_for(r.name),
                "values": json.dumps(r.values),
                "source": r.source,
            }
            for r in RECIPES.values()
        ]
        print(_render(rows, ["recipe", "default for", "source", "values"], "table"))
        return 0
    config = _config_from_args(args)
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        final = train(config)
    except TrainingError as e:
        raise UsageError(str(e)) from e
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("cnnzoo.data"):
            raise UsageError(
                "cnnzoo.data is not available in this installation; it loads the datasets"
            ) from e
        raise
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports for everyone
    if args.format == "json":
        print(json.dumps(final, indent=2))
    else:
        print(_final_line(final))
    return 0


def _final_line(final: dict[str, Any]) -> str:
    text = f"{final['model']} on {final['data']}: "
    if "val_top1" in final:
        text += f"selected epoch {final['best_epoch']} of {final['epochs']} on validation top-1 {100 * final['val_top1']:.2f}%; "
    else:
        text += f"{plural(final['epochs'], 'epoch')}, no validation set (the last epoch is reported); "
    if "test_top1" in final:
        text += f"test top-1 {100 * final['test_top1']:.2f}%, top-5 {100 * final['test_top5']:.2f}% "
        if final.get("best_epoch") != final["epochs"] and "test_top1_last" in final:
            text += f"(last epoch: {100 * final['test_top1_last']:.2f}%) "
    return text + f"({final.get('train_seconds', 0):.1f}s training); run in {final['out']}"


# -- eval ---------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from cnnzoo.train.evaluate import evaluate
    from cnnzoo.train.plots import have_matplotlib, plot_confusion

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.ensemble:
        return _eval_ensemble(args)
    if len(args.checkpoint) > 1:
        raise UsageError(
            f"eval takes one run, got {len(args.checkpoint)}; pass --ensemble to average their softmax outputs"
        )
    args.checkpoint = args.checkpoint[0]
    confusion_png = args.confusion
    if confusion_png is None:  # eval's own picture beside the checkpoint, replaced on each eval
        src = Path(args.checkpoint)
        confusion_png = src / "confusion.png" if src.is_dir() else src.with_name(f"{src.stem}-confusion.png")
    if confusion_png and have_matplotlib():
        # Checked before the evaluation, which may take long, not after it.
        check_output_file(
            confusion_png, "--confusion", overwrite=None if args.confusion is None else args.overwrite
        )
    result = evaluate(
        args.checkpoint,
        data=args.data,
        model=args.model,
        batch_size=args.batch_size,
        device=args.device,
        root=args.data_root,
        tta=args.tta,
        progress=args.progress,
    )
    if confusion_png and have_matplotlib():
        result["confusion_png"] = str(plot_confusion(result["confusion"], result["classes"], confusion_png))
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['model']} on {result['data']} ({plural(result['samples'], 'test image')}, {result['tta']}): "
        f"top-1 {100 * result['test_top1']:.2f}%, top-5 {100 * result['test_top5']:.2f}%, "
        f"loss {result['test_loss']:.4f}"
    )
    rows = [{"class": c, "accuracy (%)": f"{100 * a:.2f}"} for c, a in result["per_class"].items()]
    print(_render(rows, ["class", "accuracy (%)"], "table"))
    if "confusion_png" in result:
        print(f"wrote {result['confusion_png']}", file=sys.stderr)
    return 0


def _eval_ensemble(args: argparse.Namespace) -> int:
    from cnnzoo.train.evaluate import evaluate_ensemble
    from cnnzoo.train.plots import have_matplotlib, plot_confusion

    if len(args.checkpoint) < 2:
        raise UsageError("--ensemble needs two runs or more: `cnnzoo eval --ensemble RUN RUN ...`")
    if args.confusion is None:
        args.confusion = ""  # no default place: an ensemble has no folder of its own
    if args.confusion and have_matplotlib():
        check_output_file(args.confusion, "--confusion", overwrite=args.overwrite)
    result = evaluate_ensemble(
        args.checkpoint,
        data=args.data,
        model=args.model,
        batch_size=args.batch_size,
        device=args.device,
        root=args.data_root,
        tta=args.tta,
        progress=args.progress,
    )
    if args.confusion and have_matplotlib():
        result["confusion_png"] = str(
            plot_confusion(
                result["confusion"],
                result["classes"],
                args.confusion,
                title=f"ensemble of {result['ensemble']} (colour: share of the true class; numbers: images)",
            )
        )
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    rows = [
        {
            "model": f"member {i}: {m['model']}",
            "checkpoint": m["checkpoint"],
            "top-1 (%)": f"{100 * m['test_top1']:.2f}",
            "top-5 (%)": f"{100 * m['test_top5']:.2f}",
            "loss": f"{m['test_loss']:.4f}",
        }
        for i, m in enumerate(result["members"], 1)
    ]
    rows.append(
        {
            "model": f"ensemble of {result['ensemble']} (softmax averaged)",
            "checkpoint": "",
            "top-1 (%)": f"{100 * result['test_top1']:.2f}",
            "top-5 (%)": f"{100 * result['test_top5']:.2f}",
            "loss": f"{result['test_loss']:.4f}",
        }
    )
    print(f"ensemble on {result['data']} ({plural(result['samples'], 'test image')}, {result['tta']}):")
    print(_render(rows, ["model", "top-1 (%)", "top-5 (%)", "loss", "checkpoint"], "table"))
    print(
        f"gain over the best member: top-1 {100 * result['gain_top1']:+.2f} points, "
        f"top-5 {100 * result['gain_top5']:+.2f} points (over the members' mean: top-1 "
        f"{100 * result['gain_top1_vs_mean']:+.2f})"
    )
    if "confusion_png" in result:
        print(f"wrote {result['confusion_png']}", file=sys.stderr)
    return 0


# -- predict ------------------------------------------------------------------------------------
# Past this many images a progress bar is worth its lines in a log file, terminal or not.
PROGRESS_IMAGES = 1000


def _predict_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.out).suffix.lower() if args.out else ""
    return {".csv": "csv", ".json": "json", ".jsonl": "json"}.get(suffix, "table")


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnzoo.cli.streaming import RowWriter, check_output, open_output
    from cnnzoo.train.evaluate import predict_stream
    from cnnzoo.train.progress import ProgressBar

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    check_output(args.out, overwrite=args.overwrite)
    fmt = _predict_format(args)
    stream = predict_stream(
        args.checkpoint,
        args.images,
        top_k=args.top_k,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        skip_unreadable=args.skip_unreadable,
        fast=args.fast,
    )
    # Say what is done to each photo (once the first one is read): a 640x480 colour picture fed to a
    # Fashion-MNIST LeNet becomes a 28x28 grey square, which nobody should discover from odd results.
    h, w = stream.size
    colour = {1: "grey", 3: "RGB"}.get(stream.channels, f"{stream.channels} channels")
    note = (
        f"note: each image is read as {colour} and resized to {h}x{w} (the model's input; the aspect "
        "ratio is not kept, as in training), then normalised with the run's mean/std"
    )
    columns = ["image", "rank", "class", "prob"] + (["error"] if args.skip_unreadable else [])
    # Widths from every name up front: the table's first line cannot wait for the last image.
    widths = {
        "image": min(60, max(map(len, stream.images))),
        "class": max(map(len, stream.classes)),
        "prob": 6,
    }
    show = (
        args.progress if args.progress is not None else sys.stderr.isatty() or len(stream) >= PROGRESS_IMAGES
    )
    bar = ProgressBar(len(stream), desc="predict", enabled=show)
    # Rows on a terminal would land after the bar's text: clear its line before writing them.
    clear = bar.enabled and args.out is None and sys.stdout.isatty() and sys.stderr.isatty()
    try:
        with open_output(args.out, overwrite=args.overwrite) as out:
            writer = RowWriter(out, fmt, columns, widths=widths, numeric=["rank", "prob"])
            for record in stream:
                if clear:
                    sys.stderr.write("\r" + " " * 100 + "\r")
                if "error" in record:
                    print(f"cnnzoo: skipped: {record['error']}", file=sys.stderr)
                    writer.write(
                        record if fmt == "json" else {"image": record["image"], "error": record["error"]}
                    )
                    bar.update(1)
                    continue
                if note:
                    print(note, file=sys.stderr)
                    note = ""
                if fmt == "json":
                    writer.write(record)
                else:
                    for rank, t in enumerate(record["top"], 1):
                        writer.write(
                            {
                                "image": record["image"],
                                "rank": rank,
                                "class": t["class"],
                                "prob": f"{t['prob']:.4f}",
                            }
                        )
                bar.update(1)
    finally:
        bar.close()
    if stream.runtime:  # on stderr, so that the table or JSON on stdout stays machine-readable
        print(f"cnnzoo: predict ran on {stream.runtime['description']}", file=sys.stderr)
    if stream.skipped:
        print(
            f"cnnzoo: skipped {stream.skipped} of {len(stream)} images that could not be read",
            file=sys.stderr,
        )
    if args.out:
        print(f"wrote {args.out} ({len(stream) - stream.skipped} images)", file=sys.stderr)
    return 0


# -- wiring -------------------------------------------------------------------------------------
def add_parsers(subparsers: Any) -> None:
    """Register `train`, `eval` and `predict` on the main parser's subparsers."""
    from cnnzoo.data.stream import MAX_DEFAULT_WORKERS
    from cnnzoo.data.transforms import STREAM_AUGMENTS
    from cnnzoo.train.config import OPTIMIZERS, SCHEDULES, TrainConfig
    from cnnzoo.train.recipes import FAST, RECIPES

    p = subparsers.add_parser(
        "train",
        help="train a zoo model on a dataset (recipes, checkpoints, resume, fine-tuning, DDP)",
        description="Train MODEL on --data. Without --recipe the model family's default recipe "
        "sets the hyper-parameters (--recipes lists them); flags override them, and the resolved "
        "settings are printed at the start. --val-fraction of train is held out: the epoch with "
        "the best validation top-1 is selected, and test is read once, on its weights. Writes "
        "OUT/config.json, metrics.jsonl, final.json, model.safetensors (selected), "
        "last.safetensors, curves.png and checkpoints/ (atomic, every epoch). Under `torchrun "
        "--nproc_per_node N` the same command trains with DistributedDataParallel; --batch-size "
        "stays the global batch.",
    )
    p.add_argument("model", nargs="?", help="a model name from `cnnzoo list`")
    p.add_argument("--data", help="dataset: fashion-mnist, mnist, cifar10, cifar100, imagefolder:PATH")
    p.add_argument(
        "--recipe",
        choices=[*RECIPES, FAST],
        help="named hyper-parameters (default: the model family's recipe, see --recipes); fast: the "
        "family's time-to-accuracy recipe",
    )
    p.add_argument("--recipes", action="store_true", help="list the recipes and exit")
    d = TrainConfig()
    recipe_note = "the recipe's"
    g = p.add_argument_group("optimisation (defaults: the recipe's values; flags override them)")
    g.add_argument("--epochs", type=int, help=f"epochs to train (default: {recipe_note})")
    g.add_argument("--batch-size", type=int, help=f"global batch size (default: {recipe_note})")
    g.add_argument("--lr", type=float, help="peak learning rate (the head's, with --backbone-lr-mult)")
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--momentum", type=float)
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=SCHEDULES)
    g.add_argument(
        "--milestones", type=_milestones, metavar="F,F", help="step schedule: fractions, e.g. 0.5,0.75"
    )
    g.add_argument("--gamma", type=float, help="lr factor of step and plateau schedules")
    g.add_argument("--patience", type=int, help="plateau: epochs without improvement before the lr drops")
    g.add_argument("--warmup", type=float, metavar="EPOCHS", help="linear warm-up epochs")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument(
        "--augment",
        choices=["crop-flip", "flip", "none", *STREAM_AUGMENTS],
        help="crop-flip, flip: batched on the device; the ILSVRC ones (rrc-flip: random resized "
        "crop; scale-flip: VGG's S in [256, 512]; alexnet: 256, crop, flip, PCA colour; -pca adds "
        "the PCA colour jitter) transform each image and stream an image folder from disk",
    )
    show_defaults(g, d, "the recipe's, else ")
    g = p.add_argument_group("speed")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument(
        "--threads", type=int, metavar="N", help="torch threads (default: torch's choice, one per core)"
    )
    g.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"DataLoader processes decoding a streamed image folder (default min({MAX_DEFAULT_WORKERS}, "
        "cores); in-memory datasets use none)",
    )
    g.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="image folders that decode to more than SIZE (e.g. 2GB, 512MB) are streamed from disk; "
        "0 always streams (default auto: a quarter of the RAM, or of the GPU's memory on a GPU)",
    )
    g = p.add_argument_group("fine-tuning")
    g.add_argument(
        "--pretrained",
        metavar="PATH|imagenet",
        help="start from a weights file or torchvision's ImageNet weights",
    )
    g.add_argument(
        "--freeze-backbone",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the classifier only",
    )
    g.add_argument(
        "--backbone-lr-mult", type=float, metavar="M", help="backbone lr = lr x M (discriminative lr)"
    )
    g.add_argument("--resize", dest="resize_to", type=int, metavar="N", help="resize images to NxN")
    g.add_argument(
        "--shard-streams",
        type=int,
        metavar="N",
        help="--data shards:DIR: parallel shard streams; the global batches depend on N, not on the "
        "number of processes, so a run on 1, 2 or 4 processes (any dividing N) sees the same batches "
        "(default: one per process)",
    )
    g.add_argument(
        "--model-arg",
        action="append",
        type=_model_arg,
        metavar="KEY=VALUE",
        help="architecture option, e.g. drop_path_rate=0.1",
    )
    g = p.add_argument_group("validation and selection")
    g.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help=f"fraction of train held out for validation, stratified and deterministic; 0: none, "
        f"the last epoch is reported (default {d.val_fraction})",
    )
    g.add_argument(
        "--eval-every", type=int, metavar="N", help=f"epochs between validations (default {d.eval_every})"
    )
    g.add_argument(
        "--test-curve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also evaluate test every epoch, for the curve only (never used for a choice)",
    )
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help=f"(default {d.seed})")
    g.add_argument("--out", help="run directory (default runs/MODEL-DATA, numbered when taken)")
    g.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="DIR",
        help="continue the run in DIR (or --out) from its last checkpoint; --epochs N extends it, "
        "a new --lr (or schedule setting) starts a new schedule phase from there",
    )
    g.add_argument(
        "--overwrite", action="store_true", default=None, help="replace the run that --out already holds"
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help=f"epochs between checkpoints (default {d.checkpoint_every})",
    )
    g.add_argument("--data-root", help="dataset cache root (default $CNNZOO_DATA or ~/.cache/cnnzoo)")
    g.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fetch the dataset when missing",
    )
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal)",
    )
    g.add_argument("--no-summary", action="store_true", help="skip the model's per-layer table")
    g.add_argument(
        "--format", choices=["text", "json"], default="text", help="how to print the final metrics"
    )
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "eval",
        help="top-1/5, per-class accuracy and a confusion matrix of a trained model",
        description="CHECKPOINT is a run directory, a checkpoint directory or a .safetensors file. "
        "With --ensemble, several of them are evaluated as one classifier: their softmax outputs "
        "averaged, each member's and the ensemble's accuracy printed, and the gain.",
    )
    p.add_argument("checkpoint", metavar="DIR_or_CHECKPOINT", nargs="+")
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="average the softmax outputs of two runs or more (trained on the same classes) and "
        "report each member's accuracy, the ensemble's and the gain",
    )
    p.add_argument("--data", help="dataset (default: the one the run trained on)")
    p.add_argument("--model", help="architecture, for files that do not name it")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root")
    p.add_argument(
        "--confusion",
        metavar="OUT.png",
        help="confusion matrix image (default beside the checkpoint, none for --ensemble; '' for none)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --confusion file")
    p.add_argument(
        "--tta",
        choices=["center", "flip", "5crop", "10crop"],
        default="center",
        help="test-time protocol: the plain image (center), averaged with its mirror (flip), or the "
        "ILSVRC crops: 4 corners + centre of the image upsampled by 256/224 (5crop), and their "
        "mirrors (10crop); softmax averaged. Recorded in the results",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar of batches on stderr (default: on a terminal)",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    add_threads_flag(p)
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "predict",
        help="top-k classes of image files with a trained model",
        description="Images are resized and normalised as in training; class names come from the run. "
        "IMAGE may be a file, a folder (searched recursively for image files) or a quoted glob "
        "('shots/**/*.jpg'). Images stream through the model a batch at a time and each result is "
        "written as soon as it is known, so memory does not grow with the number of files.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--model", help="architecture, for files that do not name it")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--format",
        choices=["table", "json", "csv"],
        help="table, csv, or json (JSON lines: one object per image); default: from --out's "
        "suffix (.csv, .json, .jsonl), else table",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="write the results to FILE (filled as they come, renamed into place at the end)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument(
        "--workers", type=int, default=0, metavar="N", help="processes decoding images (default 0: this one)"
    )
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="report an unreadable image (on stderr and as an 'error' row) and go on, instead of stopping",
    )
    p.add_argument(
        "--fast",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the fastest exact inference path, checked on the first batch (default); --no-fast: "
        "eager PyTorch, the least memory (an ONNX Runtime session holds its own buffers)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"progress bar on stderr (default: on a terminal, or from {PROGRESS_IMAGES} images)",
    )
    add_threads_flag(p)
    p.set_defaults(func=cmd_predict)
