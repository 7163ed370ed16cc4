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
from cnnzoo.cli.main import UsageError, add_threads_flag, show_defaults
from cnnzoo.words import plural

__all__ = ["add_parsers"]


def _model_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--model-arg takes KEY=VALUE, e.g. act=relu, not {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


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
    "progress",
    "data_root",
    "download",
    "checkpoint_every",
    "overwrite",
    "val_fraction",
    "eval_every",
    "test_curve",
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
        from cnnzoo.train.recipes import DEFAULT_RECIPES, MODEL_DEFAULT_RECIPES

        def default_for(name: str) -> str:
            families = [f for f, r in DEFAULT_RECIPES.items() if r == name]
            models = [m for m, r in MODEL_DEFAULT_RECIPES.items() if r == name]
            return ", ".join(families + models) or "-"

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

    result = evaluate(
        args.checkpoint,
        data=args.data,
        model=args.model,
        batch_size=args.batch_size,
        device=args.device,
        root=args.data_root,
    )
    confusion_png = args.confusion
    if confusion_png is None:
        src = Path(args.checkpoint)
        confusion_png = src / "confusion.png" if src.is_dir() else src.with_name(f"{src.stem}-confusion.png")
    if confusion_png and have_matplotlib():
        result["confusion_png"] = str(plot_confusion(result["confusion"], result["classes"], confusion_png))
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['model']} on {result['data']} ({result['samples']} test images): "
        f"top-1 {100 * result['test_top1']:.2f}%, top-5 {100 * result['test_top5']:.2f}%, "
        f"loss {result['test_loss']:.4f}"
    )
    rows = [{"class": c, "accuracy (%)": f"{100 * a:.2f}"} for c, a in result["per_class"].items()]
    print(_render(rows, ["class", "accuracy (%)"], "table"))
    if "confusion_png" in result:
        print(f"wrote {result['confusion_png']}", file=sys.stderr)
    return 0


# -- predict ------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from cnnzoo.train.evaluate import predict

    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    results = predict(args.checkpoint, args.images, top_k=args.top_k, model=args.model, device=args.device)
    runtime = getattr(results, "runtime", None)
    if runtime:  # on stderr, so that the table or JSON on stdout stays machine-readable
        print(f"cnnzoo: predict ran on {runtime['description']}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(results, indent=2))
        return 0
    rows = [
        {"image": r["image"], "rank": i + 1, "class": t["class"], "prob": f"{t['prob']:.4f}"}
        for r in results
        for i, t in enumerate(r["top"])
    ]
    print(_render(rows, ["image", "rank", "class", "prob"], args.format))
    return 0


# -- wiring -------------------------------------------------------------------------------------
def add_parsers(subparsers: Any) -> None:
    """Register `train`, `eval` and `predict` on the main parser's subparsers."""
    from cnnzoo.train.config import OPTIMIZERS, SCHEDULES, TrainConfig
    from cnnzoo.train.recipes import RECIPES

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
        choices=list(RECIPES),
        help="named hyper-parameters (default: the model family's recipe, see --recipes)",
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
    g.add_argument("--augment", choices=["crop-flip", "flip", "none"])
    show_defaults(g, d, "the recipe's, else ")
    g = p.add_argument_group("speed")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument(
        "--threads", type=int, metavar="N", help="torch threads (default: torch's choice, one per core)"
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
        description="CHECKPOINT is a run directory, a checkpoint directory or a .safetensors file.",
    )
    p.add_argument("checkpoint", metavar="DIR_or_CHECKPOINT")
    p.add_argument("--data", help="dataset (default: the one the run trained on)")
    p.add_argument("--model", help="architecture, for files that do not name it")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root")
    p.add_argument(
        "--confusion",
        metavar="OUT.png",
        help="confusion matrix image (default beside the checkpoint; '' for none)",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    add_threads_flag(p)
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "predict",
        help="top-k classes of image files with a trained model",
        description="Images are resized and normalised as in training; class names come from the run.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--model", help="architecture, for files that do not name it")
    p.add_argument("--device", default="cpu")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    add_threads_flag(p)
    p.set_defaults(func=cmd_predict)
