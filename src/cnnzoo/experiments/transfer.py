"""Transfer learning: fine-tuning a pretrained net beats training from scratch on little data.

The lecture's exercise (its last slide): "What's the performance difference between the
model finetuned from a pretrained ResNet and that trained from scratch?" Here a CIFAR ResNet-20
is pretrained on Fashion-MNIST (clothes), then trained on labelled subsets of MNIST (digits) -
100 images, 1,000 images and all of them - once from the pretrained weights and once from
scratch. Both runs of a pair are identical except for the initial weights of the trunk: the
same classifier initialisation (a fresh 10-way head, as the same seed gives the scratch net),
the same subset, data order, optimizer, learning rate and number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "Settings"]


@dataclass(frozen=True)
class Settings:
    source: str = "fashion-mnist"
    target: str = "mnist"
    model: str = "resnet20"
    pretrain_size: int = 0  # training images of the source; 0: all
    pretrain_epochs: int = 1
    subset_sizes: tuple[int, ...] = (100, 1000, 0)  # labelled target images; 0: all
    steps: int = 150  # optimizer steps of every target run, fine-tuned or from scratch
    evals: int = 3  # test evaluations per target run
    batch_size: int = 64
    lr: float = 0.05  # the same for fine-tuning and scratch: only the initialisation differs
    weight_decay: float = 5e-4
    test_size: int = 0  # target test images; 0: all


BUDGETS = {
    "tiny": Settings(pretrain_size=128, subset_sizes=(16, 0), steps=4, evals=1, batch_size=16, test_size=64),
    "small": Settings(pretrain_size=6000, steps=100, evals=2),
    "full": Settings(pretrain_size=30000, pretrain_epochs=2, steps=300, evals=4),
    # Pretraining as He et al. 2015 (sec. 4.2) train their CIFAR ResNets: 64k iterations at batch
    # 128, i.e. 137 epochs of the 60,000 source images. Fine-tuning as Kornblith et al. 2019
    # (Do Better ImageNet Models Transfer Better?, arXiv:1805.08974, sec. 3): 20,000 steps at
    # batch 256 for every target run, fine-tuned or from scratch alike.
    "paper": Settings(pretrain_size=0, pretrain_epochs=137, steps=20000, evals=20, batch_size=256),
}


def _backbone_file(ctx: Context, s: Settings, pretrained, num_classes: int, in_chans: int):
    """The pretrained trunk with the classifier the scratch run starts from, as a weights file."""
    import torch

    from cnnzoo.registry import create_model
    from cnnzoo.weights import save_weights

    # The Trainer seeds torch with the run's seed right before building the model, so this is
    # the scratch run's exact initialisation; only its head is kept.
    torch.manual_seed(ctx.seed)
    fresh = create_model(s.model, num_classes=num_classes, in_chans=in_chans)
    state = pretrained.state_dict()
    own = fresh.state_dict()
    for k in (f"{fresh.head_name}.weight", f"{fresh.head_name}.bias"):
        state[k] = own[k]
    fresh.load_state_dict(state)
    return save_weights(fresh, ctx.out / "runs" / "pretrained-trunk.safetensors")


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.training import PRECISE_BN_NOTE, load_dataset, stratified_subset, train_run

    source = load_dataset(s.source, ctx.data_root)
    target = load_dataset(s.target, ctx.data_root)
    if source.info.in_chans != target.info.in_chans or source.info.image_size != target.info.image_size:
        raise ValueError(
            f"{s.source} and {s.target} have different image shapes; pick two datasets of one shape "
            "(fashion-mnist and mnist are both 1x28x28)"
        )
    ctx.seeds += [
        f"{ctx.seed}: source subset, all initialisations (the shared head too) and data orders",
        f"{ctx.seed + 1}: target test subset",
        f"{ctx.seed + 2}: the labelled target subsets (nested: each small one is in the next)",
    ]
    src_idx = stratified_subset(source.train[1], s.pretrain_size, ctx.seed)
    src_test = stratified_subset(source.test[1], 1000, ctx.seed + 1)
    ctx.log(f"pretraining {s.model} on {len(src_idx):,} {s.source} images")
    pre = train_run(
        ctx,
        f"pretrain-{s.source}",
        s.model,
        data=source,
        train_idx=src_idx,
        test_idx=src_test,
        epochs=s.pretrain_epochs,
        evals_per_epoch=1,
        batch_size=128,
        lr=0.1,
        weight_decay=s.weight_decay,
        seed=ctx.seed,
    )
    trunk = _backbone_file(ctx, s, pre.model, target.info.num_classes, target.info.in_chans)

    test_idx = stratified_subset(target.test[1], s.test_size, ctx.seed + 1)
    n_target = target.train[1].shape[0]
    # One stratified order of the whole set: its first n images are the n-image subset.
    order = stratified_subset(target.train[1], n_target, ctx.seed + 2)
    sizes = sorted({n if 0 < n < n_target else n_target for n in s.subset_sizes})
    runs: dict[tuple[int, str], object] = {}
    for n in sizes:
        for mode in ("fine-tuned", "scratch"):
            ctx.log(f"{mode}: {s.model} on {n:,} labelled {s.target} images, {s.steps} steps")
            runs[n, mode] = train_run(
                ctx,
                f"{s.target}-{n}-{mode}",
                s.model,
                data=target,
                train_idx=order[:n],
                test_idx=test_idx,
                steps=s.steps,
                evals=s.evals,
                batch_size=s.batch_size,
                lr=s.lr,
                weight_decay=s.weight_decay,
                seed=ctx.seed,
                pretrained=str(trunk) if mode == "fine-tuned" else None,
            )

    acc = {k: 100 * r.test_top1 for k, r in runs.items()}
    result = ExperimentResult(
        name="transfer", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    result.tables.append(
        Table(
            f"Pretraining on {s.source}",
            ["net", "images", "epochs", f"{s.source} test top-1 (%)", "training time (s)"],
            [
                [
                    s.model,
                    len(src_idx),
                    s.pretrain_epochs,
                    round(100 * pre.test_top1, 2),
                    round(pre.seconds, 1),
                ]
            ],
        )
    )
    rows = []
    for n in sizes:
        ft, sc = acc[n, "fine-tuned"], acc[n, "scratch"]
        rows.append([n, round(ft, 2), round(sc, 2), round(ft - sc, 2)])
    result.tables.append(
        Table(
            f"{s.target} test top-1 after {s.steps} steps (batch {s.batch_size}, lr {s.lr})",
            ["labelled images", "fine-tuned (%)", "from scratch (%)", "difference (points)"],
            rows,
            f"Test set: {len(test_idx):,} {s.target} test images.",
        )
    )
    small = [n for n in sizes if n < n_target]
    for n in small:
        ft, sc = acc[n, "fine-tuned"], acc[n, "scratch"]
        result.findings.append(
            Finding(
                f"With {n:,} labelled images, fine-tuning the pretrained net beats training from scratch",
                ft > sc,
                f"{ft:.2f}% vs {sc:.2f}% test top-1 ({ft - sc:+.2f} points)",
            )
        )
    if small and sizes[-1] == n_target:
        gap_small = acc[small[0], "fine-tuned"] - acc[small[0], "scratch"]
        gap_all = acc[n_target, "fine-tuned"] - acc[n_target, "scratch"]
        result.findings.append(
            Finding(
                "Pretraining matters most with the least labelled data",
                gap_small > gap_all,
                f"advantage {gap_small:+.2f} points with {small[0]:,} images vs {gap_all:+.2f} with all {n_target:,}",
            )
        )
    result.notes.append(PRECISE_BN_NOTE)
    result.notes.append(
        f"Every target run takes the same {s.steps} steps, so the smallest subsets are seen many times "
        f"over ({s.steps * min(s.batch_size, sizes[0]) // sizes[0]} passes over {sizes[0]:,} images) "
        "and the full set about "
        f"{s.steps * s.batch_size / n_target:.1f} times; one seed, so differences of a point or two are "
        "within run-to-run noise."
    )
    result.data = {
        "accuracy": {f"{n}/{mode}": a for (n, mode), a in acc.items()},
        "curves": {f"{n}/{mode}": [r["test_top1"] for r in runs[n, mode].history] for n, mode in runs},
        "pretrain_test_top1": pre.test_top1,
    }
    result.figures.append(_plot(runs, sizes, acc, s, ctx))
    return result


def _plot(runs, sizes, acc, s: Settings, ctx: Context) -> Figure:
    from cnnzoo.experiments.plots import log_axis, pyplot, save_png

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, style in (("fine-tuned", "o-"), ("scratch", "s--")):
        a1.plot(sizes, [acc[n, mode] for n in sizes], style, label=mode)
    log_axis(a1, "x")
    a1.set_xlabel(f"labelled {s.target} training images")
    a1.set_ylabel(f"{s.target} test top-1 (%)")
    a1.set_title(f"{s.model}: pretrained on {s.source} vs from scratch")
    a1.grid(alpha=0.3)
    a1.legend()
    for i, n in enumerate(sizes):
        for mode, style in (("fine-tuned", "-"), ("scratch", "--")):
            hist = runs[n, mode].history
            steps = [s.steps * (k + 1) / len(hist) for k in range(len(hist))]
            a2.plot(steps, [100 * r["test_top1"] for r in hist], style, color=f"C{i}", label=f"{n:,} {mode}")
    a2.set_xlabel("optimizer steps")
    a2.set_ylabel("test top-1 (%)")
    a2.set_title("test accuracy during training")
    a2.grid(alpha=0.3)
    # Under the panel: inside, six entries would hide the low curves of the smallest subset.
    a2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    save_png(fig, ctx.out / "accuracy.png")
    return Figure(
        "accuracy.png",
        f"Left: {s.target} test accuracy against the number of labelled images, fine-tuned from "
        f"{s.source} or trained from scratch. Right: the same runs during training.",
    )


EXPERIMENT = Experiment(
    name="transfer",
    title="Transfer: fine-tuning a pretrained net vs training from scratch",
    claim="Use ResNet for image classification ... you can either use the model pretrained ... or trained "
    "from scratch. What's the performance difference between the model finetuned from a pretrained ResNet "
    "and that trained from scratch? (Fine-tuning wins when labelled data are few.)",
    source="The course's assignment; Yosinski et al. 2014, arXiv:1411.1792",
    budgets=BUDGETS,
    run=run,
    summary="ResNet-20 pretrained on Fashion-MNIST, fine-tuned on 100 / 1,000 / all MNIST digits vs scratch",
)
