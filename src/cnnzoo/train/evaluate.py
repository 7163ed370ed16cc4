"""Evaluate a trained model on a dataset, or predict the classes of image files.

Both read the model from a run directory, a checkpoint directory or a `.safetensors` file; the
run's config in the file's header (written by the trainer) says which architecture, classes and
normalisation it was trained with. Files without it (a plain `save_weights` file, a torchvision
`.pth`) need the model name, and a file of another architecture fails with weights.py's
CheckpointError naming the mismatched keys.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.train.checkpoint import resolve_weights
from cnnzoo.train.progress import ProgressBar

__all__ = [
    "TTA_PROTOCOLS",
    "LoadedModel",
    "PredictionStream",
    "average_log_probs",
    "default_input_size",
    "evaluate",
    "evaluate_ensemble",
    "load_model",
    "predict",
    "predict_stream",
    "prepare_images",
    "tta_log_probs",
    "tta_views",
]


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
        read_metadata,
        read_state_dict,
        run_metadata,
    )

    weights_path = resolve_weights(path)
    meta = read_metadata(weights_path)
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


# -- test-time augmentation ----------------------------------------------------------------------
TTA_PROTOCOLS = ("center", "flip", "5crop", "10crop")

# ILSVRC's test crops: 224-pixel crops of images resized to 256 (Krizhevsky et al. 2012, sec. 4.1).
CROP_FRACTION = 224 / 256


def tta_views(
    x: torch.Tensor, *, protocol: str, crop_size: tuple[int, int] | None = None
) -> Iterator[torch.Tensor]:
    """The views of a batch `x` (N x C x H x W) that a test-time protocol averages.

    - "center": `x` itself, the plain evaluation;
    - "flip": `x` and its horizontal mirror;
    - "5crop": the four corner crops and the centre crop of `x` resized so that the crop is 224/256
      of it, the ILSVRC protocol (Krizhevsky et al. 2012, sec. 4.1; torchvision's `five_crop`);
    - "10crop": those five and their mirrors, the protocol's "ten patches in all".

    The crop is `crop_size`, by default the model's input size, i.e. `x`'s own: a 224-pixel test
    set is upsampled to 256 and cropped back to 224, a 28-pixel one to 32 and cropped to 28, as
    the protocol's crops are defined relative to the network's input. The paper resizes the
    original photograph instead; a test set stored at the input size no longer has it.
    """
    if protocol not in TTA_PROTOCOLS:
        raise ValueError(f"unknown test-time protocol {protocol!r}; choose one of {', '.join(TTA_PROTOCOLS)}")
    if protocol == "center":
        yield x
        return
    if protocol == "flip":
        yield x
        yield x.flip(-1)
        return
    h, w = crop_size or tuple(x.shape[-2:])
    big_h, big_w = round(h / CROP_FRACTION), round(w / CROP_FRACTION)
    if tuple(x.shape[-2:]) != (big_h, big_w):
        x = torch.nn.functional.interpolate(x, size=(big_h, big_w), mode="bilinear", align_corners=False)
    # torchvision's centre-crop offset (rounded half to even), so that its `five_crop` is an oracle.
    top, left = round((big_h - h) / 2), round((big_w - w) / 2)
    corners = [(0, 0), (0, big_w - w), (big_h - h, 0), (big_h - h, big_w - w), (top, left)]
    crops = [x[..., i : i + h, j : j + w] for i, j in corners]
    yield from crops
    if protocol == "10crop":
        for crop in crops:
            yield crop.flip(-1)


def tta_log_probs(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    protocol: str = "center",
    crop_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """log of the softmax averaged over the protocol's views of `x` (N x classes, float32).

    Averaging probabilities, not logits, as Krizhevsky et al. (2012) average "the predictions made
    by the network's softmax layer"; computed as logsumexp(log-softmax) - log(views), which does not
    underflow. With "center" this is exactly log_softmax of the logits (the plain evaluation).
    """
    views = []
    for view in tta_views(x, protocol=protocol, crop_size=crop_size):
        logits = model(view.contiguous())
        if isinstance(logits, tuple | list):
            logits = logits[0]
        views.append(torch.log_softmax(logits.float(), dim=1))
    if len(views) == 1:
        return views[0]
    return torch.logsumexp(torch.stack(views), dim=0) - math.log(len(views))


def _not_finite(path: Any) -> str:
    return (
        f"{str(path)!r} gives NaN or infinite outputs: its weights are damaged (NaN or inf in the "
        "file, e.g. from a run that diverged); use an earlier checkpoint"
    )


def _test_loader(
    loaded: LoadedModel, data: str, *, batch_size: int, device: str, root: str | None, loaders: Any
) -> Any:
    """The test split of `data` prepared as `loaded`'s run saw it (its resize, its crops), after
    checking that the dataset's classes are the model's."""
    run = loaded.run
    if loaders is None:
        from cnnzoo.data import make_loaders as loaders
    import inspect

    extra = {}
    params = inspect.signature(loaders).parameters
    takes = "augment" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if run.get("augment") and data == run.get("data") and takes:
        # Only the training loader augments; an image folder trained with the ILSVRC crops is
        # evaluated as it was validated (resize 256, centre crop 224), not at full frame.
        extra["augment"] = run["augment"]
    *_, test_loader, info = loaders(
        data,
        batch_size=batch_size,
        root=root,
        device=device,
        resize_to=run.get("resize_to"),
        val_fraction=0.0,
        **extra,
    )
    n_cls = int(getattr(loaded.model, "num_classes", 0))
    data_classes = int(info["num_classes"] if isinstance(info, dict) else info.num_classes)
    if data_classes != n_cls:
        raise ValueError(
            f"the model has {n_cls} classes but {data} has {data_classes}; evaluate on its own dataset"
        )
    names = list(info["classes"] if isinstance(info, dict) else info.classes)
    trained = list(run.get("classes") or [])
    if trained and names and trained != names:
        # Same number of classes, other names (a Fashion-MNIST run on MNIST digits): the labels
        # would be read under the wrong names.
        raise ValueError(
            f"the run was trained on classes {', '.join(trained[:3])}, ... but {data}'s are "
            f"{', '.join(map(str, names[:3]))}, ...; evaluate on the run's own dataset ({run.get('data')})"
        )
    return test_loader


class _Tally:
    """Running loss, top-1, top-5 and confusion counts of log-probabilities against labels."""

    def __init__(self, num_classes: int) -> None:
        self.k = min(5, num_classes)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.loss_sum, self.top5, self.n = 0.0, 0, 0

    def add(self, log_probs: torch.Tensor, y: torch.Tensor) -> None:
        n_cls = self.confusion.shape[0]
        self.loss_sum += torch.nn.functional.nll_loss(log_probs, y, reduction="sum").item()
        pred = log_probs.argmax(1)
        self.confusion += torch.bincount((y * n_cls + pred).cpu(), minlength=n_cls * n_cls).view(n_cls, n_cls)
        self.top5 += int((log_probs.topk(self.k, 1).indices == y[:, None]).any(1).sum())
        self.n += y.shape[0]

    def per_class(self, classes: Sequence[str]) -> dict[str, float]:
        """Accuracy of each true class (the confusion matrix's diagonal over its rows)."""
        acc = (self.confusion.diag().double() / self.confusion.sum(1).clamp(min=1)).tolist()
        return dict(zip(classes, acc, strict=True))

    def metrics(self) -> dict[str, float]:
        return {
            "test_loss": self.loss_sum / self.n,
            "test_top1": int(self.confusion.diag().sum()) / self.n,
            "test_top5": self.top5 / self.n,
        }


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
    tta: str = "center",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Top-1/top-5, loss, per-class accuracy and the confusion matrix on the test split.

    `tta` is the test-time protocol (`TTA_PROTOCOLS`, see `tta_views`); the result names it.
    `progress` draws a bar of batches on stderr (default: when stderr is a terminal).
    `loaders` is an optional callable with `cnnzoo.data.make_loaders`'s signature (tests pass
    their own); by default the dataset named by `data` or by the run is loaded.
    """
    if tta not in TTA_PROTOCOLS:
        raise ValueError(f"unknown test-time protocol {tta!r}; choose one of {', '.join(TTA_PROTOCOLS)}")
    loaded = load_model(path, model=model, device=device)
    data = data or loaded.run.get("data")
    if not data:
        raise ValueError("which dataset? pass --data NAME")
    test_loader = _test_loader(loaded, data, batch_size=batch_size, device=device, root=root, loaders=loaders)
    tally = _Tally(int(getattr(loaded.model, "num_classes", 0)))
    total = len(test_loader) if hasattr(test_loader, "__len__") else 0
    bar = ProgressBar(total, desc=f"eval ({tta})", enabled=progress)
    for x, y in test_loader:
        x, y = x.to(device), y.to(device)
        # Per batch, only the counts are kept: memory does not grow with the test set.
        log_probs = tta_log_probs(loaded.model, x, protocol=tta)
        if not torch.isfinite(log_probs).all():
            raise ValueError(_not_finite(loaded.path))
        tally.add(log_probs, y)
        bar.update(1)
    bar.close()
    if tally.n == 0:
        raise ValueError(f"the test split of {data} holds no images: there is nothing to evaluate")
    classes = loaded.classes
    return {
        "checkpoint": str(loaded.path),
        "model": getattr(loaded.model, "model_name", type(loaded.model).__name__),
        "data": data,
        "tta": tta,
        "samples": tally.n,
        **tally.metrics(),
        "per_class": tally.per_class(classes),
        "classes": classes,
        "confusion": tally.confusion.tolist(),
    }


# -- ensembles ----------------------------------------------------------------------------------
def average_log_probs(member_log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """log of the members' softmax outputs averaged (N x classes), from each member's log-softmax.

    The ensemble of Krizhevsky et al. (2012, sec. 6: "averaging the predictions of five similar
    CNNs") and of the lecture's "7 CNN ensemble" averages probabilities; as in `tta_log_probs`
    this is logsumexp(log-probabilities) - log(members), which does not underflow.
    """
    if not member_log_probs:
        raise ValueError("an ensemble needs at least one member")
    if len(member_log_probs) == 1:
        return member_log_probs[0]
    return torch.logsumexp(torch.stack(list(member_log_probs)), dim=0) - math.log(len(member_log_probs))


def _same(values: Sequence[Any], what: str, paths: Sequence[Any]) -> None:
    if any(v != values[0] for v in values):
        listed = "; ".join(f"{p}: {v}" for p, v in zip(paths, values, strict=True))
        raise ValueError(f"the runs differ in {what} ({listed}); an ensemble averages models of one task")


@torch.no_grad()
def evaluate_ensemble(
    paths: Sequence[str | os.PathLike],
    *,
    data: str | None = None,
    model: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    root: str | None = None,
    loaders: Any = None,
    tta: str = "center",
    progress: bool | None = None,
) -> dict[str, Any]:
    """The models of `paths` as one classifier: their softmax outputs averaged, on the test split.

    Each member sees the test images as its own run prepared them (its resize and crops) and,
    with `tta`, averages its views first; the members' probabilities are then averaged
    (`average_log_probs`). Returns `evaluate`'s fields for the ensemble, plus `members` (each
    member's loss, top-1, top-5) and the gains: the ensemble's top-1 and top-5 minus the best
    member's (`gain_top1`, `gain_top5`) and minus the members' mean (`gain_top1_vs_mean`).
    """
    if tta not in TTA_PROTOCOLS:
        raise ValueError(f"unknown test-time protocol {tta!r}; choose one of {', '.join(TTA_PROTOCOLS)}")
    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two runs: `cnnzoo eval --ensemble RUN RUN ...`")
    members = [load_model(p, model=model, device=device) for p in paths]
    names = [str(m.path) for m in members]
    if len(set(names)) < len(names):
        raise ValueError("the same weights are named twice; an ensemble of a model with itself gains nothing")
    _same([m.classes for m in members], "class names", paths)
    if data is None:
        _same([m.run.get("data") for m in members], "dataset", paths)
        data = members[0].run.get("data")
    if not data:
        raise ValueError("which dataset? pass --data NAME")
    # One test loader per way of preparing the images (resize, crops): members trained at the same
    # size share it, and the unshuffled loaders give the same images in the same order.
    prepared: dict[str, Any] = {}
    keyed = []
    for m in members:
        key = repr((m.run.get("resize_to"), m.run.get("augment") if data == m.run.get("data") else None))
        if key not in prepared:
            prepared[key] = _test_loader(
                m, data, batch_size=batch_size, device=device, root=root, loaders=loaders
            )
        keyed.append(key)
    n_cls = len(members[0].classes)
    tallies = [_Tally(n_cls) for _ in members]
    total = _Tally(n_cls)
    first = next(iter(prepared.values()))
    steps = len(first) if hasattr(first, "__len__") else 0
    bar = ProgressBar(steps, desc=f"ensemble ({tta})", enabled=progress)
    sentinel = object()
    iterators = {key: iter(loader) for key, loader in prepared.items()}
    while True:
        batches = {key: next(it, sentinel) for key, it in iterators.items()}
        ended = [b is sentinel for b in batches.values()]
        if all(ended):
            break
        ys = [b[1] for b in batches.values() if b is not sentinel]
        if any(ended) or any(not torch.equal(y, ys[0]) for y in ys):
            raise ValueError(f"the test split of {data} comes in another order for members of other sizes")
        y = ys[0].to(device)
        outputs = []
        for m, key, tally in zip(members, keyed, tallies, strict=True):
            log_probs = tta_log_probs(m.model, batches[key][0].to(device), protocol=tta)
            if not torch.isfinite(log_probs).all():
                raise ValueError(_not_finite(m.path))
            tally.add(log_probs, y)
            outputs.append(log_probs)
        total.add(average_log_probs(outputs), y)
        bar.update(1)
    bar.close()
    if total.n == 0:
        raise ValueError(f"the test split of {data} holds no images: there is nothing to evaluate")
    classes = members[0].classes
    result: dict[str, Any] = {
        "ensemble": len(members),
        "data": data,
        "tta": tta,
        "samples": total.n,
        **total.metrics(),
        "members": [
            {
                "checkpoint": str(m.path),
                "model": getattr(m.model, "model_name", type(m.model).__name__),
                **t.metrics(),
            }
            for m, t in zip(members, tallies, strict=True)
        ],
    }
    for metric in ("top1", "top5"):
        scores = [t.metrics()[f"test_{metric}"] for t in tallies]
        result[f"gain_{metric}"] = result[f"test_{metric}"] - max(scores)
        result[f"gain_{metric}_vs_mean"] = result[f"test_{metric}"] - sum(scores) / len(scores)
    result["per_class"] = total.per_class(classes)
    result["classes"] = classes
    result["confusion"] = total.confusion.tolist()
    return result


# -- prediction ----------------------------------------------------------------------------------
class _ImageFiles(torch.utils.data.Dataset):
    """Image files decoded, resized and normalised as in training, one at a time.

    A file that cannot be read gives its one-line message in place of a tensor: a DataLoader
    worker that raised would have its traceback folded into the message.
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        channels: int,
        size: tuple[int, int],
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        self.paths, self.channels, self.size, self.mean, self.std = paths, channels, size, mean, std
        # JPEG draft mode keeps at least twice the input and 512 px: photographs up to 1024 px, and
        # any image under four times the input, decode exactly as a full decode would.
        self.draft = (max(size[0], 256), max(size[1], 256))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        from cnnzoo.data.decode import decode_image

        try:
            img, _ = decode_image(self.paths[i], channels=self.channels, min_size=self.draft)
        except (ValueError, FileNotFoundError) as e:  # ImageDecodeError is a ValueError
            return i, None, str(e)
        x = img.float().div(255)
        x = torch.nn.functional.interpolate(
            x[None], size=self.size, mode="bilinear", antialias=True, align_corners=False
        )[0]
        return i, (x - self.mean) / self.std, ""


def prepare_images(
    images: Sequence[str | os.PathLike],
    *,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Image files as one normalised (N, C, H, W) batch, decoded and resized as `predict` does
    (`_ImageFiles`): grey or RGB as C says, bilinear and antialiased to H x W, then
    (pixel / 255 - mean) / std as in training. For a few images (visualize); streams use
    `predict_stream`."""
    from cnnzoo.data.decode import ImageDecodeError

    c, h, w = input_size
    files = _ImageFiles(
        [os.fspath(p) for p in images],
        channels=c,
        size=(h, w),
        mean=torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1),
        std=torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1),
    )
    batch = []
    for i in range(len(files)):
        _, x, error = files[i]
        if x is None:
            raise ImageDecodeError(error)
        batch.append(x)
    return torch.stack(batch)


def default_input_size(model: nn.Module, name: str | None = None) -> tuple[int, int, int]:
    """(C, H, W) a model takes when nothing (no run's header) says otherwise: the size it is built
    for (a LeNet-5 takes only its img_size), else its registered default input (`name`, or the
    name the registry gave it), else 224 x 224."""
    from cnnzoo.registry import is_model, model_info

    c = int(getattr(model, "in_chans", 3))
    fixed = getattr(model, "fixed_input_size", None)
    if fixed:
        return c, int(fixed), int(fixed)
    name = name or getattr(model, "model_name", None)
    if name and is_model(name):
        _, h, w = model_info(name).input_size
        return c, int(h), int(w)
    return c, 224, 224


def _as_list(batch: list[Any]) -> list[Any]:
    return batch  # a module-level function: DataLoader workers receive it pickled


class PredictionStream:
    """Top-k predictions of image files, computed and handed out one batch at a time.

    Iterate it once: each image gives ``{"image", "top": [{"class", "index", "prob"}, ...]}``, or
    ``{"image", "error"}`` for an unreadable file when `skip_unreadable` (otherwise the first one
    raises `ImageDecodeError` naming it). Only one batch of decoded images (and, with `workers`,
    their prefetched successors) is alive at a time, so memory does not grow with the number of
    files. `runtime` says which inference path ran once the first batch is done; `skipped` counts
    the files left out.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        images: Sequence[str],
        *,
        top_k: int = 5,
        device: str = "cpu",
        fast: bool = True,
        batch_size: int = 32,
        workers: int = 0,
        skip_unreadable: bool = False,
    ) -> None:
        self.loaded, self.images, self.device, self.fast = loaded, list(images), device, fast
        self.batch_size, self.workers, self.skip_unreadable = batch_size, workers, skip_unreadable
        self.classes = loaded.classes
        self.top_k = max(1, min(top_k, len(self.classes)))
        run = loaded.run
        c, h, w = run.get("input_size") or default_input_size(loaded.model)
        self.channels, self.size = int(c), (int(h), int(w))
        self.mean = torch.tensor(run.get("mean") or [0.5] * c).view(-1, 1, 1)
        self.std = torch.tensor(run.get("std") or [0.5] * c).view(-1, 1, 1)
        self.runtime: dict[str, Any] | None = None
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.images)

    def _path(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The inference path for all batches, chosen on the first one as `run_fastest` does."""
        from cnnzoo.deploy.fastest import PROBE_IMAGES, choose_fastest

        model = self.loaded.model

        def eager(batch: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                out = model(batch)
            return out[0] if isinstance(out, tuple | list) else out

        if not self.fast:
            self.runtime = {"path": "eager", "description": "eager PyTorch (fast=False)"}
            return eager
        if len(self.images) <= PROBE_IMAGES or x.shape[0] == 0:
            from cnnzoo.words import plural

            few = f"{plural(len(self.images), 'image')}: too few to repay checking a faster path"
            self.runtime = {"path": "eager", "description": f"eager PyTorch ({few})"}
            return eager
        # Eager time on the probe x this many calls estimates the whole job's eager time.
        calls = -(-len(self.images) // PROBE_IMAGES)
        choice = choose_fastest(model, x[:PROBE_IMAGES], expected_calls=calls)
        self.runtime = {"path": choice.best.name, "description": choice.describe()}
        assert choice.best.run is not None
        return choice.best.run

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from cnnzoo.data.decode import ImageDecodeError

        files = _ImageFiles(self.images, channels=self.channels, size=self.size, mean=self.mean, std=self.std)
        loader = torch.utils.data.DataLoader(
            files, batch_size=self.batch_size, num_workers=self.workers, collate_fn=_as_list
        )
        run = None
        for batch in loader:
            good = [(i, x) for i, x, err in batch if not err]
            first_error = next((err for _, _, err in batch if err), "")
            if first_error and not self.skip_unreadable:
                raise ImageDecodeError(first_error)
            probs = torch.empty(0)
            if good:
                x = torch.stack([t for _, t in good]).to(self.device)
                if run is None:
                    run = self._path(x)
                probs = run(x).float().softmax(1).cpu()
                if not torch.isfinite(probs).all():
                    raise ValueError(_not_finite(self.loaded.path))
            rows = iter(probs)
            for i, _, err in batch:
                if err:
                    self.skipped += 1
                    yield {"image": self.images[i], "error": err}
                    continue
                values, idx = next(rows).topk(self.top_k)
                top = [
                    {"class": self.classes[j], "index": int(j), "prob": float(v)}
                    for v, j in zip(values, idx, strict=True)
                ]
                yield {"image": self.images[i], "top": top}
        if self.runtime is None:  # every file was skipped
            self.runtime = {"path": "eager", "description": "no image could be read"}


def predict_stream(
    path: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    top_k: int = 5,
    model: str | None = None,
    device: str = "cpu",
    fast: bool = True,
    batch_size: int = 32,
    workers: int = 0,
    skip_unreadable: bool = False,
) -> PredictionStream:
    """The model of `path` over the image files, folders and globs in `images`, as a stream.

    Files are decoded, resized and normalised as in training (`cnnzoo.data.decode`), a batch at a
    time; see `PredictionStream`. With `fast`, the batches run along the fastest inference path
    whose outputs agree with eager PyTorch on the first images (`cnnzoo.deploy.fastest`: folded
    BatchNorm + channels_last, or ONNX Runtime for long jobs).
    """
    from cnnzoo.data.decode import expand_images

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    files = expand_images(images)
    loaded = load_model(path, model=model, device=device)
    return PredictionStream(
        loaded,
        files,
        top_k=top_k,
        device=device,
        fast=fast,
        batch_size=batch_size,
        workers=workers,
        skip_unreadable=skip_unreadable,
    )


def predict(
    path: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    top_k: int = 5,
    model: str | None = None,
    device: str = "cpu",
    fast: bool = True,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image, as a list (`predict_stream`, collected).

    The list has a `runtime` attribute saying which inference path ran and why. For thousands of
    files iterate `predict_stream` instead: this list holds every result at once.
    """
    from cnnzoo.deploy.fastest import Predictions

    stream = predict_stream(
        path, images, top_k=top_k, model=model, device=device, fast=fast, batch_size=batch_size
    )
    records = list(stream)
    return Predictions(records, runtime=stream.runtime)
