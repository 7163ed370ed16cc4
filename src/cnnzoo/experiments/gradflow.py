"""Gradient flow: how much gradient reaches the first layers of plain and residual nets.

The lectures' claim "ResBlocks help the gradient backpropagation" (He et al. 2015,
arXiv:1512.03385; the identity path of a block passes the gradient back unchanged, He et al.
2016, arXiv:1603.05027, eq. 5). Measured here on the zoo's CIFAR nets, Plain-20/56/110 and their
twins ResNet-20/56/110 (option-A shortcuts: same convolutions, same parameters): every conv
layer's weight-gradient norm, in depth order, for one fixed batch of training images and the
cross-entropy loss, once at initialisation and once after a short training run with He et al.'s
recipe shape (SGD 0.1, momentum 0.9, weight decay 1e-4, lr / 10 at 50% and 75%, a linear
warm-up over the first steps for every net).

What decides the findings is the *first-to-last ratio*: the mean gradient norm of the first
three conv layers (the stem and the first block) over that of the last two (the last block).
Those five layers have the same shapes in all six nets, so the ratio compares depths and the
two kinds of net without a width effect. The nets keep BatchNorm, as the papers' nets do, and
backpropagate in training mode (batch statistics), as training does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "Settings", "conv_grad_norms", "first_last_ratio"]

FIRST, LAST = 3, 2  # conv layers averaged at each end: the stem + first block, and the last block


@dataclass(frozen=True)
class Settings:
    data: str = "auto"  # cifar10 when fetched, else fashion-mnist
    depths: tuple[int, ...] = (20, 56, 110)
    batch: int = 128  # the fixed batch the norms are measured on
    train_size: int = 2000
    test_size: int = 200
    steps: int = 40  # training steps before the second measurement
    evals: int = 1
    batch_size: int = 32
    lr: float = 0.1
    weight_decay: float = 1e-4
    warmup_steps: int = 10


BUDGETS = {
    "tiny": Settings(
        depths=(20, 32), batch=16, train_size=128, test_size=64, steps=2, evals=1, batch_size=16
    ),
    "small": Settings(depths=(20, 56), steps=20),
    "full": Settings(),
    # He et al. 2015 sec. 4.2: batch 128, 64k iterations, lr 0.1 / 10 at 32k and 48k, weight decay
    # 1e-4, on CIFAR-10 (45k/5k train/val split); warm-up as their ResNet-110 (0.01 for ~400 its).
    "paper": Settings(
        train_size=45000, test_size=10000, steps=64000, evals=160, batch_size=128, warmup_steps=400
    ),
}


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The conv layers of `model` in the order they are registered (for the zoo's ResNets: depth order)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def conv_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The L2 norm of d(cross-entropy)/d(weight) of every conv layer, in depth order, for one batch.

    The model backpropagates in training mode (BatchNorm on batch statistics), as in training; its
    gradients are cleared afterwards and its train/eval mode restored.
    """
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    norms = [float(m.weight.grad.norm()) for _, m in conv_layers(model)]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return norms


def first_last_ratio(norms: list[float], first: int = FIRST, last: int = LAST) -> float:
    """Mean norm of the first `first` layers over the mean of the last `last` ones."""
    if len(norms) < first + last:
        raise ValueError(f"need at least {first + last} layers, got {len(norms)}")
    return (sum(norms[:first]) / first) / (sum(norms[-last:]) / last)


def _snapshot_bn(model: nn.Module) -> dict[str, torch.Tensor]:
    # A measurement in training mode updates BatchNorm's running statistics; they are put back.
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """`conv_grad_norms` that leaves the model's BatchNorm statistics as they were."""
    saved = _snapshot_bn(model)
    norms = conv_grad_norms(model, x, y)
    model.load_state_dict(saved, strict=False)
    return norms


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.training import (
        experiment_subsets,
        load_dataset,
        normalize,
        resolve_data,
        stratified_subset,
        train_run,
    )
    from cnnzoo.registry import create_model
    from cnnzoo.train import NonFiniteLossError

    data = load_dataset(resolve_data(s.data, ctx.data_root), ctx.data_root)
    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    # The measuring batch: training images the runs do not train on, the same for every net.
    pool = torch.ones(data.train[1].shape[0], dtype=torch.bool)
    pool[train_idx] = False
    outside = pool.nonzero().flatten()
    pick = outside[stratified_subset(data.train[1][outside], s.batch, ctx.seed + 3)]
    xb, yb = normalize(data.train[0][pick], data.info), data.train[1][pick]
    ctx.seeds += [
        f"{ctx.seed}: training subset, every net's initialisation and data order",
        f"{ctx.seed + 1}: test subset",
        f"{ctx.seed + 3}: the measuring batch ({s.batch} training images outside the training subset)",
    ]
    in_chans, classes = data.info.in_chans, data.info.num_classes

    names = [f"{kind}{d}" for kind in ("plain", "resnet") for d in s.depths]
    init: dict[str, list[float]] = {}
    trained: dict[str, list[float]] = {}
    runs = {}
    diverged: dict[str, str] = {}
    for name in names:
        torch.manual_seed(ctx.seed)
        model = create_model(name, num_classes=classes, in_chans=in_chans)
        init[name] = measure(model, xb, yb)
        ctx.log(f"training {name} for {s.steps} steps on {len(train_idx):,} {data.name} images")
        try:
            runs[name] = train_run(
                ctx,
                name,
                model,
                data=data,
                train_idx=train_idx,
                test_idx=test_idx,
                steps=s.steps,
                evals=s.evals,
                batch_size=s.batch_size,
                lr=s.lr,
                weight_decay=s.weight_decay,
                schedule="step",
                warmup_steps=s.warmup_steps,
                seed=ctx.seed,
            )
        except NonFiniteLossError as e:
            # A net whose loss blew up has no trained gradients to measure; the report says so.
            ctx.log(f"  {name} diverged: {e}")
            diverged[name] = str(e).split(";")[0]
            continue
        trained[name] = measure(runs[name].model, xb, yb)

    result = ExperimentResult(
        name="gradflow", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    ratio_init = {n: first_last_ratio(v) for n, v in init.items()}
    ratio_trained = {n: first_last_ratio(v) for n, v in trained.items()}
    rows = []
    for n in names:
        if n in diverged:
            rows.append(
                [
                    n,
                    len(init[n]),
                    f"{ratio_init[n]:.3g}",
                    "diverged",
                    f"{init[n][0]:.3g}",
                    f"{init[n][-1]:.3g}",
                    "-",
                    "-",
                ]
            )
            continue
        r = runs[n]
        rows.append(
            [
                n,
                len(init[n]),
                f"{ratio_init[n]:.3g}",
                f"{ratio_trained[n]:.3g}",
                f"{init[n][0]:.3g}",
                f"{init[n][-1]:.3g}",
                round(100 * r.val_top1, 1),
                round(100 * r.test_top1, 1),
            ]
        )
    result.tables.append(
        Table(
            f"First-to-last gradient ratio at initialisation and after {s.steps} training steps",
            [
                "net",
                "conv layers",
                "ratio at init",
                "ratio trained",
                "stem grad norm (init)",
                "last conv grad norm (init)",
                "val top-1 (%)",
                "test top-1 (%)",
            ],
            rows,
            f"Ratio: mean weight-gradient norm of the first {FIRST} conv layers (stem and first block) "
            f"over that of the last {LAST} (the last block), on one fixed batch of {s.batch} "
            f"{data.name} training images. Accuracies: the trained weights selected on validation.",
        )
    )
    _findings(result, s.depths, ratio_init, "at initialisation")
    _findings(result, s.depths, ratio_trained, f"after {s.steps} training steps", diverged)
    result.notes += depth_notes(ratio_init, ratio_trained, s.depths, s.steps)
    result.notes.append(
        f"The trained measurement follows {s.steps} steps at batch {s.batch_size} against He et al.'s "
        "64,000 at batch 128: a net that has not learned yet (see its accuracy) is measured near its "
        "initialisation. One seed and one batch: the ratios are not averaged over runs."
    )
    result.notes.append(
        "The nets keep BatchNorm after every conv, as the papers' nets do, so a plain net's gradient is "
        "rescaled at every layer: what depth does to it is measured here, not assumed (without "
        "normalisation see the batchnorm experiment)."
    )
    result.data = {
        "dataset": data.name,
        "layers": {n: [c for c, _ in conv_layers(create_model(n, num_classes=classes))] for n in names},
        "diverged": diverged,
        "init": init,
        "trained": trained,
        "ratio_init": ratio_init,
        "ratio_trained": ratio_trained,
    }
    result.figures.append(_plot(init, trained, s, ctx, data.name))
    return result


def depth_notes(
    ratio_init: dict[str, float], ratio_trained: dict[str, float], depths: tuple[int, ...], steps: int
) -> list[str]:
    """Where the plain nets' ratio *grows* with depth: the gradient explodes backward, it does not
    vanish; said with the spread of both kinds of net across depths."""
    ds = sorted(depths)
    notes = []
    for ratio, when in ((ratio_init, "At initialisation"), (ratio_trained, f"After {steps} steps")):
        if len(ds) < 2 or not all(f"{k}{d}" in ratio for k in ("plain", "resnet") for d in ds):
            continue
        plain = [ratio[f"plain{d}"] for d in ds]
        res = [ratio[f"resnet{d}"] for d in ds]
        if not all(b > a for a, b in itertools.pairwise(plain)):
            continue
        notes.append(
            f"{when} the plain nets' first layers receive *more* gradient relative to the last the deeper the "
            f"net (first-to-last ratio {plain[0]:.3g} at {ds[0]} layers, {plain[-1]:.3g} at {ds[-1]}), not less: "
            "with BatchNorm after every conv, a deep plain net's gradient explodes on its way back rather "
            "than vanishing (Yang et al. 2019, A Mean Field Theory of Batch Normalization, arXiv:1902.08129). "
            f"The ResNets' ratio spans a factor {max(res) / min(res):.3g} from {ds[0]} to {ds[-1]} layers, the "
            f"plain nets' a factor {max(plain) / min(plain):.3g}."
        )
    return notes


def _findings(
    result: ExperimentResult,
    depths: tuple[int, ...],
    ratio: dict[str, float],
    when: str,
    diverged: dict[str, str] | None = None,
) -> None:
    ds = sorted(depths)
    if len(ds) < 2:
        return
    if diverged:
        result.findings.append(
            Finding(
                f"Every net trains without diverging, so that the ratios {when} can be compared",
                False,
                "; ".join(f"{n}: {why}" for n, why in diverged.items()),
            )
        )
        return
    plain = [ratio[f"plain{d}"] for d in ds]
    res = [ratio[f"resnet{d}"] for d in ds]
    fmt = ", ".join
    result.findings.append(
        Finding(
            f"Plain nets {when}: the first layers' gradient relative to the last shrinks with depth",
            all(a > b for a, b in itertools.pairwise(plain)),
            "first-to-last ratio " + fmt(f"Plain-{d} {r:.3g}" for d, r in zip(ds, plain, strict=True)),
        )
    )
    # "Does not shrink": no deeper ResNet falls below half of the shallowest one's ratio.
    result.findings.append(
        Finding(
            f"Residual nets {when}: it does not shrink with depth (every deeper ResNet keeps at least "
            "half of ResNet-" + f"{ds[0]}'s ratio)",
            all(r >= res[0] / 2 for r in res[1:]),
            "first-to-last ratio " + fmt(f"ResNet-{d} {r:.3g}" for d, r in zip(ds, res, strict=True)),
        )
    )


def _plot(
    init: dict[str, list[float]], trained: dict[str, list[float]], s: Settings, ctx: Context, dataset: str
) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = dict(zip(sorted(s.depths), ("tab:orange", "tab:red", "tab:brown", "tab:purple"), strict=False))
    for ax, (norms, when) in zip(
        axes, ((init, "at initialisation"), (trained, f"after {s.steps} steps")), strict=True
    ):
        for name, v in norms.items():
            plain = name.startswith("plain")
            depth = int(name.removeprefix("plain").removeprefix("resnet"))
            ax.plot(
                range(1, len(v) + 1),
                v,
                "--" if plain else "-",
                color=colors.get(depth),
                label=f"{'Plain' if plain else 'ResNet'}-{depth}",
            )
        ax.set_yscale("log")
        ax.set_title(f"{when} ({dataset})")
        ax.set_xlabel("conv layer (1 = stem)")
        ax.set_ylabel("weight-gradient norm")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    save_png(fig, ctx.out / "gradients.png")
    return Figure(
        "gradients.png",
        "Weight-gradient norm of every conv layer (log scale) of the plain nets (dashed) and the ResNets "
        "(solid), on one fixed batch, at initialisation (left) and after training (right).",
    )


EXPERIMENT = Experiment(
    name="gradflow",
    title="Gradient flow: shortcuts carry the gradient back to the first layers",
    claim="ResBlocks help the gradient backpropagation: the identity shortcut passes the gradient "
    "straight back, so the first layers of a deep residual net still receive it.",
    source="He et al. 2015, arXiv:1512.03385 and He et al. 2016, arXiv:1603.05027, eq. 5 (the course's "
    "lectures on residual networks)",
    budgets=BUDGETS,
    run=run,
    summary="Per-layer gradient norms of Plain-20/56/110 vs ResNet-20/56/110, at init and trained",
)
