"""Pre-activation vs post-activation ResNet at equal depth.

He et al. 2016 (Identity Mappings in Deep Residual Networks, arXiv:1603.05027), sec. 4.1: moving
BN and ReLU in front of each residual branch's convolutions ("full pre-activation") leaves the
shortcut path an identity from block to block, and on CIFAR-10 it lowered the test error of
ResNet-110 from 6.61% to 6.37% and of ResNet-164 from 5.93% to 5.46%. Their Fig. 6 shows both
effects the lecture's "pre-activation block" slide stands for: the pre-activation net is easier
to optimise (its training loss falls faster early on) and, with every conv's input normalised,
generalises better.

Here the zoo's `resnet56` with 1x1 projection shortcuts (option B) and `preact_resnet56` - the
same convolutions and FC, only the order of BN, ReLU and conv differs - train with one recipe
(He et al. 2015's shape: SGD, momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 50% and
75% of the run, a linear warm-up over the first half epoch) on a subset of Fashion-MNIST
(CIFAR-10 when its files are in the cache). Weights are selected on validation images held out
of the training set; the test subset is read for the curves and once for the selected weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "Settings"]


@dataclass(frozen=True)
class Settings:
    data: str = "auto"  # cifar10 when fetched, else fashion-mnist
    original: str = "resnet56"  # post-activation: conv-BN-ReLU, ReLU after the addition
    preact: str = "preact_resnet56"  # BN-ReLU-conv, nothing after the addition
    shortcut: str = "B"  # both nets project where the shape changes, so only the order differs
    train_size: int = 4000
    test_size: int = 1000
    epochs: float = 2
    evals_per_epoch: int = 4
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5  # linear, for both nets alike
    augment: str | None = None


BUDGETS = {
    "tiny": Settings(train_size=128, test_size=64, epochs=1, evals_per_epoch=2, batch_size=32),
    "small": Settings(train_size=2000, test_size=1000, epochs=2, evals_per_epoch=4),
    "full": Settings(train_size=3000, test_size=1000, epochs=3, evals_per_epoch=2),
    # He et al. 2016, sec. 4 (the 2015 paper's CIFAR recipe): ResNet-110 pair, batch 128, lr 0.1
    # divided by 10 at 32k and 48k of 64k iterations (164 epochs of 50k images; here a tenth is
    # held out for validation), weight decay 1e-4, momentum 0.9, 4-pixel padding with random
    # crops and flips; the 2015 paper warms ResNet-110 up at 0.01 for about 400 iterations (here
    # linearly over one epoch, 352 iterations). Days on a CPU: for a machine with a GPU.
    "paper": Settings(
        data="cifar10",
        original="resnet110",
        preact="preact_resnet110",
        train_size=0,
        test_size=0,
        epochs=164,
        evals_per_epoch=1,
        warmup_epochs=1.0,
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
        f"{ctx.seed}: training subset, validation subset (with {ctx.seed + 2}), both nets' "
        "initialisation and data order",
        f"{ctx.seed + 1}: test subset",
    ]
    nets = {"original": s.original, "pre-activation": s.preact}
    runs = {}
    for kind, name in nets.items():
        ctx.log(f"training {name} ({kind}) on {len(train_idx):,} {data.name} images")
        runs[kind] = train_run(
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
            # He et al. 2015 sec. 4.2: lr / 10 at 32k and 48k of 64k iterations (50% and 75%).
            schedule="step",
            warmup_steps=round(s.warmup_epochs * len(train_idx) / s.batch_size),
            augment=s.augment,
            seed=ctx.seed,
            model_kwargs={"shortcut": s.shortcut},
        )

    result = ExperimentResult(
        name="preact", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    train_err = {k: 100 * (1 - r.train_top1) for k, r in runs.items()}
    loss = {k: r.history[-1]["train_loss"] for k, r in runs.items()}
    val_err = {k: 100 * (1 - r.val_top1) for k, r in runs.items()}
    test_err = {k: 100 * (1 - r.test_top1) for k, r in runs.items()}
    rows = []
    for k, r in runs.items():
        rows.append(
            [
                f"{nets[k]} ({k})",
                sum(p.numel() for p in r.model.parameters()),
                round(train_err[k], 2),
                round(loss[k], 4),
                int(r.final["best_epoch"]),
                round(val_err[k], 2),
                round(test_err[k], 2),
                round(r.seconds, 1),
            ]
        )
    epochs_seen = runs["original"].history[-1]["epochs_seen"]
    result.tables.append(
        Table(
            f"{nets['original']} vs {nets['pre-activation']} after {epochs_seen:g} epoch(s) on {len(train_idx):,} "
            f"{data.name} images",
            [
                "net",
                "parameters",
                "training error (%)",
                "training loss",
                "selected evaluation",
                "validation error (%)",
                "test error (%)",
                "training time (s)",
            ],
            rows,
            "Training error and loss: running averages over the last evaluation interval (BatchNorm in "
            "training mode). Validation and test error: the weights of the evaluation with the best "
            "validation accuracy (of "
            f"{len(runs['original'].history)}); the test subset is read once for them.",
        )
    )
    o, p = "original", "pre-activation"
    result.findings.append(
        Finding(
            f"Pre-activation eases optimisation: {nets['pre-activation']} trains to a training error no higher than "
            f"{nets['original']} at equal depth",
            train_err[p] <= train_err[o],
            f"training error {train_err[p]:.2f}% vs {train_err[o]:.2f}% (training loss {loss[p]:.4f} vs "
            f"{loss[o]:.4f})",
        )
    )
    result.findings.append(
        Finding(
            f"... and generalises at least as well: its test error (weights selected on validation) is no "
            f"higher than {nets['original']}'s",
            test_err[p] <= test_err[o],
            f"test error {test_err[p]:.2f}% vs {test_err[o]:.2f}% (validation error {val_err[p]:.2f}% vs "
            f"{val_err[o]:.2f}%)",
        )
    )
    gap = abs(test_err[p] - test_err[o])
    n_test = len(test_idx)
    # Binomial standard error of one error rate near e on n images: sqrt(e (1 - e) / n).
    mean_err = (test_err[p] + test_err[o]) / 200
    se = 100 * (mean_err * (1 - mean_err) / max(n_test, 1)) ** 0.5
    result.notes.append(
        f"The test errors differ by {gap:.2f} points on {n_test:,} images, where one error rate's binomial "
        f"standard error is about {se:.2f} points; one seed per net measures no run-to-run spread. He et "
        "al.'s gains were 0.24 points (ResNet-110) and 0.47 (ResNet-164) on CIFAR-10, after 64,000 "
        f"iterations; these runs last {round(s.epochs * len(train_idx)) // min(s.batch_size, len(train_idx)):,} iterations."
    )
    result.notes.append(
        "Both nets use 1x1 projection shortcuts where the shape changes (option B), so they hold the same "
        "convolutions and FC weights; the pre-activation net has one more BatchNorm (before the pooling) "
        "and none after its stem."
    )
    result.notes.append(PRECISE_BN_NOTE)
    result.data = {
        "dataset": data.name,
        "nets": nets,
        "curves": {
            k: [
                {c: row[c] for c in ("epochs_seen", "train_top1", "train_loss", "val_top1", "test_top1")}
                for row in r.history
            ]
            for k, r in runs.items()
        },
    }
    result.figures.append(_plot(runs, nets, ctx, data.name))
    return result


def _plot(runs: dict, nets: dict[str, str], ctx: Context, dataset: str) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"original": "tab:blue", "pre-activation": "tab:red"}
    for kind, r in runs.items():
        x = [row["epochs_seen"] for row in r.history]
        label = f"{nets[kind]} ({kind})"
        a1.plot(x, [row["train_loss"] for row in r.history], "-", color=colors[kind], label=label)
        a2.plot(
            x,
            [100 * (1 - row["train_top1"]) for row in r.history],
            "--",
            color=colors[kind],
            label=f"{label} train",
        )
        a2.plot(
            x,
            [100 * (1 - row["test_top1"]) for row in r.history],
            "-",
            color=colors[kind],
            label=f"{label} test",
        )
    a1.set_ylabel("training loss")
    a1.set_title(f"Training loss on {dataset}")
    a2.set_ylabel("error (%)")
    a2.set_title("Training (dashed) and test (solid) error")
    for ax in (a1, a2):
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, ctx.out / "curves.png")
    return Figure(
        "curves.png",
        "Left: training loss of the original (post-activation) and the pre-activation ResNet of equal "
        "depth. Right: their training (dashed) and test (solid) error, as in He et al. 2016, Fig. 6.",
    )


EXPERIMENT = Experiment(
    name="preact",
    title="Pre-activation ResNet: BN-ReLU before the convolutions trains at least as well",
    claim="Note ReLU after residual: cannot actually learn identity function since outputs are nonnegative! "
    "Note ReLU inside residual: can learn true identity function by setting Conv weights to zero! "
    "(The 'pre-activation' ResNet block; He et al. 2016: easier to optimise, and it generalises better.)",
    source="He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027, sec. 4.1 and "
    "Fig. 6 (the course's lecture on residual networks)",
    budgets=BUDGETS,
    run=run,
    summary="ResNet-56 vs pre-activation ResNet-56 (same convs): training and test error",
)
