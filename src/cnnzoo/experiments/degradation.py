"""The degradation problem: deeper plain nets train worse; residual nets get better with depth.

He et al. 2015 (arXiv:1512.03385), section 4.2 and Fig. 6: on CIFAR-10, Plain-56 has a *higher
training error* than Plain-20 (so it is not overfitting: optimisation fails), while ResNet-56
trains to a lower error than ResNet-20. The zoo's `plain20/56` and `resnet20/56` are those nets
(option-A shortcuts, so each ResNet has exactly its plain twin's parameters).

Here they train with the paper's recipe shape - SGD, momentum 0.9, weight decay 1e-4, batch
128, lr 0.1 divided by 10 at 50% and 75% of the run - on a subset of Fashion-MNIST (CIFAR-10
when its files are in the cache), far shorter than the paper's 64k iterations. Every net warms
up linearly over its first half epoch: He et al. found 0.1 "slightly too large to start
converging" for their deepest net and warmed it up at 0.01 for about 400 iterations, and in a
run of a few hundred steps a diverging start would decide the comparison. Training error is the
running error over each evaluation interval, as in the paper's curves.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "Settings"]


@dataclass(frozen=True)
class Settings:
    data: str = "auto"  # cifar10 when fetched, else fashion-mnist
    models: tuple[str, ...] = ("plain20", "plain56", "resnet20", "resnet56")
    train_size: int = 4000
    test_size: int = 1000
    epochs: int = 2
    evals_per_epoch: int = 4
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5  # linear, for every net alike
    augment: str | None = None  # "crop-flip": He et al.'s 4-pixel padding, random crop and flip


BUDGETS = {
    "tiny": Settings(train_size=128, test_size=64, epochs=1, evals_per_epoch=2, batch_size=32),
    "small": Settings(train_size=2000, test_size=1000, epochs=2, evals_per_epoch=4),
    "full": Settings(train_size=8000, test_size=1000, epochs=4, evals_per_epoch=3),
    # He et al. 2015, sec. 4.2: CIFAR-10 on a 45k/5k train/val split, batch 128, SGD momentum 0.9,
    # weight decay 1e-4, lr 0.1 divided by 10 at 32k and 48k iterations, stopped at 64k (182
    # epochs of 45,000 images), 4-pixel padding + random 32x32 crop + horizontal flip; Fig. 6's
    # plain and residual nets of depth 20 to 56. Their warm-up (lr 0.01 for about 400 iterations,
    # ResNet-110 only) is the linear warm-up here, over the same 400 iterations, for every net.
    "paper": Settings(
        data="cifar10",
        models=("plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56"),
        train_size=45000,
        test_size=10000,
        epochs=182,
        evals_per_epoch=1,
        warmup_epochs=400 * 128 / 45000,
        augment="crop-flip",
    ),
}


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.training import (
        PRECISE_BN_NOTE,
        experiment_subsets,
        load_dataset,
        resolve_data,
        train_run,
    )

    data = load_dataset(resolve_data(s.data, ctx.data_root), ctx.data_root)
    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    ctx.seeds += [
        f"{ctx.seed}: training subset, every net's initialisation and data order",
        f"{ctx.seed + 1}: test subset",
    ]
    runs = {}
    for name in s.models:
        ctx.log(f"training {name} on {len(train_idx):,} {data.name} images")
        runs[name] = train_run(
            ctx,
            name,
            name,
            data=data,
            train_idx=train_idx,
            test_idx=test_idx,
            epochs=s.epochs,
            evals_per_epoch=s.evals_per_epoch,
            batch_size=s.batch_size,
            lr=s.lr,
            weight_decay=s.weight_decay,
            # He et al. sec. 4.2: lr / 10 at 32k and 48k of 64k iterations (50% and 75%).
            schedule="step",
            warmup_steps=round(s.warmup_epochs * len(train_idx) / s.batch_size),
            augment=s.augment,
            seed=ctx.seed,
        )

    result = ExperimentResult(
        name="degradation",
        title=EXPERIMENT.title,
        claim=EXPERIMENT.claim,
        source=EXPERIMENT.source,
    )
    final = {n: r.history[-1] for n, r in runs.items()}
    err = {n: 100 * (1 - f["train_top1"]) for n, f in final.items()}
    test_err = {n: 100 * (1 - f["test_top1"]) for n, f in final.items()}
    rows = []
    for n, r in runs.items():
        params = sum(p.numel() for p in r.model.parameters())
        rows.append([n, params, round(err[n], 2), round(test_err[n], 2), round(r.seconds, 1)])
    result.tables.append(
        Table(
            f"Final errors after {s.epochs} epoch(s) on {len(train_idx):,} {data.name} training images",
            ["net", "parameters", "training error (%)", "test error (%)", "training time (s)"],
            rows,
            "Training error: running error over the last evaluation interval (BatchNorm in training "
            "mode), as in He et al.'s Fig. 6; test error on the held-out test subset.",
        )
    )
    # Which pairs decide the claim: the nets of the paper's Fig. 6.
    have = set(runs)
    if {"plain20", "plain56"} <= have:
        held = err["plain56"] > err["plain20"]
        result.findings.append(
            Finding(
                "Degradation: the deeper plain net (Plain-56) trains to a higher training error than Plain-20",
                held,
                f"training error Plain-56 {err['plain56']:.2f}% vs Plain-20 {err['plain20']:.2f}% "
                f"(test error {test_err['plain56']:.2f}% vs {test_err['plain20']:.2f}%)",
            )
        )
    if {"resnet20", "resnet56"} <= have:
        held = err["resnet56"] <= err["resnet20"]
        result.findings.append(
            Finding(
                "Residual nets do not degrade: ResNet-56 trains at least as well as ResNet-20",
                held,
                f"training error ResNet-56 {err['resnet56']:.2f}% vs ResNet-20 {err['resnet20']:.2f}% "
                f"(test error {test_err['resnet56']:.2f}% vs {test_err['resnet20']:.2f}%)",
            )
        )
    if {"plain56", "resnet56"} <= have:
        held = err["resnet56"] < err["plain56"]
        result.findings.append(
            Finding(
                "Shortcuts fix the deep net: ResNet-56 trains to a lower error than Plain-56 (same parameters)",
                held,
                f"training error ResNet-56 {err['resnet56']:.2f}% vs Plain-56 {err['plain56']:.2f}%",
            )
        )
    if not all(f.held for f in result.findings):
        result.notes.append(
            f"These runs last {s.epochs} epoch(s) of {len(train_idx):,} images "
            f"({s.epochs * len(train_idx) // s.batch_size:,} steps at batch {s.batch_size}) against the "
            "paper's 64,000 steps on 50,000 CIFAR-10 images: the ordering of the curves can change "
            "later in training, and one seed does not measure the run-to-run spread."
        )
    result.notes.append(PRECISE_BN_NOTE)
    result.notes.append(
        "The 56-layer nets cost about three times the 20-layer ones per step (see the table), so "
        "at equal wall time the deep nets would have seen a third of the data."
    )
    result.data = {
        "dataset": data.name,
        "curves": {
            n: [
                {k: row[k] for k in ("epochs_seen", "train_top1", "test_top1", "train_loss", "test_loss")}
                for row in r.history
            ]
            for n, r in runs.items()
        },
    }
    result.figures.append(_plot(runs, ctx, data.name))
    return result


def _plot(runs: dict, ctx: Context, dataset: str) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    groups = [("plain", "Plain nets"), ("resnet", "ResNets")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colors = {"20": "tab:orange", "32": "tab:green", "44": "tab:purple", "56": "tab:red", "110": "tab:brown"}
    for ax, (prefix, title) in zip(axes, groups, strict=True):
        for name, r in runs.items():
            if not name.startswith(prefix):
                continue
            depth = name[len(prefix) :]
            x = [row["epochs_seen"] for row in r.history]
            color = colors.get(depth)
            ax.plot(
                x,
                [100 * (1 - row["train_top1"]) for row in r.history],
                "--",
                color=color,
                label=f"{name} train",
            )
            ax.plot(
                x, [100 * (1 - row["test_top1"]) for row in r.history], "-", color=color, label=f"{name} test"
            )
        ax.set_title(f"{title} on {dataset}")
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("error (%)")
    fig.tight_layout()
    save_png(fig, ctx.out / "errors.png")
    return Figure(
        "errors.png",
        "Training (dashed) and test (solid) error of the plain nets (left) and the ResNets (right), "
        "as in He et al. 2015, Fig. 6.",
    )


EXPERIMENT = Experiment(
    name="degradation",
    title="Degradation: deeper plain nets train worse, deeper ResNets better",
    claim="Deeper model does worse than shallow model! ... the deep model seems to be underfitting since it "
    "also performs worse than the shallow model on the training set. [ResNets are] able to train very deep "
    "networks without degrading.",
    source="He et al. 2015, arXiv:1512.03385, Fig. 6 (the course's lectures on residual networks)",
    budgets=BUDGETS,
    run=run,
    summary="Plain-20/56 vs ResNet-20/56: training and test error curves",
)
