"""Fine-tuning from ImageNet against training from scratch, on CIFAR-10, at equal budget.

The course's assignment: "What's the performance difference between the model finetuned from a
pretrained ResNet and that trained from scratch?" Here the same ResNet-18 (He et al. 2015,
arXiv:1512.03385) trains twice on CIFAR-10 (Krizhevsky 2009): once from torchvision's ImageNet
weights, once from a random initialisation. Both see the same images, resized to the side the
ImageNet weights were trained at and normalised with ImageNet's mean and std, in the same order,
for the same number of steps; only the initial trunk differs (the 10-way head is fresh in both).
The CIFAR ResNet-20 and ResNet-56 of He et al.'s section 4.2, trained from scratch at CIFAR's
own 32 x 32 with the same schedule, are the lecture's own baselines.

Every run trains on the engine (`train_run`) with its validation split: the weights a table
reports are the epoch with the best validation top-1, and their test top-1 is the number the
findings compare. Fine-tuning uses a tenth of the learning rate from scratch, the usual choice
(Kornblith et al. 2019, arXiv:1805.08974, tune it per dataset; a tenth is the middle of their
grid) and the step schedule of He et al. for every run.

Offline, nothing is downloaded unless `--set download=true`: a missing CIFAR-10 or weights file is
one message naming the file and where to put it. `--set data=fashion-mnist` runs the same
comparison on a dataset that is always at hand (the RGB stem is summed to one channel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "Settings", "check", "cifar10_missing_message", "resolve_weights"]

# torchvision's ImageNet preprocessing (the statistics its published weights were trained with).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED = "imagenet"  # the fine-tuned arm's label in tables and run names


@dataclass(frozen=True)
class Settings:
    data: str = "cifar10"
    finetune: tuple[str, ...] = ("resnet18",)  # trained from ImageNet weights and from scratch
    baselines: tuple[str, ...] = ("resnet20", "resnet56")  # from scratch at the data's own size
    weights: str = "imagenet"  # torchvision's file in torch's hub cache, or a path to one
    image_size: int = 224  # side the fine-tuned net and its scratch twin see (ImageNet's)
    # Training images; 0: all but a tenth held out for validation (CIFAR-10: He et al.'s 45k/5k).
    train_size: int = 0
    val_size: int = 5000  # validation images outside a training subset (when train_size > 0)
    test_size: int = 0  # 0: all
    epochs: int = 182
    evals_per_epoch: int = 1
    batch_size: int = 128
    lr: float = 0.1  # from scratch
    finetune_lr: float = 0.01  # from ImageNet weights
    weight_decay: float = 1e-4
    augment: str | None = "crop-flip"
    download: bool = False  # fetch CIFAR-10 and the weights file when missing


BUDGETS = {
    "tiny": Settings(
        baselines=("resnet20",),
        image_size=64,
        train_size=64,
        val_size=32,
        test_size=32,
        epochs=1,
        batch_size=16,
        augment=None,
    ),
    "small": Settings(
        image_size=96, train_size=2000, val_size=500, test_size=1000, epochs=2, evals_per_epoch=2
    ),
    "full": Settings(
        image_size=128, train_size=10000, val_size=2000, test_size=2000, epochs=4, evals_per_epoch=2
    ),
    # He et al. 2015, sec. 4.2: 45k/5k train/val split of CIFAR-10, batch 128, SGD momentum 0.9,
    # weight decay 1e-4, lr 0.1 divided by 10 at 32k and 48k iterations, stopped at 64k (182
    # epochs of 45,000 images), 4-pixel padding + random crop + flip; every arm gets that many
    # steps (equal budget), the ImageNet-initialised one at a tenth of the learning rate and at
    # torchvision's 224 x 224.
    "paper": Settings(),
}


def resolve_weights(s: Settings, model: str) -> Path:
    """The ImageNet weights file of `model`: `s.weights` if it is a path, else torchvision's file
    in torch's hub cache (downloaded there only with `s.download`); a missing file is one
    FileNotFoundError naming it and the place to put it."""
    from cnnzoo.pretrained import PretrainedUnavailable, imagenet_weights

    if s.weights != "imagenet":
        path = Path(s.weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"--set weights={s.weights}: no such file; give the path of torchvision's {model} ImageNet "
                "state dict (.pth or .safetensors), or weights=imagenet for torch's hub cache"
            )
        return path
    try:
        return imagenet_weights(model, download=s.download)
    except PretrainedUnavailable as e:
        fix = "" if s.download else "; or pass --set download=true to download it"
        raise PretrainedUnavailable(
            f"{e}{fix}, or --set weights=PATH for a file elsewhere (the finetune experiment's ImageNet arm)"
        ) from None


def cifar10_missing_message(root: str | None) -> str:
    """Which CIFAR-10 files the experiment reads, and where they go under the data root."""
    import torchvision.datasets as tvd

    from cnnzoo.data import data_root

    cls = tvd.CIFAR10
    folder = data_root(root) / "cifar10"
    files = [f for f, _ in [*cls.train_list, *cls.test_list]] + [cls.meta["filename"]]
    return (
        f"CIFAR-10 is not in {folder}: run `cnnzoo data fetch cifar10` (or --set download=true), or "
        f"download the python version {cls.filename} (md5 {cls.tgz_md5}) from {cls.url} and unpack "
        f"it into {folder}, so that {folder / cls.base_folder} holds {', '.join(files)}; "
        "--set data=fashion-mnist runs the experiment on data at hand"
    )


def check(s: Settings, ctx: Context) -> None:
    """Before anything runs: the weights file, and CIFAR-10 unless it may be downloaded."""
    from cnnzoo.data import DatasetNotFoundError, data_root, dataset_info
    from cnnzoo.data.formats import has_cifar

    if s.image_size < 32:
        raise ValueError(f"image_size must be >= 32 (ResNet-18 downsamples 32 times), got {s.image_size}")
    for m in s.finetune:
        resolve_weights(s, m)
    if s.data == "cifar10" and not s.download:
        info = dataset_info("cifar10", root=ctx.data_root)
        if not info.fetched and not has_cifar(data_root(ctx.data_root) / "cifar10", info):
            raise DatasetNotFoundError(cifar10_missing_message(ctx.data_root))


def _load(s: Settings, ctx: Context):
    from cnnzoo.data import DatasetNotFoundError, fetch
    from cnnzoo.experiments.training import load_dataset

    try:
        return load_dataset(s.data, ctx.data_root)
    except DatasetNotFoundError:
        if s.download:
            fetch(s.data, ctx.data_root)
            return load_dataset(s.data, ctx.data_root)
        if s.data != "cifar10":
            raise
        raise DatasetNotFoundError(cifar10_missing_message(ctx.data_root)) from None


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.training import PRECISE_BN_NOTE, experiment_subsets, train_run

    check(s, ctx)  # the runner has checked already; a direct call checks here
    weights = {m: resolve_weights(s, m) for m in s.finetune}
    data = _load(s, ctx)
    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    ctx.seeds += [
        f"{ctx.seed}: training subset, every initialisation (the fresh heads too) and data order",
        f"{ctx.seed + 1}: test subset",
        f"{ctx.seed + 2}: validation images",
    ]
    c = data.info.in_chans
    # A grey dataset gets the stem summed to one channel (cnnzoo.weights): its statistics are then
    # those of a grey image, the mean of ImageNet's three.
    imagenet = (
        (IMAGENET_MEAN, IMAGENET_STD)
        if c == 3
        else ((sum(IMAGENET_MEAN) / 3,) * c, (sum(IMAGENET_STD) / 3,) * c)
    )
    side = max(data.info.image_size)
    arms: list[tuple[str, str, str | None, int | None, float]] = []  # run, model, weights, resize, lr
    for m in s.finetune:
        arms.append((f"{m} ({PRETRAINED})", m, str(weights[m]), s.image_size, s.finetune_lr))
        arms.append((f"{m} (scratch)", m, None, s.image_size, s.lr))
    arms += [(f"{m} (scratch)", m, None, None, s.lr) for m in s.baselines]
    runs = {}
    for i, (label, model, pretrained, resize, lr) in enumerate(arms, 1):
        size = resize or side
        ctx.log(f"run {i}/{len(arms)}: {label} on {len(train_idx):,} {data.name} images at {size}x{size}")
        runs[label] = train_run(
            ctx,
            label.replace(" (", "-").rstrip(")"),
            model,
            data=data,
            train_idx=train_idx,
            test_idx=test_idx,
            epochs=s.epochs,
            evals_per_epoch=s.evals_per_epoch,
            batch_size=s.batch_size,
            lr=lr,
            weight_decay=s.weight_decay,
            # He et al. sec. 4.2: lr / 10 at 32k and 48k of 64k iterations (50% and 75%).
            schedule="step",
            augment=s.augment,
            seed=ctx.seed,
            pretrained=pretrained,
            val_size=s.val_size,
            resize_to=resize,
            normalization=imagenet if resize is not None else None,
        )

    result = ExperimentResult(
        name="finetune", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    rows = []
    for (label, _model, _, resize, lr), r in zip(arms, runs.values(), strict=True):
        size = resize or side
        params = sum(p.numel() for p in r.model.parameters())
        rows.append(
            [
                label,
                f"{size}x{size}",
                params,
                lr,
                int(r.final["best_epoch"]),
                round(100 * r.val_top1, 2),
                round(100 * r.test_top1, 2),
                round(r.seconds, 1),
            ]
        )
    result.tables.append(
        Table(
            f"{data.name}: {len(train_idx):,} training images, {s.epochs} epoch(s) at batch {s.batch_size}",
            [
                "run",
                "input",
                "parameters",
                "lr",
                "selected evaluation",
                "val top-1 (%)",
                "test top-1 (%)",
                "training time (s)",
            ],
            rows,
            f"Selected evaluation: the one (of {s.epochs * s.evals_per_epoch}) with the best validation "
            f"top-1; test top-1 is those weights' score on {len(test_idx):,} test images. The ResNet-18 "
            f"runs see images resized to {s.image_size}x{s.image_size} and ImageNet's mean and std.",
        )
    )
    test = {label: 100 * r.test_top1 for label, r in runs.items()}
    for m in s.finetune:
        ft, sc = test[f"{m} ({PRETRAINED})"], test[f"{m} (scratch)"]
        result.findings.append(
            Finding(
                f"Fine-tuning {m} from ImageNet beats training it from scratch at equal budget",
                ft > sc,
                f"test top-1 {ft:.2f}% fine-tuned vs {sc:.2f}% from scratch ({ft - sc:+.2f} points), "
                f"both after {s.epochs} epoch(s), selected on validation",
            )
        )
    if s.finetune and s.baselines:
        best_ft = max(s.finetune, key=lambda m: test[f"{m} ({PRETRAINED})"])
        best_base = max(s.baselines, key=lambda m: test[f"{m} (scratch)"])
        ft, base = test[f"{best_ft} ({PRETRAINED})"], test[f"{best_base} (scratch)"]
        result.findings.append(
            Finding(
                f"The fine-tuned {best_ft} beats the CIFAR ResNets trained from scratch for as many epochs",
                ft > base,
                f"test top-1 {ft:.2f}% vs {base:.2f}% for the best of them, {best_base}",
            )
        )
    result.notes.append(
        f"Equal budget means equal steps and images ({s.epochs} epoch(s) of {len(train_idx):,}), not "
        f"equal compute: at {s.image_size}x{s.image_size} a ResNet-18 step costs many times a CIFAR "
        "ResNet's at 32x32 (see the training times)."
    )
    if data.name != "cifar10":
        result.notes.append(
            f"Run on {data.name}, not CIFAR-10 (--set data=...): the claim is about CIFAR-10, whose "
            "natural photographs are closer to ImageNet's than this dataset's images."
        )
    if s.weights != "imagenet":
        result.notes.append(f"The ImageNet arm started from {s.weights} (--set weights=...).")
    result.notes.append(PRECISE_BN_NOTE)
    result.data = {
        "dataset": data.name,
        "test_top1": test,
        "val_top1": {label: 100 * r.val_top1 for label, r in runs.items()},
        "curves": {
            label: [
                {k: row[k] for k in ("epochs_seen", "train_top1", "val_top1", "test_top1") if k in row}
                for row in r.history
            ]
            for label, r in runs.items()
        },
    }
    result.figures.append(_plot(runs, ctx, data.name))
    return result


def _plot(runs: dict, ctx: Context, dataset: str) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, r) in enumerate(runs.items()):
        x = [row["epochs_seen"] for row in r.history]
        color = f"C{i}"
        ax.plot(x, [100 * row["val_top1"] for row in r.history], "o-", color=color, label=f"{label} val")
        ax.plot(x, [100 * row["test_top1"] for row in r.history], "--", color=color, alpha=0.6)
    ax.set_xlabel("epochs")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"From ImageNet weights vs from scratch on {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, ctx.out / "curves.png")
    return Figure(
        "curves.png",
        "Validation top-1 (solid, what selects the weights) and test top-1 (dashed, the learning curve "
        "only) of every run.",
    )


EXPERIMENT = Experiment(
    name="finetune",
    title="Fine-tuning: ImageNet weights beat training from scratch on CIFAR-10",
    claim="What's the performance difference between the model finetuned from a pretrained ResNet and "
    "that trained from scratch? [Fine-tuning from ImageNet weights beats training from scratch on "
    "CIFAR-10 at equal budget.]",
    source="the course's assignment; He et al. 2015, arXiv:1512.03385, sec. 4.2 (CIFAR-10 schedule); "
    "Kornblith et al. 2019, arXiv:1805.08974 (fine-tuning ImageNet models)",
    budgets=BUDGETS,
    run=run,
    summary="ResNet-18 from ImageNet weights vs from scratch, with ResNet-20/56 baselines",
    check=check,
)
