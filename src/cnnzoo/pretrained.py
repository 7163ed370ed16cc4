"""Published weights: torchvision's ImageNet files, found through torch's hub cache.

``create_model(name, pretrained=True)`` (or ``"imagenet"``) and ``--pretrained imagenet`` both
come here. The file is looked for where `torch.hub.load_state_dict_from_url` keeps it
(`torch.hub.get_dir()/checkpoints/<file name of the URL>`), downloaded there when the network
allows, and otherwise named in the error with the place to put it. Reading and fitting the file
is `weights.py`'s job; this module only says which file.
"""

from __future__ import annotations

import functools
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGENET_BUILD_KWARGS",
    "PretrainedUnavailable",
    "has_imagenet_weights",
    "imagenet_url",
    "imagenet_weights",
]

# Options torchvision's builders switch on when they load their ImageNet weights, so that
# `create_model(name, pretrained=True)` computes what `torchvision.models.<name>(weights=...)`
# computes. GoogLeNet's and Inception v3's weights were ported from TensorFlow and expect inputs
# in [-1, 1]; `transform_input` maps ImageNet-normalised input there.
IMAGENET_BUILD_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"transform_input": True},
    "inception_v3": {"transform_input": True},
}


class PretrainedUnavailable(FileNotFoundError):
    """ImageNet weights that are neither cached nor downloadable; the message says what to do."""


@functools.cache
def has_imagenet_weights(model_name: str) -> bool:
    """Whether torchvision publishes ImageNet weights for the model's architecture."""
    from torchvision.models import get_model_weights

    from cnnzoo.registry import model_info

    tv = model_info(model_name).torchvision
    if tv is None:
        return False
    try:
        return any(True for _ in get_model_weights(tv))
    except (ValueError, KeyError):  # a twin this torchvision version does not have
        return False


def imagenet_url(model_name: str) -> str:
    from torchvision.models import get_model_weights

    from cnnzoo.registry import model_info

    if not has_imagenet_weights(model_name):
        tv = model_info(model_name).torchvision
        why = "has no torchvision twin" if tv is None else f"has no published weights for {tv}"
        raise PretrainedUnavailable(
            f"{model_name} {why}, so there are no published ImageNet weights for it; load a weights "
            "file instead (pretrained=PATH, or --pretrained PATH); "
            "cnnzoo.list_models(pretrained=True) lists the models that have them"
        )
    weights = get_model_weights(model_info(model_name).torchvision)  # type: ignore[arg-type]
    chosen = getattr(weights, "IMAGENET1K_V1", None) or next(iter(weights))
    return chosen.url


def _download(url: str, dest: Path, timeout: float) -> None:
    from cnnzoo.atomic import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            shutil.copyfileobj(r, f)

    atomic_write(dest, write)


def imagenet_weights(model_name: str, *, download: bool = True, timeout: float = 20.0) -> Path:
    """Path of the cached torchvision ImageNet weights for `model_name`, downloading them if allowed."""
    import torch

    url = imagenet_url(model_name)
    dest = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if dest.is_file():
        return dest
    reason = "downloads are off"
    if download:
        try:
            _download(url, dest, timeout)
            return dest
        except OSError as e:  # URLError, timeouts, refused connections
            reason = f"download failed: {getattr(e, 'reason', e)}"
    raise PretrainedUnavailable(
        f"ImageNet weights for {model_name} are not in torch's hub cache ({reason}); "
        f"download {url} and save it as {dest}"
    )
