"""The lectures' recipes: named sets of TrainConfig fields, each citing where its numbers come from.

A recipe fills in the hyper-parameters a paper used; anything the user sets explicitly wins
(`cnnzoo.train.resolve_config`).

The paper recipes reproduce a paper's schedule of tens to hundreds of epochs. The defaults
(`default_recipe`) are what `cnnzoo train NAME --data fashion-mnist|cifar10 --epochs 5..30` uses
when no `--recipe` is given: settings under which each family trains well in a short run from
scratch. What decides them is mostly whether a net has BatchNorm: with it, SGD at lr 0.1 trains
any depth; without it (LeNet-5's sigmoids, AlexNet, ZFNet, VGG without _bn, the 2014 GoogLeNet)
lr 0.1 SGD diverges or stalls, and AdamW, whose step does not scale with the gradient, trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_RECIPES",
    "FAST",
    "FAST_RECIPES",
    "MODEL_DEFAULT_RECIPES",
    "RECIPES",
    "Recipe",
    "UnknownRecipeError",
    "default_recipe",
    "fast_recipe",
]


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

# Fast Fashion-MNIST LeNet-5, the 1998 architecture unchanged (sigmoid, average pooling), and the
# lenet family's default. SGD stalls on the sigmoids' plateau (one-cycle SGD, batch 128: 83-88%
# after 5 epochs at lr 0.2-1.0), AdamW does not: one-cycle (Smith & Topin 2017, arXiv:1708.07120)
# AdamW, no weight decay (0.05 cost 0.3 points, 0.2 cost 2.5: the net underfits in runs this
# short). Tuned in this project on 2 CPU cores, as `cnnzoo train` runs it: trained on a stratified
# 90% of the 60,000 training images, the epoch chosen on the other 10%, test top-1 of that epoch
# (runs with --seed 0 / 1 / 2; one pass 6-11 s on one thread). From PyTorch's default
# initialisation:
#   batch 64, peak 0.01 (the earlier setting):  5 epochs 89.0%
#   batch 32, peak 0.01 (this recipe):          5 epochs 89.8 / 89.3 / 89.1%; 8 epochs 90.3 / 89.9%;
#                                               15 epochs 91.5 / 90.4%
#   batch 16, peak 0.01, pct_start 0.3, label smoothing 0.1: 5 epochs 90.1 / 89.2 / 89.6%
# Peaks of 0.02-0.03, batch 8-64, pct_start 0.1-0.3, cosine instead of one-cycle, label smoothing,
# 32 px inputs and Adam's betas (0.8, 0.99) all stayed within 88.1-90.2% after 5 epochs, and an
# exponential moving average of the weights (decay 0.999 / 0.9995) added 0.07 points. What the
# optimiser could not fix was the start: LeNet-5 now starts its sigmoids from Glorot's uniform x 4
# (models/lenet.py), and this recipe's 5 epochs give, seeds 0-4: 90.30 / 90.15 / 90.01 / 90.13 /
# 90.11% (validation 90.70 / 90.13 / 90.32 / 90.88 / 90.42%; peak 0.02: the same 90.70% validation
# on seed 0). Plain Glorot (gain 1) gave 89.94% on seed 0.
_LENET_FAST = Recipe(
    "lenet-fast",
    "Smith & Topin 2017, arXiv:1708.07120 (one-cycle); Loshchilov & Hutter 2017, arXiv:1711.05101 "
    "(AdamW); tuned in this project on Fashion-MNIST (5 epochs: 90.30%, 15 epochs: 91.32% test top-1)",
    dict(
        optimizer="adamw",
        lr=0.01,
        weight_decay=0.0,
        batch_size=32,
        schedule="onecycle",
        pct_start=0.2,
        epochs=15,
        augment=None,
    ),
    "LeNet-5 (sigmoid, Glorot x 4 start) to >= 90% Fashion-MNIST test top-1 in five epochs (90.0-90.3%, seeds 0-4)",
)

# -- defaults: short runs from scratch on Fashion-MNIST or CIFAR -----------------------------------

# Nets designed for 32x32 CIFAR images, all with BatchNorm: the wide-ResNet recipe (Zagoruyko &
# Komodakis 2016, arXiv:1605.07146, sec. 4: SGD with Nesterov momentum 0.9, lr 0.1, weight decay
# 5e-4, batch 128, crop-flip), with cosine decay (Loshchilov & Hutter 2016, arXiv:1608.03983) in
# place of the step schedule, so that a run of any length ends annealed. One epoch of linear
# warm-up: He et al. 2015 (sec. 4.2) start ResNet-110 at lr 0.01 because 0.1 is "slightly too
# large to start converging"; Goyal et al. 2017 (arXiv:1706.02677) make the warm-up linear.
# Measured in this project (2 CPU cores): ResNet-20 on Fashion-MNIST, 3 epochs on 90% of the
# training images, the epoch chosen on the other 10%: 91.3% test top-1.
_CIFAR_SGD = Recipe(
    "cifar-sgd",
    "Zagoruyko & Komodakis 2016, arXiv:1605.07146, sec. 4; Loshchilov & Hutter 2016, arXiv:1608.03983 "
    "(cosine); Goyal et al. 2017, arXiv:1706.02677 (warm-up)",
    dict(
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        batch_size=128,
        schedule="cosine",
        warmup=1.0,
        epochs=30,
        augment="crop-flip",
    ),
    "default for the CIFAR ResNets, plain nets, pre-activation, wide and ResNeXt nets, DenseNet-BC",
)

# ImageNet-designed nets with BatchNorm, trained from scratch: "Bag of Tricks" (He, Zhang, Zhang,
# Zhang, Xie, Li 2018, arXiv:1812.01187), sec. 2.1 and 3-5: Nesterov SGD, momentum 0.9, weight
# decay 1e-4, lr 0.1 x batch / 256 (0.05 at batch 128), linear warm-up, cosine decay, label
# smoothing 0.1. Their 5-epoch warm-up is for batch 1024 over 120 epochs; one epoch here.
# Measured in this project: ResNet-18 on 5,000 Fashion-MNIST images (28 px), 2 epochs: 79.2%.
_IMAGENET_SGD = Recipe(
    "imagenet-sgd",
    "He et al. 2018, Bag of Tricks for Image Classification with CNNs, arXiv:1812.01187, sec. 2-5",
    dict(
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        batch_size=128,
        schedule="cosine",
        warmup=1.0,
        label_smoothing=0.1,
        epochs=30,
        augment="crop-flip",
    ),
    "default for ImageNet ResNets (plain, pre-act, SE, ResNeXt, wide), DenseNet, GoogLeNet, Inception v3/v4, "
    "Xception and VGG with BN",
)

# The efficient nets: AdamW (Loshchilov & Hutter 2017, arXiv:1711.05101) at lr 2e-3, weight decay
# 0.05, cosine decay, batch 128, the recipe this project's efficiency and nas experiments train
# them with (reports/efficiency: 10,000 Fashion-MNIST images, 3 epochs, test top-1 MobileNet v2
# 81.0%, ShuffleNet v2 0.5x 79.1%, MobileNet v1 0.5x 78.2%, EfficientNet-B0 70.6%). Their papers'
# recipes do not fit a TrainConfig: RMSprop (MobileNet v2, EfficientNet), weight decay 4e-5 kept
# off the depthwise filters (MobileNet v1, ShuffleNet), batches of 1024-4096. Added here for runs
# on the full data set: one epoch of warm-up, which Adam's first steps need (Liu et al. 2019,
# arXiv:1908.03265), and crop-flip.
_ADAMW = Recipe(
    "adamw-cosine",
    "Loshchilov & Hutter 2017, arXiv:1711.05101 (AdamW); this project's efficiency experiment "
    "(reports/efficiency: MobileNet v2 81.0% after 3 epochs of 10,000 Fashion-MNIST images)",
    dict(
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        batch_size=128,
        schedule="cosine",
        warmup=1.0,
        epochs=30,
        augment="crop-flip",
    ),
    "default for MobileNet, ShuffleNet, EfficientNet and the NAS nets",
)

# Nets without BatchNorm (AlexNet, ZFNet, VGG without _bn, the 2014 GoogLeNet, Network in
# Network, SqueezeNet): their papers'
# SGD at lr 0.01 needed ~90 epochs and, for VGG's deeper configurations, initialisation from
# the trained shallower net (Simonyan & Zisserman, sec. 3.1). AdamW's per-parameter step size
# does not depend on how the gradient's scale decays through the layers. Measured in this project
# on 2 CPU cores (5,000 Fashion-MNIST training images, 2 epochs, test top-1): AlexNet at 64 px,
# 12.3% under SGD lr 0.1 + cosine (TrainConfig's own defaults; chance) and 66.9% under this
# recipe; VGG-11 at 32 px, 61.5% under this recipe, its loss falling from the first epoch.
_ADAMW_NO_BN = Recipe(
    "adamw-nobn",
    "Loshchilov & Hutter 2017, arXiv:1711.05101 (AdamW); tuned in this project on Fashion-MNIST subsets "
    "(AlexNet 66.9%, VGG-11 61.5% after 2 epochs of 5,000 images)",
    dict(
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        batch_size=128,
        schedule="cosine",
        warmup=1.0,
        epochs=30,
        augment="crop-flip",
    ),
    "default for AlexNet, ZFNet, VGG without BatchNorm, the 2014 GoogLeNet, Network in Network and SqueezeNet",
)

# -- time to accuracy: `--recipe fast` -----------------------------------------------------------

# What the fast training entries teach (Page's DAWNBench CIFAR-10 ResNet, 2018; Jordan's airbench,
# 2024, arXiv:2404.00498): one-cycle schedules, batches as large as the accuracy allows, label
# smoothing, channels_last and bf16 where the hardware has them. Two of their tricks are not here:
# the engine has no EMA/lookahead weights and no flip test-time augmentation, and selection and
# `cnnzoo eval` read the plain weights of one forward pass.
#
# LeNet-5 to 90% Fashion-MNIST test top-1: the modern LeNet (ReLU, max pooling; the 1998 net's
# sigmoids and average pooling need 5 epochs to reach 90%, see lenet-fast), one-cycle AdamW at
# batch 256, label smoothing 0.1 (Szegedy et al. 2015, arXiv:1512.00567). Tuned in this project,
# seed 0, as `cnnzoo train` runs it (54,000 training images, the rest validation), test top-1
# after the last epoch; the plain loop it races (the issue's: same net, AdamW one-cycle peak
# 0.01, batch 256, all 60,000 images) gave 90.22%:
#   batch 256, 3 epochs, peak 0.01 / 0.03:                   89.80 / 89.78%
#   batch 512, 3 epochs, peak 0.04:                          89.48%
#   batch 256, 3 epochs, peak 0.01, label smoothing 0.1:     90.27%
#   batch 256, 3 epochs, peak 0.02, warm-up 15%, smoothing:  90.33% (this recipe)
#   batch 96-128, 2 epochs, peak 0.01-0.02, +- smoothing:   89.20-89.91%: two epochs fall short
# An epoch at batch 96-256 costs about the same per image on this CPU, so the time to 90% is the
# number of epochs; the engine's epoch is 10% shorter than the plain loop's (the validation
# tenth is held out). bf16 does not pay for a net this small (0.96-1.05x, BENCHMARKS.md).
_LENET_RELU_FAST = Recipe(
    "lenet-relu-fast",
    "Smith & Topin 2017, arXiv:1708.07120 (one-cycle); Loshchilov & Hutter 2017, arXiv:1711.05101 "
    "(AdamW); LeNet-5 with ReLU and max pooling (the 2010s' LeNet); tuned in this project on Fashion-MNIST",
    dict(
        model_kwargs={"act": "relu"},  # max pooling follows (LeNet5's pool=None picks it for ReLU)
        optimizer="adamw",
        lr=0.02,
        weight_decay=0.0,
        batch_size=256,
        schedule="onecycle",
        pct_start=0.15,
        label_smoothing=0.1,
        epochs=3,
        augment=None,
        channels_last=True,
    ),
    "modern LeNet-5 (ReLU, max pooling) to >= 90% Fashion-MNIST test top-1 in three epochs",
)

# ResNet-20 (and the other CIFAR nets, all with BatchNorm) to 93% Fashion-MNIST test top-1:
# one-cycle SGD at a large peak, label smoothing, bf16 and channels_last (bf16 is 1.45x on this
# CPU's ResNet-20 step; on a CPU without native bf16 pass --no-amp). Flips only: the garments are
# centred, and random crops slow a short run's fit more than they regularise it. Measured in this
# project, as `cnnzoo train` runs it, seed 0 (test top-1 of the curve; selected on validation):
#   crop + flip, 10 epochs: 92.64% after 8, 93.60% after 9; selected epoch 10, 93.59%
#   flip, 8 epochs (this recipe): 92.63% after 6, 93.46% after 7; selected epoch 8, 93.99%
# and, seeds 1 / 2: 93% first after epoch 7 / 6; selected epoch 8, 93.80% / 93.74%. Re-run on a
# quiet machine, seeds 0-4: 93% first after epoch 7 / 7 / 6 / 7 / 7, 307-444 s of training (two
# threads); selected epoch 93.67-93.93% (BENCHMARKS.md).
# The CIFAR nets' other families share it untuned.
_CIFAR_FAST = Recipe(
    "cifar-fast",
    "Smith & Topin 2017, arXiv:1708.07120 (one-cycle, large lr); Page 2018, How to train your ResNet "
    "(DAWNBench); Jordan 2024, arXiv:2404.00498 (airbench); tuned in this project on Fashion-MNIST",
    dict(
        optimizer="sgd",
        lr=0.2,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        batch_size=256,
        schedule="onecycle",
        pct_start=0.25,
        label_smoothing=0.1,
        epochs=8,
        augment="flip",
        amp=True,
        channels_last=True,
    ),
    "ResNet-20 to 93% Fashion-MNIST test top-1 in the least time measured",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _RESNET,
        _ALEXNET,
        _VGG,
        _LENET_FAST,
        _CIFAR_SGD,
        _IMAGENET_SGD,
        _ADAMW,
        _ADAMW_NO_BN,
        _LENET_RELU_FAST,
        _CIFAR_FAST,
    )
}

# `--recipe fast`: the family's time-to-accuracy recipe. LeNet-5 and ResNet-20 were measured;
# the other CIFAR families (BatchNorm nets with the same stem and cifar-sgd as their default)
# share ResNet-20's. Other families get a message naming their default recipe instead of an
# untested guess.
FAST = "fast"
FAST_RECIPES: dict[str, str] = {
    "lenet": "lenet-relu-fast",
    "cifar_resnet": "cifar-fast",
    "cifar_plain": "cifar-fast",
    "cifar_preact_resnet": "cifar-fast",
    "resnext_cifar": "cifar-fast",
    "wide_resnet_cifar": "cifar-fast",
    "densenet_cifar": "cifar-fast",
}

# The default recipe of each registry family (`cnnzoo list`). CIFAR and ImageNet variants of one
# architecture are different families: they differ in stem, width and the recipe they came with.
DEFAULT_RECIPES: dict[str, str] = {
    "lenet": "lenet-fast",
    "alexnet": "adamw-nobn",
    "zfnet": "adamw-nobn",
    "vgg": "imagenet-sgd",  # the _bn variants; the others are in MODEL_DEFAULT_RECIPES
    "googlenet": "imagenet-sgd",
    "inception": "imagenet-sgd",
    "xception": "imagenet-sgd",
    "nin": "adamw-nobn",
    "squeezenet": "adamw-nobn",
    "resnet": "imagenet-sgd",
    "preact_resnet": "imagenet-sgd",
    "se_resnet": "imagenet-sgd",
    "resnext": "imagenet-sgd",
    "wide_resnet": "imagenet-sgd",
    "densenet": "imagenet-sgd",
    "cifar_resnet": "cifar-sgd",
    "cifar_plain": "cifar-sgd",
    "cifar_preact_resnet": "cifar-sgd",
    "resnext_cifar": "cifar-sgd",
    "wide_resnet_cifar": "cifar-sgd",
    "densenet_cifar": "cifar-sgd",
    "mobilenet": "adamw-cosine",
    "shufflenet": "adamw-cosine",
    "efficientnet": "adamw-cosine",
    "nas": "adamw-cosine",
}

# Members of a family that differ from it in what decides the recipe: no BatchNorm.
MODEL_DEFAULT_RECIPES: dict[str, str] = {
    "vgg11": "adamw-nobn",
    "vgg13": "adamw-nobn",
    "vgg16": "adamw-nobn",
    "vgg19": "adamw-nobn",
    "googlenet_paper": "adamw-nobn",  # LRN, no BatchNorm (torchvision's googlenet has it)
    "inception_v1": "adamw-nobn",
}


class UnknownRecipeError(ValueError):
    pass


def default_recipe(model_name: str) -> str:
    """The recipe `cnnzoo train MODEL` uses when no --recipe is given.

    A family this table does not know (a model registered outside cnnzoo) gets "adamw-cosine":
    AdamW trains nets with and without BatchNorm alike.
    """
    from cnnzoo.registry import model_info

    family = model_info(model_name).family  # UnknownModelError for a name not registered
    return MODEL_DEFAULT_RECIPES.get(model_name) or DEFAULT_RECIPES.get(family, "adamw-cosine")


def fast_recipe(model_name: str) -> str:
    """The recipe `--recipe fast` means for `model_name`: its family's entry in FAST_RECIPES.

    UnknownRecipeError (a ValueError, one line on the CLI) for a family without one, naming the
    families that have one and the model's default recipe.
    """
    from cnnzoo.registry import model_info

    family = model_info(model_name).family  # UnknownModelError for a name not registered
    if family in FAST_RECIPES:
        return FAST_RECIPES[family]
    families = ", ".join(sorted(set(FAST_RECIPES)))
    raise UnknownRecipeError(
        f"no fast recipe for {model_name} (family {family}); the fast recipes cover {families}; "
        f"drop --recipe to train with its default recipe, {default_recipe(model_name)}"
    )
