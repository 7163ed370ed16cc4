"""Pictures of counting runs as PNG (matplotlib, the `plot` extra), written atomically:
a density map over its image, estimated against true counts, and the training curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnzoo.train.plots import epoch_axis, log_axis, pyplot, save_png

__all__ = ["plot_count_curves", "plot_density_overlay", "plot_scatter"]


def plot_density_overlay(
    image: np.ndarray,
    density: np.ndarray,
    path: str | os.PathLike,
    *,
    count: float | None = None,
    true_count: float | None = None,
    title: str = "",
) -> Path:
    """The image with its density map (any resolution, stretched over it) drawn semi-transparently."""
    plt = pyplot()
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(8, 8 * h / max(w, 1) + 0.6))
    ax.imshow(image)
    d = np.asarray(density, dtype=np.float64)
    # Extent in pixel edges: a map at stride s covers ceil(H/s)*s rows, the padded bottom included.
    dh, dw = d.shape
    sy, sx = -(-h // dh) if dh else 1, -(-w // dw) if dw else 1
    top = max(float(d.max()), 1e-12)
    level = np.clip(d / top, 0, 1)
    # Opacity grows with the density, so empty ground stays clear and crowds glow.
    rgba = plt.get_cmap("jet")(level)
    rgba[..., 3] = 0.75 * np.sqrt(level)
    ax.imshow(
        rgba,
        extent=(-0.5, dw * sx - 0.5, dh * sy - 0.5, -0.5),
        interpolation="bilinear",
    )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    parts = [title or "density map"]
    if count is not None:
        parts.append(f"estimated count {count:.1f}")
    if true_count is not None:
        parts.append(f"true {true_count:g}")
    ax.set_title(", ".join(parts))
    return save_png(fig, path)


def plot_scatter(rows: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Estimated against true count, one dot per image, with the identity line."""
    plt = pyplot()
    true = np.array([r["true"] for r in rows], dtype=np.float64)
    est = np.array([r["estimate"] for r in rows], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    top = max(1.0, float(np.max(true, initial=0)), float(np.max(est, initial=0))) * 1.05
    low = min(0.0, float(np.min(est, initial=0)))
    ax.plot([low, top], [low, top], "k--", lw=1, label="estimate = truth")
    ax.scatter(true, est, s=14, alpha=0.7)
    ax.set_xlim(low, top)
    ax.set_ylim(low, top)
    ax.set_xlabel("true count")
    ax.set_ylabel("estimated count")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(title or "estimated against true count")
    fig.tight_layout()
    return save_png(fig, path)


def plot_count_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Training loss, validation MAE/RMSE and lr per epoch from metrics.jsonl rows."""
    plt = pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    losses = [r["train_loss"] for r in rows]
    axes[0].plot(epochs, losses, "o-")
    axes[0].set_ylabel("training loss (density MSE)")
    axes[0].set_title("training loss")
    if all(v > 0 for v in losses):
        log_axis(axes[0], "y")
    val = [r for r in rows if "val_mae" in r]
    axes[1].plot([r["epoch"] for r in val], [r["val_mae"] for r in val], "o-", label="val MAE")
    axes[1].plot([r["epoch"] for r in val], [r["val_rmse"] for r in val], "o-", label="val RMSE")
    axes[1].plot(epochs, [r["train_crop_mae"] for r in rows], "o-", alpha=0.6, label="train MAE (crops)")
    axes[1].set_ylabel("count error")
    axes[1].set_title("count error")
    axes[1].legend(fontsize=8)
    lrs = [r["lr"] for r in rows]
    axes[2].plot(epochs, lrs, "o-")
    axes[2].set_ylabel("lr (end of epoch)")
    axes[2].set_title("learning rate")
    # As the classifier's curves: a log axis for a decay over a decade or more, else linear with
    # the power of ten written once above the axis (not "0.00010" on every tick).
    if all(v > 0 for v in lrs) and max(lrs) >= 10 * min(lrs):
        log_axis(axes[2], "y")
    else:
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    for ax in axes:
        ax.set_xlabel("epoch")
        epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "counting training curves")
    fig.tight_layout()
    return save_png(fig, path)
