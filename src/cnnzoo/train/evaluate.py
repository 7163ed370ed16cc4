"""Evaluate a trained model on a dataset, or predict the classes of image files.

Both read the model from a run directory, a checkpoint directory or a `.safetensors` file; the
run's config in the file's header (written by the trainer) says which architecture, classes and
normalisation it was trained with. Files without it (a plain `save_weights` file, a torchvision
`.pth`) need the model name, and a file of another architecture fails with weights.py's
CheckpointError naming the mismatched keys.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.train.checkpoint import resolve_weights

__all__ = ["LoadedModel", "evaluate", "load_model", "predict"]


@dataclass
class LoadedModel:
    model: nn.Module
    path: Path
    run: dict[str, Any] = field(default_factory=dict)  # the trainer's "cnnzoo_run" metadata

    @property
    def classes(self) -> list[str]:
        n = int(getattr(self.model, "num_classes", 0))
        names = list(self.run.get("classes") or [])
        return names if len(names) == n else [str(i) for i in range(n)]


def _metadata(path: Path) -> dict[str, str]:
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    from cnnzoo.weights import CheckpointError

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable safetensors file ({e})") from e


def load_model(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """The model of a run directory, checkpoint directory or weights file, in eval mode."""
    from cnnzoo.registry import create_model
    from cnnzoo.weights import (
        CheckpointError,
        check_head,
        convert_state_dict,
        fit_state_dict,
        read_state_dict,
        run_metadata,
    )

    weights_path = resolve_weights(path)
    meta = _metadata(weights_path)
    run = run_metadata(meta, weights_path)  # checked: types and sane sizes, never trusted blindly
    name = model or run.get("model") or meta.get("cnnzoo_model")
    if not name:
        raise ValueError(f"{str(weights_path)!r} does not say which model it holds; pass --model NAME")
    state = read_state_dict(weights_path)
    kwargs = dict(run.get("model_kwargs") or {}) if name == run.get("model") else {}
    with torch.device("meta"):  # names only: nothing is allocated
        named = create_model(name, **kwargs)
    state = convert_state_dict(state, model=named, model_name=name, path=weights_path)  # timm, Lightning
    if run.get("num_classes") is not None and name == run.get("model"):
        with torch.device("meta"):  # shapes only: nothing is allocated
            probe = create_model(name, **kwargs)
        check_head(run, state, getattr(probe, "head_name", None), weights_path)
    if num_classes is None:
        num_classes = run.get("num_classes")
    if num_classes is None:  # read the head's size from the file
        from cnnzoo.registry import model_info

        with torch.device("meta"):
            probe = create_model(name, **kwargs)
        head = getattr(probe, "head_name", None)
        weight = state.get(f"{head}.weight") if head else None
        num_classes = int(weight.shape[0]) if weight is not None else model_info(name).num_classes
    in_chans = run.get("in_chans")
    if in_chans is None:
        stem = next((v for k, v in state.items() if v.dim() == 4), None)
        in_chans = int(stem.shape[1]) if stem is not None else None
    net = create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = fit_state_dict(net, state, source=f"checkpoint {str(weights_path)!r}")
    replaced = [w for w in caught if "classifier" in str(w.message)]
    if replaced:  # evaluating a randomly initialised head would be meaningless
        raise CheckpointError(
            str(replaced[0].message).split(";")[0] + "; pass the checkpoint's own num_classes"
        )
    net.load_state_dict(fitted)
    net.to(device).eval()
    return LoadedModel(net, weights_path, run)


@torch.no_grad()
def evaluate(
    path: str | os.PathLike,
    *,
    data: str | None = None,
    model: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    root: str | None = None,
    loaders: Any = None,
) -> dict[str, Any]:
    """Top-1/top-5, loss, per-class accuracy and the confusion matrix on the test split.

    `loaders` is an optional callable with `cnnzoo.data.make_loaders`'s signature (tests pass
    their own); by default the dataset named by `data` or by the run is loaded.
    """
    loaded = load_model(path, model=model, device=device)
    run = loaded.run
    data = data or run.get("data")
    if not data:
        raise ValueError("which dataset? pass --data NAME")
    if loaders is None:
        from cnnzoo.data import make_loaders as loaders
    *_, test_loader, info = loaders(
        data,
        batch_size=batch_size,
        root=root,
        device=device,
        resize_to=run.get("resize_to"),
        val_fraction=0.0,
    )
    n_cls = int(getattr(loaded.model, "num_classes", 0))
    data_classes = int(info["num_classes"] if isinstance(info, dict) else info.num_classes)
    if data_classes != n_cls:
        raise ValueError(
            f"the model has {n_cls} classes but {data} has {data_classes}; evaluate on its own dataset"
        )
    confusion = torch.zeros(n_cls, n_cls, dtype=torch.int64)
    loss_sum, n, top5 = 0.0, 0, 0
    for x, y in test_loader:
        x, y = x.to(device), y.to(device)
        logits = loaded.model(x)
        if isinstance(logits, tuple | list):
            logits = logits[0]
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum").item()
        pred = logits.argmax(1)
        confusion += torch.bincount((y * n_cls + pred).cpu(), minlength=n_cls * n_cls).view(n_cls, n_cls)
        k = min(5, n_cls)
        top5 += int((logits.topk(k, 1).indices == y[:, None]).any(1).sum())
        n += y.shape[0]
    n = max(n, 1)
    per_class_total = confusion.sum(1).clamp(min=1)
    per_class = (confusion.diag().double() / per_class_total).tolist()
    classes = loaded.classes
    return {
        "checkpoint": str(loaded.path),
        "model": getattr(loaded.model, "model_name", type(loaded.model).__name__),
        "data": data,
        "samples": int(confusion.sum()),
        "test_loss": loss_sum / n,
        "test_top1": int(confusion.diag().sum()) / n,
        "test_top5": top5 / n,
        "per_class": {c: a for c, a in zip(classes, per_class, strict=True)},
        "classes": classes,
        "confusion": confusion.tolist(),
    }


def _load_image(path: str | os.PathLike, in_chans: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if in_chans == 1 else "RGB")
            arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            img = arr.view(im.height, im.width, -1).permute(2, 0, 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {os.fspath(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{os.fspath(path)!r} is not an image PIL can read ({e})") from e
    if in_chans not in (1, 3):
        img = img.repeat(-(-in_chans // img.shape[0]), 1, 1)[:in_chans]
    return img


@torch.no_grad()
def predict(
    path: str | os.PathLike,
    images: list[str | os.PathLike],
    *,
    top_k: int = 5,
    model: str | None = None,
    device: str = "cpu",
    fast: bool = True,
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file, resized and normalised as in training.

    With `fast`, the images run along the fastest inference path whose outputs agree with eager
    PyTorch on the first images (`cnnzoo.deploy.fastest.run_fastest`: folded BatchNorm +
    channels_last, or ONNX Runtime for long jobs). The result is a list with a `runtime`
    attribute saying which path ran and why.
    """
    import torch.nn.functional as F

    from cnnzoo.deploy.fastest import Predictions, run_fastest

    loaded = load_model(path, model=model, device=device)
    run = loaded.run
    c, h, w = run.get("input_size") or (loaded.model.in_chans, 224, 224)
    mean = torch.tensor(run.get("mean") or [0.5] * c).view(-1, 1, 1)
    std = torch.tensor(run.get("std") or [0.5] * c).view(-1, 1, 1)
    batch = []
    for p in images:
        img = _load_image(p, c).float().div(255)
        img = F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
        batch.append((img - mean) / std)
    x = torch.stack(batch).to(device)
    if fast:
        logits, choice = run_fastest(loaded.model, x)
    else:
        logits, choice = loaded.model(x), None
    if isinstance(logits, tuple | list):
        logits = logits[0]
    if choice is not None:
        runtime = {"path": choice.best.name, "description": choice.describe()}
    elif fast:
        few = f"{len(images)} images: too few to repay checking a faster path"
        runtime = {"path": "eager", "description": f"eager PyTorch ({few})"}
    else:
        runtime = {"path": "eager", "description": "eager PyTorch (fast=False)"}
    probs = logits.float().softmax(1).cpu()
    k = max(1, min(top_k, probs.shape[1]))
    classes = loaded.classes
    out = Predictions(runtime=runtime)
    for p, row in zip(images, probs, strict=True):
        values, idx = row.topk(k)
        out.append(
            {
                "image": os.fspath(p),
                "top": [
                    {"class": classes[i], "index": int(i), "prob": float(v)}
                    for v, i in zip(values, idx, strict=True)
                ],
            }
        )
    return out
