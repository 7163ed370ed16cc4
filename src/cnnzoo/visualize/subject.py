"""What a picture is made of: a model with its normalisation, its layers by name, and images.

A subject comes from a run folder, a checkpoint file (both through `cnnzoo eval`'s loader, so the
run's architecture, classes, mean/std and input size come with it) or a registered model name
(random weights unless ImageNet weights are asked for; pictures then say so in their titles).
Layers are named as `cnnzoo summary` prints them: the model's module names (`conv1`,
`layer1.0.conv2`, and the containers above them, `layer1.0`, whose output is a block's output).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["Subject", "default_layer", "find_layer", "first_conv", "load_images", "load_subject"]

# The statistics torchvision's ImageNet weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Subject:
    """A model in eval mode and what is needed to feed it and to title its pictures."""

    model: nn.Module
    name: str  # the architecture, e.g. lenet5
    input_size: tuple[int, int, int]  # (C, H, W) the model is fed
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    weights: str  # where the weights come from, for titles: "trained run ...", "random weights"
    data: str | None = None  # the dataset a run trained on
    resize_to: int | None = None
    run: dict = field(default_factory=dict, repr=False)

    @property
    def random(self) -> bool:
        return self.weights == "random weights"

    @property
    def label(self) -> str:
        """`lenet5 (trained on fashion-mnist)` or `resnet20 (RANDOM weights)`: the titles' subject."""
        if self.random:
            return f"{self.name} (RANDOM weights, untrained)"
        return f"{self.name} ({self.weights})"

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> the model's input."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input -> pixels in [0, 1], for display."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def load_subject(
    source: str | os.PathLike,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "cpu",
) -> Subject:
    """A run folder, a checkpoint file or a registered model name, as a `Subject`.

    A run (or a checkpoint written by the trainer) brings its classes, mean/std and input size.
    A bare model name gets fresh random weights, or torchvision's ImageNet weights with
    ``pretrained="imagenet"`` (from torch's hub cache); it is fed its registry input size,
    normalised with ImageNet's statistics when pretrained and with mean = std = 0.5 otherwise.
    """
    from cnnzoo.registry import create_model, is_model, model_info

    path = Path(source).expanduser()
    if path.exists():
        if pretrained:
            raise ValueError("--pretrained applies to a model name; a run or checkpoint brings its weights")
        from cnnzoo.train.evaluate import load_model

        loaded = load_model(path, model=model, device=device)
        run = loaded.run
        net = loaded.model
        name = run.get("model") or getattr(net, "model_name", model or type(net).__name__)
        c = int(getattr(net, "in_chans", 0) or run.get("in_chans") or 3)
        size = tuple(run.get("input_size") or (c, *model_info(name).input_size[1:]))
        where = f"trained on {run['data']}" if run.get("data") else f"weights {loaded.path.name}"
        return Subject(
            model=net,
            name=name,
            input_size=size,  # type: ignore[arg-type]
            mean=tuple(run.get("mean") or [0.5] * size[0]),
            std=tuple(run.get("std") or [0.5] * size[0]),
            classes=loaded.classes,
            weights=where,
            data=run.get("data"),
            resize_to=run.get("resize_to"),
            run=run,
        )
    if not is_model(str(source)):
        raise FileNotFoundError(
            f"{str(source)!r} is neither a run folder, a checkpoint file nor a model name (see `cnnzoo list`)"
        )
    name = str(source)
    if pretrained not in (None, "imagenet"):
        raise ValueError(f"--pretrained takes 'imagenet', not {pretrained!r}")
    net = create_model(name, pretrained=pretrained)
    net.to(device).eval()
    size = model_info(name).input_size
    c = size[0]
    imagenet = pretrained == "imagenet" and c == 3
    n_cls = int(getattr(net, "num_classes", 0))
    return Subject(
        model=net,
        name=name,
        input_size=size,
        mean=IMAGENET_MEAN if imagenet else (0.5,) * c,
        std=IMAGENET_STD if imagenet else (0.5,) * c,
        classes=[str(i) for i in range(n_cls)],
        weights="ImageNet weights" if pretrained else "random weights",
    )


# -- layers ---------------------------------------------------------------------------------------
def _few(names: list[str]) -> str:
    return ", ".join(names if len(names) <= 6 else [*names[:3], "...", *names[-3:]])


def find_layer(model: nn.Module, name: str, *, model_name: str = "the model") -> nn.Module:
    """The module called `name` (as `cnnzoo summary` prints it), or a one-line error listing some."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    leaves = [n for n, m in modules.items() if n and not m._modules and _has_weights_or_pool(m)]
    raise ValueError(
        f"{model_name} has no layer {name!r}; layers include {_few(leaves)} "
        f"(`cnnzoo summary {model_name}` lists them all)"
    )


def _has_weights_or_pool(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d | nn.Linear | nn.MaxPool2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d)


def first_conv(model: nn.Module) -> str:
    """The name of the first Conv2d (in definition order, which is the stem in every zoo model)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name
    raise ValueError(f"{getattr(model, 'model_name', type(model).__name__)} has no Conv2d layer")


def spatial_layers(model: nn.Module, input_size: tuple[int, ...]) -> list[str]:
    """Leaf modules whose output is a feature map larger than 1x1, in execution order (one dry run)."""
    order: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:].numel() > 1:
            name = names[id(module)]
            if name not in order:
                order.append(name)

    # nn.Identity placeholders (a post-activation net's empty final norm) only repeat a map.
    leaves = [m for m in model.modules() if not m._modules and not isinstance(m, nn.Identity)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    return order


def default_layer(model: nn.Module, input_size: tuple[int, ...]) -> str:
    """The last feature map before the head (Grad-CAM's choice, Selvaraju et al. 2017, Sec. 3)."""
    order = spatial_layers(model, input_size)
    if not order:
        raise ValueError("the model has no layer with a spatial feature map")
    return order[-1]


# -- images ---------------------------------------------------------------------------------------
def load_images(paths: list[str | os.PathLike], subject: Subject) -> torch.Tensor:
    """Image files as the model's normalised input batch, resized as `cnnzoo predict` does."""
    from cnnzoo.train.evaluate import prepare_images

    return prepare_images(paths, input_size=subject.input_size, mean=subject.mean, std=subject.std)
