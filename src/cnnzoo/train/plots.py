"""Training curves and confusion matrices as PNG, written atomically (matplotlib, the `plot` extra)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnzoo.atomic import atomic_write

__all__ = ["have_matplotlib", "plot_confusion", "plot_curves", "pyplot", "save_png"]


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
    for ax, name in zip(axes, names, strict=False):
        scale = 100 if name in _PERCENT else 1
        for split in _SPLITS:
            pts = [(r["epoch"], r[f"{split}_{name}"]) for r in rows if f"{split}_{name}" in r]
            if pts:
                style = styles[split]
                ax.plot([e for e, _ in pts], [scale * v for _, v in pts], style["fmt"], label=style["label"])
        ax.set_ylabel(_PERCENT.get(name, name.replace("_", " ")))
        ax.legend(fontsize=8)
    lr_ax = axes[-1]
    lr_ax.plot([r["epoch"] for r in rows], [r["lr"] for r in rows], "o-")
    lr_ax.set_ylabel("lr (end of epoch)")
    if all(r["lr"] > 0 for r in rows):
        lr_ax.set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if selected_epoch:
            ax.axvline(selected_epoch, color="grey", alpha=0.5, linestyle=":")
    if selected_epoch:
        axes[0].annotate(
            f"selected: epoch {selected_epoch} (best validation)",
            xy=(0.01, 1.01),
            xycoords="axes fraction",
            fontsize=8,
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
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
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return save_png(fig, path)
