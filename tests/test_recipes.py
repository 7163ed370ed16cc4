"""The default recipes: every registered model has one, every recipe is a valid TrainConfig, and a
net without BatchNorm never gets the large-lr SGD that diverges without it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cnnzoo.registry import UnknownModelError, create_model, list_models, model_info
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.recipes import (
    DEFAULT_RECIPES,
    FAST_RECIPES,
    MODEL_DEFAULT_RECIPES,
    RECIPES,
    default_recipe,
)

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def has_batchnorm(name: str) -> bool:
    with torch.device("meta"):
        model = create_model(name, num_classes=10)
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_a_default_recipe(name):
    recipe = default_recipe(name)
    assert recipe in RECIPES
    # A family missing from the table would silently fall back; every registered one is listed.
    assert model_info(name).family in DEFAULT_RECIPES


@pytest.mark.parametrize("recipe", list(RECIPES.values()), ids=lambda r: r.name)
def test_recipe_values_are_a_valid_config(recipe):
    assert set(recipe.values) <= FIELDS
    assert recipe.source
    TrainConfig(model="resnet20", data="cifar10", **recipe.values).validate()


def test_tables_name_existing_recipes_and_models():
    assert set(DEFAULT_RECIPES.values()) | set(MODEL_DEFAULT_RECIPES.values()) <= set(RECIPES)
    models = set(list_models())
    assert set(MODEL_DEFAULT_RECIPES) <= models
    # An exception is for a member of a family that differs from the family's default.
    for name, recipe in MODEL_DEFAULT_RECIPES.items():
        assert DEFAULT_RECIPES[model_info(name).family] != recipe, name


@pytest.mark.parametrize("name", list_models())
def test_nets_without_batchnorm_get_no_large_lr_sgd(name):
    # Measured: AlexNet (5,000 Fashion-MNIST images at 64 px, 2 epochs) stays at chance, 12% test
    # top-1, under SGD lr 0.1; with its default (AdamW 1e-3) it reaches 67%.
    values = RECIPES[default_recipe(name)].values
    if not has_batchnorm(name):
        assert values["optimizer"] == "adamw" or values["lr"] <= 0.01, name


def test_family_distinctions():
    assert default_recipe("lenet5") == "lenet-fast"
    assert default_recipe("resnet20") == "cifar-sgd"  # CIFAR stem, 32 x 32 design
    assert default_recipe("resnet18") == "imagenet-sgd"
    assert default_recipe("vgg11") == "adamw-nobn" and default_recipe("vgg11_bn") == "imagenet-sgd"
    assert default_recipe("googlenet_paper") == "adamw-nobn"
    assert default_recipe("googlenet") == "imagenet-sgd"
    with pytest.raises(UnknownModelError):
        default_recipe("resnet21")


def test_default_lenet_recipe_leaves_the_plateau(one_thread):
    """Cheap and behavioural: 512 images, each one of ten fixed random patterns under as much
    noise; in 30 passes (a few hundred steps, ~2 s) the sigmoid LeNet-5 fits them under its default
    recipe, and stays on the sigmoids' plateau, at chance, under TrainConfig's own defaults (SGD
    lr 0.1, batch 128), which is what `cnnzoo train lenet5` used before it had a recipe."""
    from cnnzoo.train.optim import LRSchedule, build_optimizer

    def accuracy_after(values: dict) -> float:
        g = torch.Generator().manual_seed(0)
        patterns = torch.rand(10, 1, 28, 28, generator=g)
        y = torch.arange(512) % 10
        x = patterns[y] + torch.randn(512, 1, 28, 28, generator=g)
        x = (x - x.mean()) / x.std()
        config = TrainConfig(model="lenet5", data="synthetic", **{**values, "epochs": 30})
        torch.manual_seed(0)
        model = create_model("lenet5", num_classes=10)
        optimizer = build_optimizer(model, config)
        bs = config.batch_size
        schedule = LRSchedule(optimizer, config, 512 // bs)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        for _ in range(config.epochs):
            for i in range(0, 512 - bs + 1, bs):
                loss = loss_fn(model(x[i : i + bs]), y[i : i + bs])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    assert accuracy_after(RECIPES[default_recipe("lenet5")].values) > 0.8
    assert accuracy_after({}) < 0.3


# -- `--recipe fast` -------------------------------------------------------------------------------
def test_fast_resolves_per_family():
    from cnnzoo.train import UnknownRecipeError, resolve_config
    from cnnzoo.train.recipes import FAST_RECIPES, fast_recipe

    assert fast_recipe("lenet5") == "lenet-relu-fast"
    assert fast_recipe("resnet20") == fast_recipe("resnet110") == "cifar-fast"
    cfg = resolve_config("fast", model="lenet5", data="fashion-mnist")
    # The config records what "fast" resolved to, with that recipe's values.
    assert cfg.recipe == "lenet-relu-fast" and cfg.model_kwargs == {"act": "relu"}
    assert (cfg.batch_size, cfg.schedule, cfg.epochs) == (256, "onecycle", 3)
    r20 = resolve_config("fast", model="resnet20", data="fashion-mnist")
    assert r20.recipe == "cifar-fast" and r20.amp and r20.channels_last and r20.label_smoothing > 0
    # A family without a measured fast recipe gets a message naming its default recipe.
    with pytest.raises(UnknownRecipeError, match="imagenet-sgd"):
        fast_recipe("resnet18")
    with pytest.raises(UnknownRecipeError, match="adamw-cosine"):
        resolve_config("fast", model="mobilenet_v2", data="cifar10")
    with pytest.raises(ValueError, match="model"):
        resolve_config("fast", data="cifar10")
    assert set(FAST_RECIPES) <= set(DEFAULT_RECIPES) and set(FAST_RECIPES.values()) <= set(RECIPES)


@pytest.mark.parametrize("name", [n for n in list_models() if model_info(n).family in set(FAST_RECIPES)])
def test_fast_recipe_builds_its_models(name):
    from cnnzoo.train.recipes import fast_recipe

    kwargs = RECIPES[fast_recipe(name)].values.get("model_kwargs", {})
    with torch.device("meta"):
        model = create_model(name, num_classes=10, in_chans=1, **kwargs)
    if name.startswith("lenet"):  # the modern LeNet: ReLU, and the max pooling that comes with it
        assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())
        assert not any(isinstance(m, nn.AvgPool2d | nn.Sigmoid) for m in model.modules())


def test_recipe_model_kwargs_merge_with_the_users():
    from cnnzoo.train import resolve_config

    added = resolve_config("lenet-relu-fast", model="lenet5", data="mnist", model_kwargs={"img_size": 32})
    assert added.model_kwargs == {"act": "relu", "img_size": 32}
    replaced = resolve_config("lenet-relu-fast", model="lenet5", data="mnist", model_kwargs={"act": "tanh"})
    assert replaced.model_kwargs == {"act": "tanh"}
    # The recipe's table is not changed by a run that overrides it, nor by one that edits its config.
    resolve_config("fast", model="lenet5", data="mnist").model_kwargs["img_size"] = 32
    assert RECIPES["lenet-relu-fast"].values["model_kwargs"] == {"act": "relu"}
    assert "model act=relu" in resolve_config("fast", model="lenet5", data="mnist").describe()
    assert "model" not in resolve_config("lenet-fast", model="lenet5", data="mnist").describe().split(", ")[1]
