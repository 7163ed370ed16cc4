"""Lesion study: delete one block of a trained net at test time, residual vs plain.

Veit, Wilber, Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (arXiv:1605.06431), sec. 4 and Fig. 3: removing any single block from a trained
ResNet-110 at test time barely changes its CIFAR-10 error (the downsampling blocks cost more),
while removing any layer of a plain (VGG) net drops it to chance; Fig. 5: the ResNet's error
grows smoothly with the number of blocks removed.

Here a ResNet and its plain twin (the zoo's CIFAR nets: same convolutions, option-A shortcuts)
train with He et al.'s recipe shape and are selected on validation images; then each block is
deleted in turn from the selected weights and the test subset is read once per lesion. Deleting
a residual block keeps its shortcut (the identity, or option A's parameter-free subsample-and-pad
in a downsampling block), as in Veit et al.; since the block's input already went through a
ReLU, the shortcut alone is exactly what the block computes with its residual branch at zero.
Deleting a plain block replaces it by the identity, which its shape allows except in the first
block of the second and third stages (stride 2, twice the channels): those cannot be removed
from the plain net. BatchNorm statistics stay those of the intact net, as in the paper.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "Settings", "blocks", "deleted", "replacement"]


@dataclass(frozen=True)
class Settings:
    data: str = "auto"  # cifar10 when fetched, else fashion-mnist
    depth: int = 20  # the pair trained: ResNet-depth and Plain-depth
    train_size: int = 4000
    test_size: int = 1000
    epochs: float = 4
    evals_per_epoch: int = 1
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    samples: int = 3  # random sets of k deleted blocks per k (Veit et al. Fig. 5)


BUDGETS = {
    "tiny": Settings(train_size=128, test_size=64, epochs=1, evals_per_epoch=1, batch_size=32, samples=2),
    "small": Settings(train_size=2000, test_size=500, epochs=3),
    "full": Settings(),
    # Veit et al. trained ResNet-110 with He et al.'s CIFAR-10 schedule: batch 128, 64k iterations
    # (164 epochs of 45k images, 5k held out), lr 0.1 / 10 at 32k and 48k, weight decay 1e-4.
    "paper": Settings(depth=110, train_size=45000, test_size=10000, epochs=164, samples=5),
}


def blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks of a zoo ResNet (or plain twin) in depth order, as ("layerS.J", block)."""
    out = []
    for i in range(1, getattr(model, "num_stages", 0) + 1):
        stage = getattr(model, f"layer{i}")
        out += [(f"layer{i}.{j}", b) for j, b in enumerate(stage)]
    if not out:
        raise ValueError(f"{type(model).__name__} has no residual stages (layer1, layer2, ...)")
    return out


def replacement(block: nn.Module) -> nn.Module | None:
    """What a block becomes when deleted: its shortcut for a residual block, the identity for a
    plain block whose input and output shapes match, None when it cannot be removed."""
    if hasattr(block, "downsample"):  # a residual block: keep the shortcut path
        return block.downsample if block.downsample is not None else nn.Identity()
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    same = all(c.stride == (1, 1) for c in convs) and convs[0].in_channels == convs[-1].out_channels
    return nn.Identity() if same else None


@contextmanager
def deleted(model: nn.Module, names: Sequence[str]) -> Iterator[nn.Module]:
    """`model` with the named blocks replaced by `replacement`, restored on exit."""
    found = dict(blocks(model))
    saved = []
    try:
        for name in names:
            if name not in found:
                raise ValueError(f"no block {name!r}; the blocks are {', '.join(found)}")
            new = replacement(found[name])
            if new is None:
                raise ValueError(
                    f"block {name} changes the shape (stride 2, more channels): it cannot be removed"
                )
            stage, j = name.split(".")
            seq = getattr(model, stage)
            saved.append((seq, int(j), seq[int(j)]))
            seq[int(j)] = new
        yield model
    finally:
        for seq, j, block in reversed(saved):
            seq[j] = block


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.training import (
        PRECISE_BN_NOTE,
        accuracy,
        experiment_subsets,
        load_dataset,
        normalize,
        predict,
        resolve_data,
        train_run,
    )

    data = load_dataset(resolve_data(s.data, ctx.data_root), ctx.data_root)
    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    ctx.seeds += [
        f"{ctx.seed}: training subset, both nets' initialisation and data order",
        f"{ctx.seed + 1}: test subset",
        f"{ctx.seed + 4}: the random sets of deleted blocks",
    ]
    chance = 1 / data.info.num_classes
    tx = normalize(data.test[0][test_idx], data.info)
    ty = data.test[1][test_idx]
    kinds = {"resnet": f"resnet{s.depth}", "plain": f"plain{s.depth}"}
    runs = {}
    for name in kinds.values():
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
            schedule="step",  # He et al.: lr / 10 at 50% and 75% of the run
            warmup_steps=round(s.warmup_epochs * len(train_idx) / s.batch_size),
            seed=ctx.seed,
        )

    # One test reading per lesion, with the weights selected on validation.
    intact: dict[str, float] = {}
    single: dict[str, dict[str, float | None]] = {}
    for name in kinds.values():
        model = runs[name].model.eval()
        intact[name] = accuracy(predict(model, tx), ty)
        single[name] = {}
        for b, block in blocks(model):
            if replacement(block) is None:
                single[name][b] = None
                continue
            with deleted(model, [b]):
                single[name][b] = accuracy(predict(model, tx), ty)
        ctx.log(f"  {name}: intact {100 * intact[name]:.1f}%, {len(single[name])} single-block lesions")

    # Veit et al. Fig. 5: k blocks deleted at once, drawn at random among the blocks both nets can lose.
    res_name, plain_name = kinds["resnet"], kinds["plain"]
    shared = [b for b, acc in single[plain_name].items() if acc is not None]
    rng = random.Random(ctx.seed + 4)
    ks = sorted({k for k in (1, 2, 3, 4, 6, 8, 12, 16, 24) if k <= len(shared)})
    multi: dict[str, dict[int, list[float]]] = {n: {} for n in kinds.values()}
    for k in ks:
        draws = [rng.sample(shared, k) for _ in range(s.samples)]
        for name in kinds.values():
            model = runs[name].model
            accs = []
            for names in draws:
                with deleted(model, names):
                    accs.append(accuracy(predict(model, tx), ty))
            multi[name][k] = accs

    result = ExperimentResult(
        name="lesion", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )

    def kept(name: str, acc: float) -> float:
        # The share of the intact net's above-chance accuracy a lesioned net keeps.
        return (acc - chance) / max(intact[name] - chance, 1e-9)

    rows = []
    for b, _ in blocks(runs[res_name].model):
        ra, pa = single[res_name][b], single[plain_name][b]
        rows.append(
            [
                b,
                "yes" if single[plain_name][b] is None else "no",
                round(100 * (1 - ra), 2),
                "cannot be removed" if pa is None else round(100 * (1 - pa), 2),
            ]
        )
    result.tables.append(
        Table(
            f"Test error (%) with one block deleted; intact: {res_name} {100 * (1 - intact[res_name]):.2f}%, "
            f"{plain_name} {100 * (1 - intact[plain_name]):.2f}%",
            ["deleted block", "downsampling", f"{res_name} error (%)", f"{plain_name} error (%)"],
            rows,
            f"{len(ty):,} {data.name} test images, read once per lesion with the weights selected on "
            f"validation; chance is {100 * (1 - chance):.0f}% error.",
        )
    )
    result.tables.append(
        Table(
            f"Test error (%) with k random blocks deleted (mean over {s.samples} draws among the "
            "non-downsampling blocks)",
            ["k", f"{res_name} error (%)", f"{plain_name} error (%)"],
            [
                [
                    k,
                    round(100 * (1 - _mean(multi[res_name][k])), 2),
                    round(100 * (1 - _mean(multi[plain_name][k])), 2),
                ]
                for k in ks
            ],
        )
    )

    res_kept = {b: kept(res_name, single[res_name][b]) for b in shared}
    plain_kept = {b: kept(plain_name, single[plain_name][b]) for b in shared}
    mean_res, mean_plain = _mean(list(res_kept.values())), _mean(list(plain_kept.values()))
    down = [b for b in single[plain_name] if single[plain_name][b] is None]
    res_err = [100 * (1 - single[res_name][b]) for b in shared]
    plain_err = [100 * (1 - single[plain_name][b]) for b in shared]
    near_chance = sum(single[plain_name][b] < chance + 0.05 for b in shared)
    result.findings.append(
        Finding(
            f"The ResNet degrades smoothly: deleting one non-downsampling block keeps on average at least "
            f"half of {res_name}'s above-chance accuracy",
            mean_res >= 0.5,
            f"kept {100 * mean_res:.0f}% on average over {len(shared)} lesions; test error "
            f"{min(res_err):.1f}% to {max(res_err):.1f}% against {100 * (1 - intact[res_name]):.1f}% intact",
        )
    )
    result.findings.append(
        Finding(
            f"The plain net collapses: deleting one block loses on average more than half of {plain_name}'s "
            "above-chance accuracy",
            mean_plain < 0.5,
            f"kept {100 * mean_plain:.0f}% on average; test error {min(plain_err):.1f}% to {max(plain_err):.1f}% "
            f"against {100 * (1 - intact[plain_name]):.1f}% intact; {near_chance} of {len(shared)} lesions "
            f"within 5 points of chance ({100 * chance:.0f}% accuracy)",
        )
    )
    better = sum(res_kept[b] > plain_kept[b] for b in shared)
    result.findings.append(
        Finding(
            "Block by block, the ResNet keeps more of its accuracy than the plain net",
            better == len(shared),
            f"{better} of {len(shared)} blocks",
        )
    )
    if down:
        result.notes.append(downsampling_note(single, res_name, plain_name))
    result.notes.append(
        f"{s.depth} layers ({len(shared) + len(down)} blocks) against Veit et al.'s ResNet-110 (54 blocks): "
        "each block of a shallow net is a larger share of it, and a run this short is far from the paper's "
        "64,000 steps; one seed."
    )
    result.notes.append(PRECISE_BN_NOTE + " A lesioned net keeps the intact net's statistics.")
    result.data = {
        "dataset": data.name,
        "chance": chance,
        "intact": intact,
        "single": single,
        "multi": {n: {str(k): v for k, v in m.items()} for n, m in multi.items()},
        "val_top1": {n: r.val_top1 for n, r in runs.items()},
    }
    result.figures.append(_plot(single, intact, multi, chance, ctx, data.name, res_name, plain_name))
    return result


def downsampling_note(single: dict[str, dict[str, float | None]], res_name: str, plain_name: str) -> str:
    """What deleting the downsampling blocks (those the plain net cannot lose) did to the ResNet,
    against Veit et al.'s finding and the costliest deletion here."""
    down = [b for b, acc in single[plain_name].items() if acc is None]
    errs = {b: 100 * (1 - acc) for b, acc in single[res_name].items() if acc is not None}
    worst = max(errs, key=errs.get)
    return (
        f"The downsampling blocks ({', '.join(down)}) cannot be removed from the plain net (stride 2, twice "
        "the channels). Deleted from the ResNet, where option A's shortcut subsamples and pads, they give "
        + ", ".join(f"{b} {errs[b]:.1f}%" for b in down)
        + " test error. In Veit et al.'s ResNet-110 they were the only single deletions with a noticeable "
        f"cost (the peaks of their Fig. 3); here the costliest single deletion is {worst} ({errs[worst]:.1f}%)."
    )


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _plot(
    single, intact, multi, chance, ctx: Context, dataset: str, res_name: str, plain_name: str
) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    names = list(single[res_name])
    xs = range(len(names))
    style = {res_name: ("tab:blue", "o"), plain_name: ("tab:red", "s")}
    for name in (res_name, plain_name):
        color, marker = style[name]
        errs = [None if single[name][b] is None else 100 * (1 - single[name][b]) for b in names]
        pts = [(x, e) for x, e in zip(xs, errs, strict=True) if e is not None]
        ax.plot(
            [p[0] for p in pts], [p[1] for p in pts], marker, color=color, label=f"{name}, one block deleted"
        )
        ax.axhline(100 * (1 - intact[name]), color=color, ls="--", lw=1, label=f"{name} intact")
    for x, b in zip(xs, names, strict=True):
        if single[plain_name][b] is None:
            ax.axvspan(x - 0.4, x + 0.4, color="0.85", lw=0)
    ax.axhline(100 * (1 - chance), color="0.4", ls=":", lw=1, label="chance")
    ax.set_xticks(list(xs), names, rotation=60, fontsize=7)
    ax.set_xlabel("deleted block")
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Deleting one block ({dataset}; grey: downsampling)")
    ax.grid(alpha=0.3)
    for name in (res_name, plain_name):
        color, marker = style[name]
        ks = sorted(multi[name])
        ax2.plot(ks, [100 * (1 - _mean(multi[name][k])) for k in ks], marker + "-", color=color, label=name)
    ax2.axhline(100 * (1 - chance), color="0.4", ls=":", lw=1, label="chance")
    ax2.set_xlabel("blocks deleted at random")
    ax2.set_ylabel("test error (%)")
    ax2.set_ylim(0, 100)
    ax2.set_title("Deleting several blocks (mean of draws)")
    ax2.legend(fontsize=7, loc="lower right")
    ax2.grid(alpha=0.3)
    # Below the panels: inside, the legend hid lesioned points whatever corner it took.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_png(fig, ctx.out / "lesion.png")
    return Figure(
        "lesion.png",
        "Test error after deleting one block (left; grey: downsampling blocks, which the plain net cannot "
        "lose) and several random blocks (right), as in Veit et al. 2016, Figs. 3 and 5.",
    )


EXPERIMENT = Experiment(
    name="lesion",
    title="Lesion study: a ResNet survives losing a block, a plain net does not",
    claim="Residual networks behave like ensembles of relatively shallow networks: deleting a single "
    "block at test time barely hurts a ResNet, while deleting a layer of a plain net sends it to chance.",
    source="Veit, Wilber, Belongie 2016, arXiv:1605.06431, Figs. 3 and 5 (the course's lectures on "
    "residual networks)",
    budgets=BUDGETS,
    run=run,
    summary="ResNet-20 vs Plain-20: test error with each block deleted at test time",
)
