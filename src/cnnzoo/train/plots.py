"""Training curves and confusion matrices as PNG, written atomically (matplotlib, the `plot` extra)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnzoo.atomic import atomic_write

__all__ = [
    "epoch_axis",
    "have_matplotlib",
    "label_points",
    "log_axis",
    "plot_confusion",
    "plot_curves",
    "pyplot",
    "save_png",
]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no screen needed), or an ImportError saying how to install it."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'cnnzoo[plot]'") from e
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write `fig` to `path` atomically (a temporary file beside it, then a rename) and close it."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        pyplot().close(fig)


def epoch_axis(ax: Any, epochs: Sequence[float]) -> None:
    """Whole-number epoch ticks and half an epoch of margin on each side, so a one-epoch run gets an
    axis from 0.5 to 1.5 with one tick, not matplotlib's 0.96 to 1.04 in steps of 0.02."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    whole = sorted({int(e) for e in epochs})
    # Up to a dozen epochs each gets its tick; beyond that matplotlib picks whole-number steps.
    ax.xaxis.set_major_locator(FixedLocator(whole) if len(whole) <= 12 else MaxNLocator(integer=True))
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)


def log_axis(ax: Any, which: str) -> None:
    """A log scale whose labels are plain numbers ("0.5", "2", "0.001") at 1-2-5 steps or decades.

    matplotlib's default labels the minor ticks of a range narrower than a decade in scientific
    notation ("3x10^-1 4x10^-1 ...") and those run together; here only major ticks are labelled,
    and there are at least two of them in the data's range."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    # The step follows the range shown (matplotlib widens a single value's axis to a decade or more).
    ax.autoscale_view()
    low, high = sorted(axis.get_view_interval())
    ratio = high / low if low > 0 else 10.0
    subs = (
        (1.0,) if ratio >= 300 else (1.0, 2.0, 5.0) if ratio >= 4 else tuple(float(k) for k in range(1, 10))
    )
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


# Offsets (points) tried in turn for a point's label: above right, below right, above left, ...
_LABEL_OFFSETS = ((4, 3, "left"), (4, -11, "left"), (-4, 3, "right"), (-4, -11, "right"), (0, 7, "center"))


def label_points(
    ax: Any, xs: Sequence[float], ys: Sequence[float], names: Sequence[str], *, fontsize: float = 7
) -> list[Any]:
    """Name each point with a label placed where it overlaps no earlier label, no legend and stays
    inside the axes (the first of a few positions around the point that fits; else the least bad).

    Call it after the figure's layout is fixed (`tight_layout`): placement is measured in display
    units, which a later layout change would move."""
    fig = ax.figure
    # Agg canvases (cnnzoo's own, notebooks') have a renderer; any other gets one drawn for it.
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = []
    legend = ax.get_legend()
    if legend is not None:
        taken.append(legend.get_window_extent(renderer))
    placed = []
    for x, y, name in zip(xs, ys, names, strict=True):
        best = None
        for dx, dy, ha in _LABEL_OFFSETS:
            text = ax.annotate(
                name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha
            )
            # A few pixels of margin, so that two names never touch.
            box = text.get_window_extent(renderer).expanded(1.0, 1.0).padded(3)
            outside = (
                max(0.0, frame.x0 - box.x0)
                + max(0.0, box.x1 - frame.x1)
                + max(0.0, frame.y0 - box.y0)
                + max(0.0, box.y1 - frame.y1)
            )
            overlap = sum(_overlap_area(box, other) for other in taken) + 1e3 * outside
            if best is None or overlap < best[0]:
                if best is not None:
                    best[1].remove()
                best = (overlap, text, box)
            else:
                text.remove()
            if overlap == 0:
                break
        taken.append(best[2])
        placed.append(best[1])
    return placed


def _overlap_area(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


_SPLITS = ("train", "val", "test")
_PERCENT = {"top1": "top-1 (%)", "top5": "top-5 (%)"}
_LEFT_OUT = {"seconds", "top5"}  # timings are not curves; top-5 crowds the picture


def _metric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in rows:
        for key in r:
            split, _, name = key.partition("_")
            if split in _SPLITS and name and name not in _LEFT_OUT and name not in names:
                names.append(name)
    return names


def plot_curves(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "",
    selected_epoch: int | None = None,
) -> Path:
    """One panel per metric of metrics.jsonl rows (train, validation and, when recorded, the test
    curve, labelled as not used for selection), plus the lr; the selected epoch is marked."""
    plt = pyplot()
    names = _metric_names(rows)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4.3 * (len(names) + 1), 3.6), squeeze=False)
    axes = list(axes[0])
    styles = {
        "train": dict(fmt="o-", label="train"),
        "val": dict(fmt="o-", label="validation"),
        "test": dict(fmt="x--", label="test (curve only; not used for selection)"),
    }
    epochs = [r["epoch"] for r in rows]
    for ax, name in zip(axes, names, strict=False):
        scale = 100 if name in _PERCENT else 1
        for split in _SPLITS:
            pts = [(r["epoch"], r[f"{split}_{name}"]) for r in rows if f"{split}_{name}" in r]
            if pts:
                style = styles[split]
                ax.plot([e for e, _ in pts], [scale * v for _, v in pts], style["fmt"], label=style["label"])
        ax.set_ylabel(_PERCENT.get(name, name.replace("_", " ")))
        ax.set_title(_PERCENT.get(name, name.replace("_", " ")).split(" (")[0])
    lr_ax = axes[-1]
    lrs = [r["lr"] for r in rows]
    lr_ax.plot(epochs, lrs, "o-")
    lr_ax.set_ylabel("lr (end of epoch)")
    lr_ax.set_title("learning rate")
    # Log scale only when the lr spans a decade or more (a decay); a flat or gently moving lr reads
    # better on a linear axis than as one point between two decade ticks.
    if all(v > 0 for v in lrs) and max(lrs) >= 10 * min(lrs):
        log_axis(lr_ax, "y")
    else:
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    for ax in axes:
        ax.set_xlabel("epoch")
        epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
        if selected_epoch:
            ax.axvline(
                selected_epoch,
                color="grey",
                alpha=0.6,
                linestyle=":",
                label=f"selected: epoch {selected_epoch} (best validation)",
            )
    for ax in axes[:-1]:
        ax.legend(fontsize=8)
    fig.suptitle(title or "training curves")
    fig.tight_layout()
    return save_png(fig, path)


def plot_confusion(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    import numpy as np

    plt = pyplot()
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = min(16, 2 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        int(m[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (colour: share of the true class; numbers: images)")
    fig.tight_layout()
    return save_png(fig, path)
