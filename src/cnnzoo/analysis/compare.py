"""Models side by side: parameters, MACs, activation memory, receptive field, ImageNet top-1.

The lecture's "accuracy against complexity" plot (seeds/000, "Tiny networks": one family beats
another if it moves the whole curve up and to the left) is `plot_accuracy_vs_macs`; it needs
matplotlib (`pip install cnnzoo[plot]`), the rest of cnnzoo does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnzoo.analysis.profile import profile
from cnnzoo.atomic import atomic_write

__all__ = ["PUBLISHED_TOP1", "compare", "plot_accuracy_vs_macs", "published_top1"]

# ImageNet-1K top-1 (%) of torchvision's IMAGENET1K_V1 weights, single 224 crop (the efficientnets
# at their own resolutions), as published in torchvision's model documentation
# (https://pytorch.org/vision/stable/models.html, "acc@1"; also `Weights.meta["_metrics"]`, which
# tests/test_analysis_cli.py checks this table against). These are torchvision's trainings, not
# the papers' own numbers, but they are the ones a student can reproduce by loading the weights.
# resnext101_64x4d, shufflenet_v2_x1_5 and shufflenet_v2_x2_0 exist in torchvision only with its
# 2022 recipe (longer training, mixup, EMA), so they are not comparable with the 2017 ones.
PUBLISHED_TOP1: dict[str, float] = {
    "alexnet": 56.522,
    "vgg11": 69.02,
    "vgg11_bn": 70.37,
    "vgg13": 69.928,
    "vgg13_bn": 71.586,
    "vgg16": 71.592,
    "vgg16_bn": 73.36,
    "vgg19": 72.376,
    "vgg19_bn": 74.218,
    "googlenet": 69.778,
    "resnet18": 69.758,
    "resnet34": 73.314,
    "resnet50": 76.13,
    "resnet101": 77.374,
    "resnet152": 78.312,
    "resnext50_32x4d": 77.618,
    "resnext101_32x8d": 79.312,
    "resnext101_64x4d": 83.246,
    "wide_resnet50_2": 78.468,
    "wide_resnet101_2": 78.848,
    "densenet121": 74.434,
    "densenet161": 77.138,
    "densenet169": 75.6,
    "densenet201": 76.896,
    "mobilenet_v2": 71.878,
    "shufflenet_v2_x0_5": 60.552,
    "shufflenet_v2_x1_0": 69.362,
    "shufflenet_v2_x1_5": 72.996,
    "shufflenet_v2_x2_0": 76.23,
    "efficientnet_b0": 77.692,
    "efficientnet_b1": 78.642,
    "efficientnet_b2": 80.608,
    "efficientnet_b3": 82.008,
    "efficientnet_b4": 83.384,
    "efficientnet_b5": 83.444,
    "efficientnet_b6": 84.008,
    "efficientnet_b7": 84.122,
}


def published_top1(name: str) -> float | None:
    """torchvision's ImageNet top-1 for a registered model with a torchvision twin, else None."""
    from cnnzoo.registry import model_info

    twin = model_info(name).torchvision
    return PUBLISHED_TOP1.get(twin) if twin else None


def compare(names: Sequence[str], input_size: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per model: input, params, MACs, memory, receptive field, top-1 (None if unknown)."""
    rows = []
    for name in names:
        p = profile(name, input_size)
        rows.append(
            {
                "name": name,
                "input": "x".join(map(str, p.input_size)),
                "params": p.total_params,
                "macs": p.total_macs,
                "memory_bytes": p.total_memory_bytes,
                "receptive_field": p.receptive_field,
                "top1": published_top1(name),
            }
        )
    return rows


def plot_accuracy_vs_macs(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Top-1 against GMACs (log scale), one labelled point per model, written atomically as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as e:
        raise ImportError("the plot needs matplotlib: pip install 'cnnzoo[plot]'") from e
    points = [r for r in rows if r.get("top1") is not None]
    if not points:
        raise ValueError("none of these models has a published top-1; nothing to plot")
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in points:
        ax.scatter(r["macs"] / 1e9, r["top1"], s=max(r["params"] / 1e6, 4) * 3, alpha=0.6)
        ax.annotate(
            r["name"], (r["macs"] / 1e9, r["top1"]), fontsize=8, xytext=(4, 2), textcoords="offset points"
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("GMACs per image (log scale)")
    ax.set_ylabel("ImageNet top-1 (%), torchvision weights")
    ax.set_title("Accuracy against cost (marker area ~ parameters)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    # A crash halfway leaves the old file (or none), never a truncated PNG.
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
