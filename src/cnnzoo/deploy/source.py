"""What `cnnzoo export` and `cnnzoo bench` are pointed at: a model name or a trained checkpoint.

A checkpoint is a run directory or `.safetensors` file written by `cnnzoo train` (its header
names the architecture, classes and input size), a `save_weights` file (names the
architecture), or a torchvision-style `.pth` state dict, whose architecture comes from `--model`
or from torchvision's file naming (`resnet18-f37072fd.pth`). When none of these says which
architecture it is, the error names what the file does hold, so the user can pick the model.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["Source", "load_source"]


@dataclass
class Source:
    model: nn.Module  # in eval mode
    label: str  # the model name, or "name (path)" for a checkpoint
    input_size: tuple[int, int, int]  # (C, H, W) the model was designed or trained for
    trained: bool  # weights from a file (their BatchNorm statistics are real)


def _default_input(name: str, model: nn.Module) -> tuple[int, int, int]:
    from cnnzoo.train.evaluate import default_input_size

    return default_input_size(model, name)


def _describe_keys(path: Path) -> str:
    from cnnzoo.weights import read_state_dict

    state = read_state_dict(path)
    shown = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(state.items())[:4])
    return f"{len(state)} tensors, first: {shown}"


def _unknown_architecture(path: Path, found: str) -> Exception:
    from cnnzoo.weights import CheckpointError

    return CheckpointError(
        f"cannot tell which architecture {str(path)!r} holds ({found}); pass --model NAME (see `cnnzoo list`)"
    )


def load_source(source: str | os.PathLike, *, model: str | None = None) -> Source:
    """A registered model (random weights) by name, or the model of a checkpoint, in eval mode."""
    from cnnzoo.registry import create_model, is_model

    text = os.fspath(source)
    path = Path(text).expanduser()
    if is_model(text) and not path.exists():
        net = create_model(text).eval()
        return Source(net, text, _default_input(text, net), trained=False)
    if not path.exists():
        if any(sep in text for sep in ("/", os.sep)) or path.suffix:
            raise FileNotFoundError(f"checkpoint {text!r} does not exist")
        from cnnzoo.registry import model_info

        model_info(text)  # an UnknownModelError with the closest names
    if model is not None and not is_model(model):
        from cnnzoo.registry import model_info

        model_info(model)
    if path.is_dir() or path.suffix == ".safetensors":
        return _load_safetensors(path, model)
    return _load_state_dict_file(path, model)


def _load_safetensors(path: Path, model: str | None) -> Source:
    from cnnzoo.registry import is_model
    from cnnzoo.train.checkpoint import resolve_weights
    from cnnzoo.train.evaluate import load_model
    from cnnzoo.weights import read_metadata, run_metadata

    weights = resolve_weights(path)
    meta = read_metadata(weights)
    run = run_metadata(meta, weights)
    named = run.get("model") or meta.get("cnnzoo_model")
    if model is None:
        if not named:
            raise _unknown_architecture(weights, f"no architecture in its header; {_describe_keys(weights)}")
        if not is_model(named):
            raise _unknown_architecture(
                weights, f"its header names {named!r}, which is not a registered model"
            )
    loaded = load_model(weights, model=model)
    name = model or named
    input_size = tuple(run["input_size"]) if run.get("input_size") else _default_input(name, loaded.model)
    return Source(loaded.model, f"{name} ({weights})", input_size, trained=True)  # type: ignore[arg-type]


def _load_state_dict_file(path: Path, model: str | None) -> Source:
    from cnnzoo.registry import create_model, is_model
    from cnnzoo.weights import CheckpointError, read_state_dict

    name = model
    if name is None:
        # torchvision names its files ARCH-HASH.pth.
        guess = path.stem.split("-")[0]
        if not is_model(guess):
            raise _unknown_architecture(path, f"no architecture in its name; {_describe_keys(path)}")
        name = guess
    state = read_state_dict(path)  # read twice (here and by create_model): sizes first
    with torch.device("meta"):
        probe = create_model(name)
    head = state.get(f"{getattr(probe, 'head_name', 'fc')}.weight")
    num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else None
    stem = next((v for v in state.values() if v.dim() == 4), None)
    in_chans = int(stem.shape[1]) if stem is not None else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = create_model(name, num_classes=num_classes, in_chans=in_chans, pretrained=path).eval()
    replaced = [w for w in caught if "classifier" in str(w.message)]
    if replaced:  # exporting a randomly initialised head would be meaningless
        raise CheckpointError(
            str(replaced[0].message).split(";")[0] + f"; is {str(path)!r} a {name} checkpoint?"
        )
    for w in caught:  # the others (an adapted stem, skipped auxiliary heads) are worth seeing
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return Source(net, f"{name} ({path})", _default_input(name, net), trained=True)
