"""The model registry: one decorator, one factory, one catalogue.

Every builder is registered with the facts a user asks about first (family, paper, year, the
input it was designed for) so that `list_models`, `model_info` and the CLI never have to build
a model to answer.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = [
    "ModelInfo",
    "UnknownModelError",
    "create_model",
    "is_model",
    "list_models",
    "model_info",
    "register",
]


class UnknownModelError(KeyError):
    """A model name that is not registered; the message suggests the closest names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture without building it."""

    name: str
    family: str
    paper: str
    year: int
    input_size: tuple[int, int, int]  # (C, H, W) the architecture was designed for
    min_input_size: int  # smallest H = W the architecture accepts at its default settings
    num_classes: int  # classes of the default head
    torchvision: str | None = None  # torchvision's builder of the same architecture, if any
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


def register(
    *,
    family: str,
    paper: str,
    year: int,
    input_size: tuple[int, int, int] = (3, 224, 224),
    min_input_size: int = 32,
    torchvision: bool | str = False,
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a keyword-only model builder under its function name.

    `torchvision=True` marks a builder whose architecture (and state-dict layout) is the same as
    torchvision's builder of the same name; a string names a differently-named torchvision twin.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _BUILDERS:
            raise ValueError(f"model name {name!r} is registered twice")
        params = inspect.signature(fn).parameters
        if "num_classes" not in params or params["num_classes"].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"builder {name!r} must take a keyword-only num_classes argument")
        tv_name = name if torchvision is True else (torchvision or None)
        doc = inspect.getdoc(fn) or ""
        _BUILDERS[name] = fn
        _INFO[name] = ModelInfo(
            name=name,
            family=family,
            paper=paper,
            year=year,
            input_size=tuple(input_size),  # type: ignore[arg-type]
            min_input_size=min_input_size,
            num_classes=int(params["num_classes"].default),
            torchvision=tv_name,
            description=doc.splitlines()[0] if doc else "",
            tags=tuple(tags),
        )
        return fn

    return decorator


def _ensure_models_imported() -> None:
    # Importing the package registers the families; done lazily so `registry` has no import cycle.
    from cnnzoo import models  # noqa: F401


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list(_BUILDERS), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see cnnzoo.list_models()"
    return UnknownModelError(f"unknown model {name!r}{hint}")


def is_model(name: str) -> bool:
    _ensure_models_imported()
    return name in _BUILDERS


def list_models(
    pattern: str = "*",
    *,
    family: str | None = None,
    torchvision: bool | None = None,
    pretrained: bool = False,
) -> list[str]:
    """Registered model names matching a shell-style `pattern` (e.g. ``"resnet*"``), sorted.

    `family` keeps one family; `torchvision` keeps the models with (True) or without (False) a
    torchvision twin; `pretrained=True` keeps those with published ImageNet weights, i.e. the
    names `create_model(name, pretrained=True)` accepts (timm's meaning: False filters nothing).
    """
    _ensure_models_imported()
    names = [n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern)]
    if family is not None:
        names = [n for n in names if _INFO[n].family == family]
    if torchvision is not None:
        names = [n for n in names if (_INFO[n].torchvision is not None) == torchvision]
    if pretrained:
        from cnnzoo.pretrained import has_imagenet_weights

        names = [n for n in names if has_imagenet_weights(n)]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> tuple:
    # resnet18 < resnet34 < resnet101, as a person reads them.
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def model_info(name: str) -> ModelInfo:
    """Family, paper, year, default input size and default head size of a registered model."""
    _ensure_models_imported()
    if name not in _INFO:
        raise _unknown(name)
    return _INFO[name]


def get_builder(name: str) -> Callable[..., nn.Module]:
    _ensure_models_imported()
    if name not in _BUILDERS:
        raise _unknown(name)
    return _BUILDERS[name]


class UnknownOptionError(TypeError, ValueError):
    """A builder option the architecture does not have (a TypeError, as Python's own; a ValueError,
    so that the CLI reports it in one line)."""


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    pretrained: bool | str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally with weights: torchvision's ImageNet ones or a file.

    Args:
        name: a name from `list_models()`, e.g. ``"resnet50"``.
        num_classes: size of the classifier; defaults to the architecture's own (1000 for the
            ImageNet nets, 10 for LeNet-5 and the CIFAR nets). 0 gives a model without a head.
        in_chans: input channels; defaults to the architecture's own (3, or 1 for LeNet-5).
        pretrained: ``True`` or ``"imagenet"``: torchvision's published ImageNet weights for
            this architecture (`list_models(pretrained=True)`), read from torch's hub cache or
            downloaded into it, as ``cnnzoo train --pretrained imagenet`` does; raises
            `PretrainedUnavailable` saying which file to put where when that fails. A path: a
            torchvision state dict (``.pth``) or a cnnzoo ``.safetensors`` file. ``None`` or
            ``False``: fresh weights. A head of another size is replaced (and re-initialised)
            with a warning; a 3-channel stem is adapted to `in_chans` by summing or repeating
            its filters.
        **kwargs: architecture options, e.g. ``act="mish"``, ``drop_path_rate=0.1``.
    """
    builder = get_builder(name)
    info = _INFO[name]
    if num_classes is None:
        num_classes = info.num_classes
    if in_chans is None:
        in_chans = info.input_size[0]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
    weights: str | os.PathLike | None
    if pretrained is True or pretrained == "imagenet":
        from cnnzoo.pretrained import IMAGENET_BUILD_KWARGS, imagenet_weights

        weights = imagenet_weights(name)  # before building: a missing file fails fast
        if in_chans == 3:  # the options re-map RGB input; a stem adapted to in_chans cannot use them
            kwargs = {**IMAGENET_BUILD_KWARGS.get(name, {}), **kwargs}
    elif pretrained is None or pretrained is False:
        weights = None
    elif isinstance(pretrained, str | os.PathLike):
        weights = pretrained
    else:
        raise TypeError(
            f"pretrained must be True, 'imagenet', a path or None, got {type(pretrained).__name__}"
        )
    try:
        model = builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise  # a bug inside the builder, not the caller's option
        raise UnknownOptionError(
            f"{name} does not take that option ({e}); see help(cnnzoo.get_builder({name!r}))"
        ) from e
    model.model_name = name  # type: ignore[assignment]
    if weights is not None:
        from cnnzoo.weights import load_pretrained

        load_pretrained(model, weights, model_name=name)
    return model


def _facts_of_build(name: str) -> dict[str, Any]:
    import torch

    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        model = create_model(name)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "num_features": getattr(model, "num_features", None),
        "feature_info": [dict(f) for f in getattr(model, "feature_info", [])],
    }


def model_facts(name: str) -> dict[str, Any]:
    """Parameters, num_features and feature_info of a registered model at its defaults.

    The zoo's facts are a table written from the models themselves (``cnnzoo/_param_counts.py``,
    checked against a fresh build of every model by the tests), so `cnnzoo list` and `cnnzoo info`
    build no model; a model registered outside the table is built on the meta device.
    """
    from cnnzoo._param_counts import MODEL_FACTS

    if name in MODEL_FACTS and name in _BUILDERS:
        return MODEL_FACTS[name]
    model_info(name)  # an unknown name fails here, with its suggestion
    return _facts_of_build(name)


def num_params(name: str) -> int:
    """Parameters of a registered model at its defaults (`model_facts`)."""
    return model_facts(name)["params"]


def write_param_counts(path: str | os.PathLike | None = None) -> Path:
    """Rewrite ``cnnzoo/_param_counts.py`` from every registered model (run after changing a model)."""
    import pprint

    target = Path(path) if path else Path(__file__).with_name("_param_counts.py")
    facts = {n: _facts_of_build(n) for n in list_models()}
    target.write_text(
        '"""Parameters, num_features and feature_info of every registered model at its defaults,\n'
        "written by `cnnzoo.registry.write_param_counts()` from the models themselves;\n"
        "tests/test_registry.py checks it against a fresh build. `cnnzoo list` and `cnnzoo info` read\n"
        'it instead of building models."""\n\n'
        "from typing import Any\n\n"
        f"MODEL_FACTS: dict[str, dict[str, Any]] = {pprint.pformat(facts, width=100, sort_dicts=False)}\n"
    )
    return target
