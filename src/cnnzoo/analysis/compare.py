"""Models side by side: parameters, MACs, activation memory, receptive field, ImageNet accuracy.

Two kinds of accuracy stand side by side, and they answer different questions:

- torchvision's published top-1 and top-5 of its single-model weights (one network, one 224 centre
  crop, the 50,000 validation images): what a student gets by loading those weights;
- the ILSVRC top-5 error of the family's competition entry (the lecture's "ILSVRC top-5 error
  rate" chart): ensembles of several networks, each tested on many crops and scales, on the
  competition's test set. That is why AlexNet's entry shows 16.4% where one torchvision AlexNet
  misses 20.9% of the top-5, and ResNet's 3.57% where one ResNet-152 misses 5.95%.

The lecture's "accuracy against complexity" plot (after Canziani et al. 2016: one family beats
another if it moves the whole curve up and to the left) is `plot_accuracy_vs_macs`; it needs
matplotlib (`pip install cnnzoo[plot]`), the rest of cnnzoo does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnzoo.analysis.profile import profile
from cnnzoo.train.plots import save_png

__all__ = [
    "ILSVRC_TOP5_ERROR",
    "PUBLISHED_TOP1",
    "compare",
    "ilsvrc_top5_error",
    "plot_accuracy_vs_macs",
    "published_top1",
    "published_top5",
]

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


# The ILSVRC classification results (Russakovsky et al. 2015, arXiv:1409.0575, and the
# challenge's results pages), top-5 error (%) on the test set, by the family of the registered
# models (`model_info(name).family`). Each is an ensemble with multi-crop testing, as its paper says:
ILSVRC_TOP5_ERROR: dict[str, tuple[int, float, str]] = {
    # Krizhevsky et al. 2012, Sec. 6 and Table 2: five CNNs averaged (seven, two of them
    # pre-trained on more data, gave the winning 15.3%); ten crops per image.
    "alexnet": (2012, 16.4, "SuperVision (AlexNet), 5 CNNs, 10 crops"),
    # The 2013 winner Clarifai (Zeiler's team) without outside data, an ensemble of ZFNet-style nets.
    "zfnet": (2013, 11.7, "Clarifai (ZFNet), ensemble"),
    # Simonyan & Zisserman 2014, Table 7: the submission, 7 nets, multi-scale and multi-crop;
    # second place in classification that year.
    "vgg": (2014, 7.3, "VGG, 7 nets, multi-scale"),
    # Szegedy et al. 2014, Tables 2-3: 7 models, 144 crops per image; 6.67% printed as 6.7.
    "googlenet": (2014, 6.7, "GoogLeNet, 7 models, 144 crops"),
    # He et al. 2015, Table 5: six models of different depths (two ResNet-152), multi-scale.
    "resnet": (2015, 3.57, "MSRA (ResNet), 6 models"),
}


def ilsvrc_top5_error(name: str) -> float | None:
    """The ILSVRC top-5 error (%) of the competition entry built from `name`'s family, else None."""
    from cnnzoo.registry import model_info

    entry = ILSVRC_TOP5_ERROR.get(model_info(name).family)
    return entry[1] if entry else None


def published_top5(name: str) -> float | None:
    """torchvision's ImageNet top-5 (%) of the same weights as `published_top1`, else None.

    Read from torchvision's weight enum (`meta["_metrics"]["ImageNet-1K"]["acc@5"]`): metadata
    that ships with torchvision, so nothing is downloaded."""
    if published_top1(name) is None:
        return None
    from torchvision.models import get_model_weights

    from cnnzoo.registry import model_info

    twin = model_info(name).torchvision
    return float(get_model_weights(twin).IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]["acc@5"])


def published_top1(name: str) -> float | None:
    """torchvision's ImageNet top-1 for a registered model with a torchvision twin, else None."""
    from cnnzoo.registry import model_info

    twin = model_info(name).torchvision
    return PUBLISHED_TOP1.get(twin) if twin else None


def compare(names: Sequence[str], input_size: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per model: input, params, MACs, memory, receptive field, torchvision's top-1 and
    top-5, and the ILSVRC top-5 error of the family's competition entry (None where unknown)."""
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
                "top5": published_top5(name),
                "ilsvrc_top5_error": ilsvrc_top5_error(name),
            }
        )
    return rows


def plot_accuracy_vs_macs(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Top-1 against GMACs (log scale), one labelled point per model, written atomically as PNG.

    Models without a published top-1 (cnnzoo's own variants such as ``alexnet_paper``, the CIFAR
    nets) are named under the plot rather than dropped; when no model has one, the plot shows what
    is known of all of them - parameters against multiply-adds - and says why."""
    from cnnzoo.train.plots import label_points, log_axis, pyplot

    plt = pyplot()
    known = [r for r in rows if r.get("top1") is not None]
    unknown = [r["name"] for r in rows if r.get("top1") is None]
    shown = known or list(rows)
    if not shown:
        raise ValueError("no models to plot")
    gmacs = [r["macs"] / 1e9 for r in shown]
    ys = [r["top1"] for r in shown] if known else [r["params"] / 1e6 for r in shown]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [max(r["params"] / 1e6, 4) * 3 for r in shown] if known else [30] * len(shown)
    ax.scatter(gmacs, ys, s=sizes, alpha=0.6, c=[f"C{i % 10}" for i in range(len(shown))])
    ax.margins(x=0.15, y=0.12)  # room for the labels of the outermost points
    log_axis(ax, "x")
    ax.set_xlabel("GMACs per image (log scale)")
    if known:
        ax.set_ylabel("ImageNet top-1 (%), torchvision weights")
        ax.set_title("Accuracy against cost (marker area ~ parameters)")
    else:
        log_axis(ax, "y")
        ax.set_ylabel("parameters (millions, log scale)")
        ax.set_title("Parameters against cost (no published ImageNet top-1 for these models)")
    ax.grid(True, which="both", alpha=0.3)
    if known and unknown:
        fig.text(
            0.01,
            0.01,
            _wrap("no published ImageNet top-1, not plotted: " + ", ".join(unknown)),
            fontsize=8,
            va="bottom",
        )
        fig.tight_layout(rect=(0, 0.06 + 0.03 * _wrap(", ".join(unknown)).count("\n"), 1, 1))
    else:
        fig.tight_layout()
    label_points(ax, gmacs, ys, [r["name"] for r in shown], fontsize=8)
    # A crash halfway leaves the old file (or none), never a truncated PNG.
    return save_png(fig, Path(path), dpi=120)


def _wrap(text: str, width: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
