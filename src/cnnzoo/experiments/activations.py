"""Activation functions: ReLU converges several times faster than sigmoid and tanh.

The lecture ("ReLU ... converges much faster than sigmoid/tanh in practice (e.g.
6x)") quotes Krizhevsky et al. 2012, Fig. 1: a four-layer CNN with ReLUs reached 25% training
error on CIFAR-10 six times faster than the same net with tanh. Here the same LeNet-5 (max
pooling for every activation, so that only the non-linearity changes) trains on Fashion-MNIST
with each of the lecture's activations - sigmoid, tanh, ReLU, leaky ReLU, ELU, Swish, Mish -
with one optimizer and learning rate (plain SGD with momentum, constant lr, no BatchNorm in the
net, as in 2012), and the number of epochs (and seconds) each needs to reach a target test
accuracy is measured. Krizhevsky et al. tuned the learning rate per net; one shared rate is a
simplification stated in the report.

The same runs measure the lecture's other two warnings, per layer, at initialisation and at every
evaluation, on a fixed probe batch of 512 training images: "saturated neurons kill the gradients"
(sigmoid, tanh) and the ReLU "annoyance" of a unit whose input is never positive, so that no
gradient ever reaches its weights (a dead ReLU), which a leaky ReLU's slope is said to prevent
("will not die"; the lecture's overview chart draws it as max(0.1x, x): `leaky_relu:0.1`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "SATURATION", "Settings", "activation_statistics", "time_to_target"]


@dataclass(frozen=True)
class Settings:
    data: str = "fashion-mnist"
    model: str = "lenet5"
    acts: tuple[str, ...] = (
        "sigmoid",
        "tanh",
        "relu",
        "leaky_relu",
        "leaky_relu:0.1",
        "elu",
        "swish",
        "mish",
    )
    train_size: int = 20000
    test_size: int = 2000
    epochs: int = 2
    evals_per_epoch: int = 4
    batch_size: int = 128
    lr: float = 0.05
    target: float = 0.80  # test top-1 to reach
    speedup: float = 3.0  # "several times faster": the factor the second finding asks for
    probe_size: int = 512  # training images on which dead and saturated units are counted


BUDGETS = {
    "tiny": Settings(
        acts=("sigmoid", "tanh", "relu", "leaky_relu:0.1"),
        probe_size=64,
        train_size=128,
        test_size=64,
        epochs=1,
        evals_per_epoch=2,
        batch_size=32,
    ),
    "small": Settings(train_size=20000, epochs=2, evals_per_epoch=4),
    "full": Settings(train_size=0, epochs=4, evals_per_epoch=6),
    # Krizhevsky et al. 2012, Fig. 1: the tanh net needed about 35 epochs to reach 25% training
    # error where the ReLU net needed 6; the paper budget trains every activation that long, on
    # the whole training set, evaluated once an epoch (their curves' resolution).
    "paper": Settings(train_size=0, test_size=0, epochs=35, evals_per_epoch=1),
}


def time_to_target(xs: list[float], accs: list[float], target: float, start: float = 0.0) -> float | None:
    """The x (epochs or seconds) at which accuracy first reaches `target`, interpolating linearly
    between measurements from (0, `start`); None when it never does."""
    if start >= target:
        return 0.0
    px, pa = 0.0, start
    for x, a in zip(xs, accs, strict=True):
        if a >= target:  # pa < target <= a: the crossing lies in (px, x]
            return px + (x - px) * (target - pa) / (a - pa)
        px, pa = x, a
    return None


# Saturated: the local gradient is under 19% of its peak - sigmoid output outside [0.05, 0.95]
# (sigma' = sigma (1 - sigma) < 0.0475 of 0.25), tanh output outside [-0.9, 0.9] (1 - tanh^2 < 0.19
# of 1): the same point, as tanh(z) = 2 sigma(2z) - 1. As |pre-activation| thresholds: ln 19 and
# ln 19 / 2. The cut-off is ours; Glorot & Bengio 2010 (Understanding the difficulty of training
# deep feedforward neural networks, sec. 3) watch sigmoid units saturate the same way, by their
# outputs' distance from 0 and 1.
SATURATION = {"sigmoid": math.log(19), "tanh": math.log(19) / 2}


@torch.no_grad()
def activation_statistics(
    model: nn.Module,
    x: torch.Tensor,
    kind: type[nn.Module],
    saturation: float | None = None,
    batch: int = 256,
) -> dict[str, dict[str, Any]]:
    """Per activation module of type `kind` (by its name in `model`), on the inputs `x`:

    - "dead": the fraction of its units whose input is not positive anywhere on any of the images,
      so that its weights receive no gradient from them (a dead ReLU; Karpathy's CS231n notes: a
      unit that "will never activate across the entire dataset"). A unit is what owns weights: a
      channel of a convolution (shared over every position) or a fully connected neuron.
    - "saturated": the fraction of (image, unit) inputs with |z| > `saturation` (None when no
      threshold is given; see `SATURATION`).
    - "fired": a bool per unit, True where its input was positive somewhere (so that two
      measurements tell which units died or came back in between).

    The model is run in eval mode and left in the mode it was in. Inputs are read before the
    module runs (a pre-hook), so in-place activations are measured as well.
    """
    modules = {n: m for n, m in model.named_modules() if type(m) is kind}
    if not modules:
        raise ValueError(f"the model has no {kind.__name__} module to measure")
    positive: dict[str, torch.Tensor] = {}
    saturated = dict.fromkeys(modules, 0)
    seen = dict.fromkeys(modules, 0)

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            z = args[0].detach()
            fired = (z > 0).transpose(0, 1).flatten(1).any(1)  # per channel / neuron
            positive[name] = fired if name not in positive else positive[name] | fired
            if saturation is not None:
                saturated[name] += int((z.abs() > saturation).sum())
                seen[name] += z.numel()

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, x.shape[0], batch):
            model(x[i : i + batch])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    # None, not NaN, where nothing was measured: the results are written as strict JSON.
    return {
        n: {
            "dead": 1.0 - float(positive[n].float().mean()) if n in positive else None,
            "saturated": saturated[n] / seen[n] if saturation is not None and seen[n] else None,
            "fired": positive.get(n),
        }
        for n in modules
    }


def _label(act: str) -> str:
    return act.replace(":", "-")  # a folder name for "leaky_relu:0.1"


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.training import (
        experiment_subsets,
        load_dataset,
        normalize,
        train_run,
    )
    from cnnzoo.layers import get_act, resolve_act
    from cnnzoo.registry import model_info

    data = load_dataset(s.data, ctx.data_root)
    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    ctx.seeds += [
        f"{ctx.seed}: training subset, initialisation and data order (the same for every activation)",
        f"{ctx.seed + 1}: test subset",
    ]
    chance = 1 / data.info.num_classes
    # The first training images of the (shuffled) subset: the same probe for every activation.
    probe_x = normalize(data.train[0][train_idx[: s.probe_size]], data.info)
    # One initialisation for every activation, so that only the non-linearity changes (LeNet-5
    # otherwise starts its sigmoid and tanh nets from Glorot's scale, its ReLU nets from torch's).
    same_init = {"init": "torch"} if model_info(s.model).family == "lenet" else {}
    runs = {}
    for act in s.acts:
        act = resolve_act(act)
        base = act.partition(":")[0]

        probe = functools.partial(
            activation_statistics, x=probe_x, kind=type(get_act(act, 1)), saturation=SATURATION.get(base)
        )
        ctx.log(f"training {s.model} with {act} on {len(train_idx):,} {s.data} images")
        runs[act] = train_run(
            ctx,
            f"{s.model}-{_label(act)}",
            s.model,
            data=data,
            train_idx=train_idx,
            test_idx=test_idx,
            epochs=s.epochs,
            evals_per_epoch=s.evals_per_epoch,
            batch_size=s.batch_size,
            lr=s.lr,
            weight_decay=0.0,
            schedule="constant",
            seed=ctx.seed,
            model_kwargs={"act": act, "pool": "max", **same_init},
            probe=probe,
        )

    reach, seconds = {}, {}
    rows = []
    for act, r in runs.items():
        xs = [h["epochs_seen"] for h in r.history]
        accs = [h["test_top1"] for h in r.history]
        secs, total = [], 0.0
        for h in r.history:
            total += h["train_seconds"]
            secs.append(total)
        reach[act] = time_to_target(xs, accs, s.target, chance)
        seconds[act] = time_to_target(secs, accs, s.target, chance)
        per_epoch = total / max(xs[-1], 1e-9)
        rows.append(
            [
                act,
                "not reached" if reach[act] is None else round(reach[act], 2),
                "not reached" if seconds[act] is None else round(seconds[act], 1),
                round(100 * accs[-1], 2),
                round(r.history[-1]["train_loss"], 4),
                round(per_epoch, 1),
            ]
        )
    result = ExperimentResult(
        name="activations", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    budget_epochs = max(h["epochs_seen"] for r in runs.values() for h in r.history)
    result.tables.append(
        Table(
            f"{s.model} on {len(train_idx):,} {s.data} images: time to {100 * s.target:.0f}% test top-1",
            [
                "activation",
                "epochs to target",
                "seconds to target",
                "final test top-1 (%)",
                "final train loss",
                "seconds per epoch",
            ],
            rows,
            f"Epochs and seconds interpolated linearly between the {s.evals_per_epoch} evaluations per "
            f"epoch; 'not reached' within the {budget_epochs:.1f} epochs of the run.",
        )
    )

    def speedup(other: str) -> tuple[float | None, bool]:
        """(factor, exact): exact is False when `other` never reached the target (a lower bound)."""
        if reach.get("relu") is None:
            return None, True
        if reach[other] is None:
            return budget_epochs / reach["relu"], False
        return reach[other] / reach["relu"], True

    def epochs(a: str) -> str:
        return "not reached" if reach[a] is None else f"{reach[a]:.2f} epochs"

    if "relu" in reach:
        for other in ("sigmoid", "tanh"):
            if other not in reach:
                continue
            f, exact = speedup(other)
            held = reach["relu"] is not None and (reach[other] is None or reach[other] > reach["relu"])
            factor = "" if f is None else f", {'more than ' if not exact else ''}{f:.1f}x"
            result.findings.append(
                Finding(
                    f"ReLU reaches {100 * s.target:.0f}% test accuracy in fewer epochs than {other}",
                    held,
                    f"ReLU {epochs('relu')}, {other} {epochs(other)}{factor}",
                )
            )
        factors = {a: speedup(a) for a in ("sigmoid", "tanh") if a in reach}
        if factors:
            several = all(f is not None and f >= s.speedup for f, _ in factors.values())
            result.findings.append(
                Finding(
                    f"... several times faster: at least {s.speedup:g}x against "
                    + " and ".join(factors)
                    + " (the lecture's example is 6x)",
                    several,
                    "speed-up of ReLU: "
                    + "; ".join(
                        f"{a} {'-' if f is None else ('more than ' if not exact else '') + f'{f:.1f}x'}"
                        for a, (f, exact) in factors.items()
                    ),
                )
            )
    if "sigmoid" in runs and (
        reach["sigmoid"] is None or reach.get("relu") is None or reach["sigmoid"] > reach["relu"]
    ):
        hist = runs["sigmoid"].history
        # The first evaluation clearly above chance: where sigmoid left its starting plateau.
        left = next((h["epochs_seen"] for h in hist if h["test_top1"] > chance + 0.1), None)
        where = (
            f"stayed near chance for its first {left:.2f} epochs and ended at {100 * hist[-1]['test_top1']:.1f}%"
            if left is not None
            else f"never left chance accuracy (final training loss {hist[-1]['train_loss']:.2f}; "
            f"ln {data.info.num_classes} = {math.log(data.info.num_classes):.2f})"
        )
        result.notes.append(
            f"Sigmoid {where}: its outputs are not zero-centred and its slope is at most 1/4, so the gradient "
            "reaching the first layers of a net without BatchNorm is small - the vanishing gradient the "
            "lecture describes."
        )
    if reach.get("tanh") is not None and reach.get("relu") is not None and reach["tanh"] <= reach["relu"]:
        result.notes.append(
            "Tanh reached the target no later than ReLU here. LeNet-5 has four activation layers, too few for "
            "tanh's saturation to slow it much, and tanh's zero-centred outputs suit SGD (LeCun et al. 1998, "
            "Efficient BackProp); Krizhevsky et al.'s 6x was measured on a CIFAR-10 CNN, at the rate each net "
            "trained fastest with."
        )
    result.notes.append(
        f"One learning rate ({s.lr}, SGD with momentum 0.9, constant) for every activation, where "
        "Krizhevsky et al. chose each net's rate to make it train fastest; a rate that suits ReLU may "
        "be slow for sigmoid, whose gradients are at most a quarter of ReLU's."
    )
    stats = {
        a: {
            "epochs": [0.0, *(h["epochs_seen"] for h in r.history)],
            # The per-unit masks stay out of result.json: only what changed between the ends counts.
            "layers": [
                {n: {k: v for k, v in m.items() if k != "fired"} for n, m in p.items()} for p in r.probes
            ],
            "turnover": _turnover(r.probes[0], r.probes[-1]),
        }
        for a, r in runs.items()
    }
    _unit_findings(result, stats, s, len(train_idx))
    result.data = {
        "epochs_to_target": reach,
        "seconds_to_target": seconds,
        "curves": {a: [[h["epochs_seen"], h["test_top1"]] for h in r.history] for a, r in runs.items()},
        "unit_statistics": stats,
    }
    result.figures.append(_plot(runs, reach, s, ctx, budget_epochs))
    result.figures.append(_plot_units(stats, s, ctx))
    return result


def _stat(act: str) -> str:
    """Which statistic speaks for an activation: saturation for sigmoid/tanh, else dead units."""
    return "saturated" if act in SATURATION else "dead"


def _mean(layers: dict[str, dict[str, float]], stat: str) -> float:
    """Mean over the layers (each layer counts once, whatever its number of units)."""
    return sum(v[stat] for v in layers.values()) / len(layers)


def _turnover(first: dict, last: dict) -> dict[str, int]:
    """Units that fired at initialisation and never at the end (died), the reverse (revived),
    and how many units there are, summed over the layers."""
    died = revived = alive = dead = 0
    for n, m in first.items():
        before, after = m["fired"], last[n]["fired"]
        died += int((before & ~after).sum())
        revived += int((~before & after).sum())
        alive += int(before.sum())
        dead += int((~before).sum())
    return {"died": died, "revived": revived, "alive_at_start": alive, "dead_at_start": dead}


def _unit_findings(result: ExperimentResult, stats: dict, s: Settings, n_train: int) -> None:
    layer_names = list(next(iter(stats.values()))["layers"][0])
    rows = []
    for act, st in stats.items():
        stat = _stat(act)
        first, last = st["layers"][0], st["layers"][-1]
        rows.append(
            [
                act,
                "saturated outputs" if stat == "saturated" else "never-positive units",
                *(f"{100 * first[n][stat]:.1f} -> {100 * last[n][stat]:.1f}" for n in layer_names),
                f"{100 * _mean(first, stat):.1f} -> {100 * _mean(last, stat):.1f}",
            ]
        )
    result.tables.append(
        Table(
            f"Dead and saturated units of {s.model} (%), at initialisation -> after training "
            f"({s.probe_size} training images)",
            ["activation", "statistic", *layer_names, "mean over layers"],
            rows,
            "Never-positive: the fraction of units (a conv channel, whose weights are shared over its "
            "positions, or a fully connected neuron) whose input is not positive anywhere on any probe "
            "image; for ReLU these units are dead, their weights get no gradient. Saturated: the fraction of inputs where sigmoid's "
            "output is outside [0.05, 0.95] or tanh's outside [-0.9, 0.9], i.e. where the local "
            "gradient is under 19% of its peak. Measured in eval mode before training and after the "
            f"last of the evaluations on {n_train:,} training images.",
        )
    )

    def trend(act: str, stat: str) -> tuple[float, float, str]:
        first, last = stats[act]["layers"][0], stats[act]["layers"][-1]
        peak = max(last, key=lambda n: last[n][stat])
        a, b = 100 * _mean(first, stat), 100 * _mean(last, stat)
        return a, b, f"{a:.2f}% -> {b:.2f}% (mean over layers; most in {peak}: {100 * last[peak][stat]:.2f}%)"

    for act, says in (("sigmoid", "Sigmoid units"), ("tanh", "Tanh units, too,")):
        if act in stats:
            a, b, text = trend(act, "saturated")
            result.findings.append(
                Finding(
                    f"{says} saturate as the net trains (where they 'kill the gradients'): more of their "
                    "outputs are saturated at the end than at initialisation",
                    b > a,
                    f"saturated {act} outputs {text}",
                )
            )
    if "relu" in stats:
        t = stats["relu"]["turnover"]
        _, b, text = trend("relu", "dead")
        result.findings.append(
            Finding(
                "ReLUs die: some units that fired at initialisation are never positive on any probe image "
                "at the end of training",
                t["died"] > 0,
                f"{t['died']} of the {t['alive_at_start']} ReLU units alive at initialisation died "
                f"(and {t['revived']} of the {t['dead_at_start']} dead ones came back); dead units {text}",
            )
        )
        leaky = next((a for a in ("leaky_relu:0.1", "leaky_relu") if a in stats), None)
        if leaky is not None and t["died"] > 0:
            lt = stats[leaky]["turnover"]
            lb = trend(leaky, "dead")[1]
            result.findings.append(
                Finding(
                    f"Leaky ReLU ({leaky}) will not die: fewer of its units end never positive than ReLU's",
                    lb < b,
                    f"never-positive units at the end: {leaky} {lb:.2f}%, relu {b:.2f}% (mean over layers; "
                    f"{leaky}: {lt['died']} went quiet, {lt['revived']} of {lt['dead_at_start']} came back)",
                )
            )
        elif leaky is not None:
            result.notes.append(
                "No ReLU unit that fired at initialisation died during this run, so there was nothing for the "
                "leaky ReLU to prevent: the leaky-ReLU finding was not measured."
            )
        if t["revived"]:
            result.notes.append(
                f"{t['revived']} ReLU units that were dead at initialisation fired at the end: a unit is dead only "
                "as long as its inputs stay where they are. Its own weights get no gradient, but the layers "
                "below it keep learning and can move its inputs back into the positive region; a dead unit of "
                "the first layer, whose inputs are the pixels, could not come back."
            )


def _plot(runs, reach, s: Settings, ctx: Context, budget_epochs: float) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for i, (act, r) in enumerate(runs.items()):
        a1.plot(
            [0.0, *(h["epochs_seen"] for h in r.history)],
            [10.0, *(100 * h["test_top1"] for h in r.history)],
            "-",
            color=f"C{i}",
            label=act,
        )
    a1.axhline(100 * s.target, color="gray", ls=":", label=f"target {100 * s.target:.0f}%")
    a1.set_xlabel("epochs")
    a1.set_ylabel("test top-1 (%)")
    a1.set_title(f"{s.model} on {s.data}, one recipe, {len(runs)} activations")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    acts = list(runs)
    values = [budget_epochs if reach[a] is None else reach[a] for a in acts]
    bars = a2.bar(acts, values, color=[f"C{i}" for i in range(len(acts))])
    for bar, a in zip(bars, acts, strict=True):
        if reach[a] is None:
            bar.set_hatch("//")
            bar.set_alpha(0.4)
            a2.text(
                bar.get_x() + bar.get_width() / 2, bar.get_height(), "not\nreached", ha="center", fontsize=7
            )
    a2.set_ylabel(f"epochs to {100 * s.target:.0f}% test top-1")
    a2.set_ylim(0, 1.3 * max(values, default=1))  # room above the bars for "not reached"
    a2.set_xlabel("activation")
    a2.set_title("epochs to the target")
    a2.tick_params(axis="x", rotation=45)
    a2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_png(fig, ctx.out / "convergence.png")
    return Figure(
        "convergence.png",
        "Left: test accuracy during training for each activation. Right: epochs to the target accuracy "
        "(hatched: not reached within the run).",
    )


def _plot_units(stats: dict, s: Settings, ctx: Context) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = [
        (axes[0], [a for a in ("relu", "leaky_relu:0.1", "leaky_relu") if a in stats], "dead"),
        (axes[1], [a for a in ("sigmoid", "tanh") if a in stats], "saturated"),
    ]
    styles = ["-", "--", ":"]
    for ax, acts, stat in panels:
        for k, act in enumerate(acts):
            st = stats[act]
            for i, layer in enumerate(st["layers"][0]):
                ax.plot(
                    st["epochs"],
                    [100 * p[layer][stat] for p in st["layers"]],
                    styles[k % 3],
                    color=f"C{i}",
                    label=f"{act} {layer}",
                )
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
        if acts:
            ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("units never positive (%)")
    axes[0].set_title("Dead units (ReLU) and never-positive ones (leaky)")
    axes[1].set_ylabel("saturated outputs (%)")
    axes[1].set_title("Saturation: sigmoid outside [0.05, 0.95], tanh [-0.9, 0.9]")
    fig.tight_layout()
    save_png(fig, ctx.out / "units.png")
    return Figure(
        "units.png",
        f"Per layer of {s.model} (colour), on {s.probe_size} training images: left, units whose input "
        "is never positive (ReLU's dead units, solid); right, the share of saturated sigmoid (solid) "
        "and tanh (dashed) outputs.",
    )


EXPERIMENT = Experiment(
    name="activations",
    title="Activations: ReLU converges faster than sigmoid and tanh",
    claim="ReLU: does not saturate (in +region), very computationally efficient, converges much faster than "
    "sigmoid/tanh in practice (e.g. 6x).",
    source="Krizhevsky et al. 2012, Fig. 1 (as the course's lecture on activation functions quotes it)",
    budgets=BUDGETS,
    run=run,
    summary="LeNet-5 with sigmoid, tanh, ReLU, leaky ReLU, ELU, Swish, Mish: epochs to a target, dead "
    "and saturated units",
)
