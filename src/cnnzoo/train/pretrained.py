"""`--pretrained imagenet`: torchvision's published weights through torch's hub cache.

The file is looked for where `torch.hub.load_state_dict_from_url` keeps it
(`torch.hub.get_dir()/checkpoints/<file name of the URL>`), downloaded there when the network
allows, and otherwise named in the error with the place to put it.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from cnnzoo.atomic import atomic_write

__all__ = ["PretrainedUnavailable", "imagenet_weights"]


class PretrainedUnavailable(FileNotFoundError):
    """ImageNet weights that are neither cached nor downloadable; the message says what to do."""


def imagenet_url(model_name: str) -> str:
    from torchvision.models import get_model_weights

    from cnnzoo.registry import model_info

    tv = model_info(model_name).torchvision
    if tv is None:
        raise PretrainedUnavailable(
            f"{model_name} has no torchvision twin, so there are no published ImageNet weights for it; "
            "pass --pretrained PATH to a weights file instead"
        )
    weights = get_model_weights(tv)
    chosen = getattr(weights, "IMAGENET1K_V1", None) or next(iter(weights))
    return chosen.url


def _download(url: str, dest: Path, timeout: float) -> None:
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
