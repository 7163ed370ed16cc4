"""Efficiency: accuracy against multiply-adds and measured latency, with the Pareto frontier.

The lectures (after Howard et al. 2017, Tan & Le 2019): after ResNet "focus shifted to efficient networks" -
MobileNet, ShuffleNet, EfficientNet - "much more efficient, with little loss in accuracy", i.e.
they move the accuracy-vs-cost curve up and to the left. Here nets of the classic families
(LeNet-5, the CIFAR ResNet-20) and of the efficient ones train with one recipe on the same
Fashion-MNIST subset; each gets its test accuracy, its multiply-accumulates on one 28 x 28
image (`cnnzoo.profile`) and its latency measured on this machine (batch 1, the models timed
round by round in turn, median over rounds). A cost axis "moves" when an efficient net lies
beyond the frontier of the classic nets alone: no classic net is both cheaper and at least as
accurate.

ShuffleNet v2 (Ma et al. 2018, arXiv:1807.11164) warns that FLOPs are an indirect measure of
speed: depthwise convolutions and channel shuffles do few multiply-adds per byte moved. The
latency axis tests that on this CPU.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment
from cnnzoo.words import plural

__all__ = ["EFFICIENT_FAMILIES", "EXPERIMENT", "Settings", "beyond_frontier", "measure_latency"]

# The families the lectures file under "efficient networks" (and the NAS nets that follow them).
EFFICIENT_FAMILIES = frozenset({"mobilenet", "shufflenet", "efficientnet", "nas"})
MODEL_KWARGS: dict[str, dict[str, Any]] = {"lenet5": {"act": "relu"}}


@dataclass(frozen=True)
class Settings:
    data: str = "fashion-mnist"
    models: tuple[str, ...] = (
        "lenet5",
        "resnet20",
        "shufflenet_v2_x0_5",
        "mobilenet_v1_050",
        "mobilenet_v2",
        "efficientnet_b0",
    )
    train_size: int = 4000
    test_size: int = 1000
    epochs: int = 2
    batch_size: int = 128
    # One recipe for every family: AdamW needs no per-family learning rate (Loshchilov & Hutter
    # 2017, arXiv:1711.05101); cosine decay to zero over the run.
    lr: float = 2e-3
    weight_decay: float = 0.05
    latency_rounds: int = 15
    # LeNet-5's 1998 sigmoids do not leave their plateau in a few hundred AdamW steps (see the
    # activations experiment), which would make it a strawman: the classic nets use ReLU, as the
    # efficient ones do.
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(MODEL_KWARGS))


BUDGETS = {
    "tiny": Settings(
        models=("lenet5", "resnet20", "shufflenet_v2_x0_5"),
        train_size=128,
        test_size=64,
        epochs=1,
        batch_size=32,
        latency_rounds=3,
    ),
    "small": Settings(train_size=4000, epochs=2),
    "full": Settings(train_size=10000, test_size=2000, epochs=3, latency_rounds=25),
    # The efficient nets' papers train on ImageNet for 90 to 350 epochs (MobileNet, ShuffleNet v2,
    # EfficientNet); on this 60,000-image dataset the paper budget uses He et al. 2015's CIFAR
    # schedule length (64k iterations at batch 128: 137 epochs of 60,000 images), for every net
    # with the one AdamW recipe, on the whole training and test sets.
    "paper": Settings(train_size=0, test_size=0, epochs=137, latency_rounds=50),
}


@torch.inference_mode()
def measure_latency(
    models: dict[str, nn.Module], input_size: tuple[int, ...], *, rounds: int = 15, min_seconds: float = 0.02
) -> dict[str, float]:
    """Median milliseconds per batch-1 forward pass of each model, in eval mode.

    The models take turns within every round (A, B, C, A, B, C, ...), so a change in the load of
    a shared machine hits them all alike; each timing repeats the forward pass until it lasts
    `min_seconds`, and the median over `rounds` rounds is reported.
    """
    x = torch.randn(1, *input_size)
    reps: dict[str, int] = {}
    for name, m in models.items():
        m.eval()
        m(x)  # warm-up: first-call allocations and kernel selection
        t0 = time.perf_counter()
        m(x)
        once = max(time.perf_counter() - t0, 1e-6)
        reps[name] = max(1, int(min_seconds / once))
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(rounds):
        for name, m in models.items():
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                m(x)
            times[name].append((time.perf_counter() - t0) / reps[name])
    return {n: 1000 * statistics.median(t) for n, t in times.items()}


def beyond_frontier(points: dict[str, tuple[float, float]], classic: set[str]) -> list[str]:
    """The non-classic points that no classic point dominates (cost <= and accuracy >=)."""
    out = []
    for name, (cost, acc) in points.items():
        if name in classic:
            continue
        if not any(points[c][0] <= cost and points[c][1] >= acc for c in classic):
            out.append(name)
    return out


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.analysis import profile
    from cnnzoo.experiments.training import (
        PRECISE_BN_NOTE,
        experiment_subsets,
        load_dataset,
        options_note,
        train_run,
    )
    from cnnzoo.registry import model_info

    data = load_dataset(s.data, ctx.data_root)
    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    ctx.seeds += [
        f"{ctx.seed}: training subset, every net's initialisation and data order",
        f"{ctx.seed + 1}: test subset",
    ]
    size = (data.info.in_chans, *data.info.image_size)
    runs = {}
    for name in s.models:
        ctx.log(f"training {name} on {len(train_idx):,} {s.data} images")
        runs[name] = train_run(
            ctx,
            name,
            name,
            data=data,
            train_idx=train_idx,
            test_idx=test_idx,
            epochs=s.epochs,
            batch_size=s.batch_size,
            optimizer="adamw",
            lr=s.lr,
            weight_decay=s.weight_decay,
            seed=ctx.seed,
            model_kwargs=s.model_kwargs.get(name),
        )
    ctx.log("measuring latency (batch 1)")
    latency = measure_latency({n: r.model for n, r in runs.items()}, size, rounds=s.latency_rounds)
    entries: dict[str, dict[str, Any]] = {}
    for name, r in runs.items():
        p = profile(r.model, size)
        entries[name] = {
            "family": model_info(name).family,
            "macs": p.total_macs,
            "params": p.num_parameters,
            "latency_ms": latency[name],
            "test_top1": r.test_top1,
            "train_seconds": r.seconds,
        }
    result = ExperimentResult(
        name="efficiency", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    add_comparison(
        result, entries, ctx, s.data, label=f"{len(train_idx):,} images, {plural(s.epochs, 'epoch')}"
    )
    if s.model_kwargs:
        result.notes.append(options_note(s.model_kwargs))
    result.notes.append(PRECISE_BN_NOTE)
    result.notes.append(
        "The ImageNet families (MobileNet, ShuffleNet, EfficientNet) downsample by 32, so a 28-px image "
        "ends as a 1-px map; they were designed for 224 px and a few epochs on a few thousand images "
        "favour small nets that converge fast. Latency is batch-1 inference on this CPU with "
        f"{torch.get_num_threads()} thread(s), on a machine shared with other work."
    )
    return result


def add_comparison(
    result: ExperimentResult,
    entries: dict[str, dict[str, Any]],
    ctx: Context,
    dataset: str,
    *,
    label: str,
    findings: bool = True,
) -> None:
    """Table, findings and plot of accuracy vs MACs and latency (shared with the NAS experiment)."""
    classic = {n for n, e in entries.items() if e["family"] not in EFFICIENT_FAMILIES}
    rows = [
        [
            n,
            e["family"],
            e["params"],
            round(e["macs"] / 1e6, 2),
            round(e["latency_ms"], 2),
            round(100 * e["test_top1"], 2),
            round(e["train_seconds"], 1),
        ]
        for n, e in sorted(entries.items(), key=lambda kv: kv[1]["macs"])
    ]
    result.tables.append(
        Table(
            f"Accuracy and cost on {dataset} ({label})",
            ["net", "family", "parameters", "MMACs", "latency (ms)", "test top-1 (%)", "training time (s)"],
            rows,
            "MMACs: millions of multiply-accumulates on one image (cnnzoo.profile); latency: median "
            "batch-1 forward time on this machine.",
        )
    )
    for axis, key in (("multiply-adds", "macs"), ("measured latency", "latency_ms")):
        points = {n: (float(e[key]), float(e["test_top1"])) for n, e in entries.items()}
        beyond = beyond_frontier(points, classic)
        efficient = sorted(set(entries) - classic)
        if not findings or not classic or not efficient:
            continue
        result.findings.append(
            Finding(
                f"Efficient families move the accuracy-vs-{axis} frontier up and to the left of the classic nets' "
                f"({', '.join(sorted(classic))})",
                bool(beyond),
                (
                    f"beyond the classic frontier: {', '.join(beyond)}"
                    if beyond
                    else "every efficient net is matched by a classic net that is at least as accurate and "
                    f"no more costly in {axis}"
                )
                + f" ({len(beyond)} of {len(efficient)} efficient nets)",
            )
        )
    result.data["entries"] = entries
    result.figures.append(plot_frontiers(entries, classic, ctx, dataset))


def plot_frontiers(
    entries: dict[str, dict[str, Any]], classic: set[str], ctx: Context, dataset: str
) -> Figure:
    from cnnzoo.experiments.plots import label_points, log_axis, pareto_front, pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    names = list(entries)
    labelled = []
    for ax, key, xlabel, title in (
        (axes[0], "macs", "million multiply-accumulates per image (log)", "accuracy against multiply-adds"),
        (axes[1], "latency_ms", "latency per image, batch 1 (ms, log)", "accuracy against latency"),
    ):
        xs = [float(entries[n][key]) / (1e6 if key == "macs" else 1) for n in names]
        ys = [100 * float(entries[n]["test_top1"]) for n in names]
        front = pareto_front(xs, ys)
        fx = [xs[i] for i in front]
        fy = [ys[i] for i in front]
        ax.step(fx, fy, where="post", color="gray", alpha=0.6, label="Pareto frontier")
        for i, n in enumerate(names):
            kind = (
                "classic" if n in classic else ("searched" if entries[n]["family"] == "nas" else "efficient")
            )
            style = {"classic": ("s", "C0"), "efficient": ("o", "C2"), "searched": ("*", "C3")}[kind]
            ax.scatter(
                xs[i], ys[i], marker=style[0], color=style[1], s=80 if kind == "searched" else 40, zorder=3
            )
        ax.margins(x=0.12, y=0.08)  # room for the names of the outermost nets
        log_axis(ax, "x")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        labelled.append((ax, xs, ys))
    axes[0].set_ylabel(f"{dataset} test top-1 (%)")
    handles = [
        plt.Line2D([], [], marker="s", color="C0", ls="", label="classic"),
        plt.Line2D([], [], marker="o", color="C2", ls="", label="efficient family"),
        plt.Line2D([], [], color="gray", label="Pareto frontier"),
    ]
    if any(e["family"] == "nas" for e in entries.values()):
        handles.insert(
            2, plt.Line2D([], [], marker="*", color="C3", ls="", markersize=10, label="found by search")
        )
    # The legend goes under the panels, where it can hide neither a point nor a name.
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    for ax, xs, ys in labelled:
        label_points(ax, xs, ys, names)
    save_png(fig, ctx.out / "frontier.png")
    return Figure(
        "frontier.png",
        "Test accuracy against multiply-adds (left) and measured batch-1 latency (right); the gray step "
        "line is the Pareto frontier (no other net is both cheaper and more accurate).",
    )


EXPERIMENT = Experiment(
    name="efficiency",
    title="Efficiency: accuracy vs multiply-adds vs latency, with the Pareto frontier",
    claim="After ResNet, focus shifted to efficient networks: lots of tiny networks aimed at mobile devices "
    "(MobileNet, ShuffleNet) ... much more efficient, with little loss in accuracy; EfficientNet balances "
    "accuracy and efficiency.",
    source="The course's lectures on efficient networks; Howard et al. 2017, arXiv:1704.04861; "
    "Tan & Le 2019, arXiv:1905.11946",
    budgets=BUDGETS,
    run=run,
    summary="LeNet-5, ResNet-20, ShuffleNet v2, MobileNet v1/v2, EfficientNet-B0 on one recipe: Pareto frontier",
)
