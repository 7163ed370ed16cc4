"""Batch normalization: the same deep plain net trains with BatchNorm and struggles without it.

Ioffe & Szegedy 2015 (arXiv:1502.03167): normalising every layer's pre-activations over the batch
lets deep nets train with higher learning rates and far fewer steps (sec. 4.2: their BN-Inception
reached the baseline's accuracy in 14 times fewer steps); the lectures put it as "with BN we can
train 10+ layers". Here the net is He et al.'s plain CIFAR net (arXiv:1512.03385 sec. 4.2, the
zoo's `plain20`/`plain56`: a 3x3 stem, three stages of 3x3 convs at 16/32/64 channels, global
average pooling, one linear layer) built twice from one class: conv-BN-ReLU, and conv(+bias)-ReLU
with the BatchNorms left out. Both start from the same conv and classifier weights (He et al.'s
normal on the fan-out, the init designed for deep ReLU nets without normalisation).

Three arms per depth, one recipe (SGD with momentum 0.9, weight decay 1e-4, the same linear
warm-up and step schedule, the same data order): with BN at lr 0.1, without BN at lr 0.1, and
without BN at lr 0.01, the fair arm for a net that has no normalisation to keep a large rate
stable. Runs are selected on validation images; a run whose loss becomes NaN or infinite is
reported as diverged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "PlainStack", "Settings", "signal_rms"]


class PlainStack(nn.Module):
    """He et al.'s plain (6n+2)-layer CIFAR net, with or without BatchNorm after every conv.

    With `bn=True` it is the zoo's `plain{depth}` layer for layer (same parameters in the same
    order); with `bn=False` each conv gets a bias instead, as a conv without normalisation has.
    """

    def __init__(self, depth: int, *, bn: bool, in_chans: int = 3, num_classes: int = 10, seed: int = 0):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 56, ...), got {depth}")
        n = (depth - 2) // 6
        layers: list[nn.Module] = []
        plan = [(in_chans, 16, 1)]
        c = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for j in range(2 * n):
                plan.append((c, width, stride if j == 0 else 1))
                c = width
        for cin, cout, stride in plan:
            layers.append(nn.Conv2d(cin, cout, 3, stride, 1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.depth, self.bn = depth, bn
        self._init(seed)

    def _init(self, seed: int) -> None:
        # Drawn from one generator, so that the BN and no-BN nets of a seed share every conv and
        # classifier weight: the arms differ in the BatchNorms only.
        g = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                # PyTorch's default Linear init, drawn from the generator.
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@torch.no_grad()
def signal_rms(model: PlainStack, x: torch.Tensor) -> list[float]:
    """Root-mean-square of the activations after every ReLU of `model`, in depth order (train mode,
    as the first steps see them)."""
    was = model.training
    model.train()
    out = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            out.append(float(x.pow(2).mean().sqrt()))
    model.train(was)
    return out


@dataclass(frozen=True)
class Settings:
    data: str = "auto"  # cifar10 when fetched, else fashion-mnist
    depths: tuple[int, ...] = (20, 32)
    train_size: int = 4000
    test_size: int = 500
    steps: int = 100
    evals: int = 5
    batch_size: int = 64
    lr: float = 0.1  # the BN arm's, and the first no-BN arm's
    low_lr: float = 0.01  # the second no-BN arm's
    weight_decay: float = 1e-4
    warmup_steps: int = 15


BUDGETS = {
    "tiny": Settings(
        depths=(8, 14), train_size=128, test_size=64, steps=4, evals=2, batch_size=32, warmup_steps=1
    ),
    "small": Settings(depths=(20,), train_size=2000, steps=60, evals=3),
    "full": Settings(),
    # Ioffe & Szegedy's own schedule is ImageNet's (Inception, many GPU-days); the CIFAR nets here
    # use He et al.'s: batch 128, 64k iterations, lr 0.1 / 10 at 32k and 48k, weight decay 1e-4.
    "paper": Settings(
        depths=(20, 56),
        train_size=45000,
        test_size=10000,
        steps=64000,
        evals=160,
        batch_size=128,
        warmup_steps=400,
    ),
}

ARMS = ("bn", "nobn", "nobn_low")
# On a few hundred validation images an accuracy within 5 points of chance is noise (the standard
# error at 10% accuracy on 400 images is 1.5 points): such a run has not left chance.
NEAR_CHANCE = 0.05


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.activations import time_to_target
    from cnnzoo.experiments.training import (
        experiment_subsets,
        load_dataset,
        normalize,
        resolve_data,
        train_run,
    )
    from cnnzoo.train import NonFiniteLossError

    data = load_dataset(resolve_data(s.data, ctx.data_root), ctx.data_root)
    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    ctx.seeds += [
        f"{ctx.seed}: training subset, the weights every arm starts from, data order",
        f"{ctx.seed + 1}: test subset",
    ]
    chance = 1 / data.info.num_classes
    lrs = {"bn": s.lr, "nobn": s.lr, "nobn_low": s.low_lr}
    chunk = max(1, math.ceil(s.steps / max(1, s.evals)))
    runs: dict[tuple[int, str], dict] = {}
    # The signal a net without BN starts with: activation RMS per layer on the first training images.
    probe = normalize(data.train[0][train_idx[:128]], data.info)
    rms: dict[int, list[float]] = {}
    for depth in s.depths:
        for arm in ARMS:
            name = f"plain{depth}_{arm}"
            model = PlainStack(
                depth,
                bn=arm == "bn",
                in_chans=data.info.in_chans,
                num_classes=data.info.num_classes,
                seed=ctx.seed,
            )
            if arm == "nobn":
                rms[depth] = signal_rms(model, probe)
            ctx.log(
                f"training {name} (lr {lrs[arm]:g}) for {s.steps} steps on {len(train_idx):,} {data.name} images"
            )
            try:
                r = train_run(
                    ctx,
                    name,
                    model,
                    data=data,
                    train_idx=train_idx,
                    test_idx=test_idx,
                    steps=s.steps,
                    evals=s.evals,
                    batch_size=s.batch_size,
                    lr=lrs[arm],
                    weight_decay=s.weight_decay,
                    schedule="step",
                    warmup_steps=s.warmup_steps,
                    seed=ctx.seed,
                )
            except NonFiniteLossError as e:
                ctx.log(f"  {name} diverged: {e}")
                runs[depth, arm] = {"diverged": str(e).split(";")[0], "lr": lrs[arm]}
                continue
            runs[depth, arm] = {
                "lr": lrs[arm],
                "steps": [row["epoch"] * chunk for row in r.history],
                "val": [row["val_top1"] for row in r.history],
                "train_loss": [row["train_loss"] for row in r.history],
                "val_top1": r.val_top1,
                "test_top1": r.test_top1,
                "seconds": r.seconds,
            }

    result = ExperimentResult(
        name="batchnorm", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    rows = []
    for (depth, arm), r in runs.items():
        label = {"bn": "with BN", "nobn": "without BN", "nobn_low": "without BN"}[arm]
        if "diverged" in r:
            rows.append([f"Plain-{depth}", label, r["lr"], "diverged", "-", "-", "-"])
            continue
        rows.append(
            [
                f"Plain-{depth}",
                label,
                r["lr"],
                round(r["train_loss"][-1], 3),
                round(100 * r["val_top1"], 2),
                round(100 * r["test_top1"], 2),
                round(r["seconds"], 1),
            ]
        )
    result.tables.append(
        Table(
            f"After {s.steps} steps at batch {s.batch_size} on {len(train_idx):,} {data.name} training images",
            [
                "net",
                "BatchNorm",
                "lr",
                "final training loss",
                "val top-1 (%)",
                "test top-1 (%)",
                "training time (s)",
            ],
            rows,
            "Val and test top-1: the weights selected on validation. A diverged run's loss became NaN or "
            "infinite; it has no selected weights.",
        )
    )

    def val_of(r: dict) -> float:
        return chance if "diverged" in r else r["val_top1"]

    for depth in s.depths:
        bn, plain = runs[depth, "bn"], [runs[depth, a] for a in ("nobn", "nobn_low")]

        def describe(r: dict) -> str:
            return "diverged" if "diverged" in r else f"{100 * r['val_top1']:.1f}%"

        result.findings.append(
            Finding(
                f"Plain-{depth} trains better with BN: higher validation accuracy than without BN at either "
                "learning rate",
                "diverged" not in bn and all(val_of(bn) > val_of(p) for p in plain),
                f"validation top-1 with BN {describe(bn)}; without BN {describe(plain[0])} at lr {s.lr:g}, "
                f"{describe(plain[1])} at lr {s.low_lr:g}",
            )
        )
        # Ioffe & Szegedy's measure: steps to reach the accuracy the net without BN ends with.
        trained = [p for p in plain if "diverged" not in p]
        best = max(trained, key=lambda p: max(p["val"]), default=None)
        if "diverged" in bn:
            held, evidence = False, "the BN run diverged"
        elif best is None:
            held, evidence = True, "every run without BN diverged"
        elif max(best["val"]) <= chance + NEAR_CHANCE:
            # A target inside the noise around chance would give a meaningless "x times fewer steps".
            held = max(bn["val"]) > chance + NEAR_CHANCE
            evidence = (
                f"without BN the net never left chance ({100 * max(best['val']):.1f}% at best, within "
                f"{100 * NEAR_CHANCE:.0f} points of chance's {100 * chance:.0f}%); with BN it reached "
                f"{100 * max(bn['val']):.1f}%"
            )
        else:
            target = max(best["val"])
            with_bn = time_to_target(bn["steps"], bn["val"], target, chance)
            without = time_to_target(best["steps"], best["val"], target, chance)
            held = with_bn is not None and with_bn < without
            evidence = (
                f"the best run without BN (lr {best['lr']:g}) peaks at {100 * target:.1f}% validation accuracy "
                f"after {without:.0f} steps; with BN "
                + (
                    f"{with_bn:.0f} steps ({without / max(with_bn, 1e-9):.1f}x fewer)"
                    if with_bn is not None
                    else "never"
                )
            )
        result.findings.append(
            Finding(
                f"Plain-{depth} trains faster with BN: it reaches the no-BN net's best validation accuracy in "
                "fewer steps",
                held,
                evidence,
            )
        )
    result.notes.append(
        f"{s.steps} steps at batch {s.batch_size} on {len(train_idx):,} images, one seed: far shorter than "
        "any paper's schedule. The no-BN nets may still catch up later; the claim is about what depth "
        "BN makes trainable, and how fast."
    )
    shrink = "; ".join(
        f"Plain-{d} {r[0]:.3g} after the stem, {r[-1]:.3g} after the last conv" for d, r in rms.items()
    )
    result.notes.append(
        "Every arm starts from He et al.'s normal on the fan-out (arXiv:1502.01852), the init of the zoo's "
        "and torchvision's ResNets, made for deep ReLU nets without normalisation. Measured on 128 "
        f"training images, the net without BN still starts with a shrinking signal (activation RMS: {shrink}): "
        "scaled on the fan-out, the stem (1 or 3 channels in, 16 out) and the stride-2 convs shrink it, and "
        "zero padding loses part of it on the small 14- and 7-px maps."
    )
    result.data = {
        "dataset": data.name,
        "chance": chance,
        "runs": {f"plain{d}_{a}": r for (d, a), r in runs.items()},
        "signal_rms_without_bn": {str(d): r for d, r in rms.items()},
    }
    result.figures.append(_plot(runs, s, chance, ctx, data.name))
    return result


def _plot(runs: dict, s: Settings, chance: float, ctx: Context, dataset: str) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, len(s.depths), figsize=(5.2 * len(s.depths), 4), sharey=True, squeeze=False)
    style = {
        "bn": ("tab:blue", "-", f"with BN, lr {s.lr:g}"),
        "nobn": ("tab:red", "--", f"without BN, lr {s.lr:g}"),
        "nobn_low": ("tab:orange", "--", f"without BN, lr {s.low_lr:g}"),
    }
    for ax, depth in zip(axes[0], s.depths, strict=True):
        for arm in ARMS:
            color, ls, label = style[arm]
            r = runs[depth, arm]
            if "diverged" in r:
                ax.plot([], [], ls, color=color, label=f"{label} (diverged)")
                continue
            ax.plot(
                [0, *r["steps"]],
                [100 * chance, *(100 * v for v in r["val"])],
                ls,
                marker=".",
                color=color,
                label=label,
            )
        ax.axhline(100 * chance, color="0.4", ls=":", lw=1)
        ax.set_title(f"Plain-{depth} on {dataset}")
        ax.set_xlabel("training steps")
        ax.set_ylabel("validation top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, ctx.out / "curves.png")
    return Figure(
        "curves.png",
        "Validation accuracy of the same plain net with BatchNorm (solid) and without it (dashed, at the same "
        "and at a ten times lower learning rate); dotted: chance.",
    )


EXPERIMENT = Experiment(
    name="batchnorm",
    title="Batch normalization: the same deep plain net with and without BN",
    claim="With BN we can train 10+ layers: normalising each layer's inputs over the batch lets a deep "
    "net train, faster and at higher learning rates.",
    source="Ioffe & Szegedy 2015, arXiv:1502.03167 (the course's lecture on batch normalization)",
    budgets=BUDGETS,
    run=run,
    summary="The same plain net (20 and 32 layers) with and without BatchNorm: validation accuracy curves",
)
