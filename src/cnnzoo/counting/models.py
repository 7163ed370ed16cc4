"""Counters: the front of a zoo model (a trunk at output stride 8) and a density head.

A counter is data (`CounterSpec`): which zoo model lends its layers, the last of them kept, and
the head's convolutions. The trunk is the zoo's own model, built by `create_model` (so
`pretrained=` loads torchvision's ImageNet files into it) and cut after the named module; its
modules keep their names (`trunk.layer3...`, `trunk.features.21...`). The model maps an image to
a density map at 1/8 of its size whose sum, divided by `density_scale`, is the count.

    resnet50_counter  ResNet-50 up to layer3 (1024 channels), layer3 dilated instead of strided
                      so the output stride is 8, then 1x1 conv 128 + ReLU and 1x1 conv to one map:
                      C-3 Framework's Res50 (Gao, Lin, Wang 2019, arXiv:1907.02724).
    csrnet            VGG-16's first ten convolutions (to conv4_3, three max-pools: stride 8) and
                      CSRNet's dilated back-end, 512-512-512-256-128-64 3x3 convs at dilation 2,
                      then 1x1 conv to one map (Li, Zhang, Chen 2018, arXiv:1802.10062, config B).
    resnet18_counter  ResNet-18 up to layer2 (128 channels, stride 8) and a 3x3 conv 64 + ReLU:
                      a light counter for CPUs and quick experiments (ours, no paper).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "COUNTER_SPECS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CounterSpec",
    "CrowdCounter",
    "create_counter",
    "cut_trunk",
    "list_counters",
    "load_counter",
]

# Every trunk here was published with ImageNet weights trained on these statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CounterSpec:
    trunk: str  # a zoo model name (`cnnzoo list`)
    cut: str  # the trunk's last module kept, dotted: "layer3", "features.22"
    head: tuple[int, ...]  # widths of the head's conv + ReLU layers; a 1x1 conv to one map follows
    head_kernel: int = 1
    head_dilation: int = 1
    trunk_kwargs: tuple[tuple[str, Any], ...] = ()  # options of the zoo builder
    output_stride: int = 8
    paper: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["trunk_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.trunk_kwargs}
        d["head"] = list(self.head)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CounterSpec:
        kw = dict(d)
        kw["head"] = tuple(kw["head"])
        kw["trunk_kwargs"] = tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in dict(kw.get("trunk_kwargs") or {}).items()
        )
        return cls(**kw)


_C3 = "Gao, Lin, Wang 2019, C^3 Framework, arXiv:1907.02724 (Res50)"
_CSRNET = "Li, Zhang, Chen 2018, CSRNet, arXiv:1802.10062"

COUNTER_SPECS: dict[str, CounterSpec] = {
    # C-3 keeps layer3 at stride 1 without dilation; we dilate it (torchvision's
    # replace_stride_with_dilation), which keeps the receptive field its ImageNet filters were
    # trained with. C-3 also ends the head with a ReLU; we leave the map linear, as CSRNet does,
    # so that a pixel that starts negative still receives gradient.
    "resnet50_counter": CounterSpec(
        trunk="resnet50",
        cut="layer3",
        head=(128,),
        trunk_kwargs=(("replace_stride_with_dilation", (False, True, True)),),
        paper=_C3,
    ),
    "csrnet": CounterSpec(
        trunk="vgg16",
        cut="features.22",
        head=(512, 512, 512, 256, 128, 64),
        head_kernel=3,
        head_dilation=2,
        paper=_CSRNET,
    ),
    "resnet18_counter": CounterSpec(
        trunk="resnet18", cut="layer2", head=(64,), head_kernel=3, paper="cnnzoo"
    ),
}


def list_counters() -> list[str]:
    """Names of the counter architectures."""
    return sorted(COUNTER_SPECS)


def cut_trunk(model: nn.Module, last: str) -> nn.Sequential:
    """The model's leading children up to and including module `last`, names kept.

    Relies on the children being declared in the order `forward_features` runs them, which holds
    for the zoo's ResNet (conv1, bn1, act1, maxpool, layer1..4) and VGG (features); the tests check
    the result against the full model's intermediate output.
    """
    top, _, index = last.partition(".")
    pieces: OrderedDict[str, nn.Module] = OrderedDict()
    for name, child in model.named_children():
        if name == top:
            if index:
                if not isinstance(child, nn.Sequential) or not index.isdigit() or int(index) >= len(child):
                    raise ValueError(
                        f"cannot cut {type(model).__name__} at {last!r}: {name} has no layer {index}"
                    )
                child = child[: int(index) + 1]
            pieces[name] = child
            return nn.Sequential(pieces)
        pieces[name] = child
    names = ", ".join(n for n, _ in model.named_children())
    raise ValueError(f"{type(model).__name__} has no module {top!r} to cut at; its children are {names}")


class CrowdCounter(nn.Module):
    """Trunk (stride 8) + density head; `forward` gives the scaled density map, `count` the counts.

    Inputs are ImageNet-normalised RGB images of any size: the right and bottom edges are
    zero-padded (the mean colour) up to a multiple of the output stride, so ResNet (which rounds
    sizes up) and VGG (which rounds down) both see every pixel and return ceil(H/8) x ceil(W/8).
    """

    def __init__(
        self,
        spec: CounterSpec,
        *,
        name: str = "counter",
        density_scale: float = 100.0,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        from cnnzoo.registry import create_model

        if not density_scale > 0:
            raise ValueError(f"density_scale must be > 0, got {density_scale}")
        self.spec, self.name = spec, name
        self.density_scale = float(density_scale)
        self.output_stride = spec.output_stride
        self.head_name = "head"  # for the trainer's backbone/head parameter groups
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            full = create_model(spec.trunk, num_classes=0, pretrained=pretrained, **dict(spec.trunk_kwargs))
        for w in caught:  # the ImageNet classifier is dropped on purpose; pass on anything else
            if "classifier" not in str(w.message):
                warnings.warn(str(w.message), w.category, stacklevel=2)
        self.trunk = cut_trunk(full, spec.cut)
        channels, stride = self._probe()
        if stride != spec.output_stride:
            raise ValueError(
                f"{spec.trunk} cut at {spec.cut!r} has output stride {stride}, the spec says {spec.output_stride}"
            )
        self.trunk_channels = channels
        layers: list[nn.Module] = []
        in_ch, k, d = channels, spec.head_kernel, spec.head_dilation
        for width in spec.head:
            layers += [
                nn.Conv2d(in_ch, width, k, padding=d * (k - 1) // 2, dilation=d),
                nn.ReLU(inplace=True),
            ]
            in_ch = width
        layers.append(nn.Conv2d(in_ch, 1, 1))
        self.head = nn.Sequential(*layers)
        # N(0, 0.01) and zero bias, as both CSRNet's and C-3's code initialise their heads.
        for m in self.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def _probe(self) -> tuple[int, int]:
        side = 4 * self.spec.output_stride
        was = self.trunk.training
        self.trunk.eval()  # batch-1 BatchNorm statistics would be undefined in train mode
        try:
            f = self.trunk(torch.zeros(1, 3, side, side))
        finally:
            self.trunk.train(was)
        return int(f.shape[1]), side // int(f.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects RGB images of shape (N, 3, H, W), got {tuple(x.shape)}")
        s = self.output_stride
        ph, pw = -x.shape[-2] % s, -x.shape[-1] % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return self.head(self.trunk(x))

    def count(self, x: torch.Tensor) -> torch.Tensor:
        """Estimated head count of each image, (N,) float32 (the density's sum over the scale)."""
        return self(x).flatten(1).sum(1) / self.density_scale

    def metadata(self) -> dict[str, Any]:
        """What `load_counter` needs to rebuild this model from a weights file."""
        return {
            "name": self.name,
            "spec": self.spec.to_dict(),
            "density_scale": self.density_scale,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }


def create_counter(
    name: str,
    *,
    pretrained: str | os.PathLike | bool | None = None,
    density_scale: float = 100.0,
    **overrides: Any,
) -> CrowdCounter:
    """Build a named counter; `pretrained` is a weights file of its trunk (torchvision `.pth` or
    cnnzoo `.safetensors`), or "imagenet"/True for torchvision's published weights of the trunk
    (as `create_model`); `overrides` replace fields of its CounterSpec (e.g. ``cut="layer2"``)."""
    if name not in COUNTER_SPECS:
        raise ValueError(f"unknown counter {name!r}; choose one of {', '.join(list_counters())}")
    spec = COUNTER_SPECS[name]
    if overrides:
        try:
            spec = dataclasses.replace(spec, **overrides)
        except TypeError as e:
            fields = ", ".join(f.name for f in dataclasses.fields(CounterSpec))
            raise TypeError(f"{name}: {e}; CounterSpec fields are {fields}") from e
    return CrowdCounter(spec, name=name, density_scale=density_scale, pretrained=pretrained)


def load_counter(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[CrowdCounter, dict]:
    """(counter in eval mode, its run metadata) from a run directory or a counter `.safetensors` file."""
    from cnnzoo.train.checkpoint import resolve_weights
    from cnnzoo.weights import CheckpointError, read_metadata, read_state_dict

    weights = resolve_weights(path)
    if weights.suffix != ".safetensors":
        raise CheckpointError(
            f"{str(weights)!r} is not a counter checkpoint; pass a run directory of `cnnzoo count train`"
        )
    meta = read_metadata(weights)
    if "cnnzoo_counter" not in meta:
        raise CheckpointError(
            f"{str(weights)!r} is not a crowd-counting checkpoint (no cnnzoo_counter metadata); "
            "pass a run directory or model.safetensors written by `cnnzoo count train`"
        )
    info = json.loads(meta["cnnzoo_counter"])
    model = CrowdCounter(
        CounterSpec.from_dict(info["spec"]),
        name=info.get("name", "counter"),
        density_scale=info["density_scale"],
    )
    state = read_state_dict(weights)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{str(weights)!r} does not fit {info.get('name')}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.to(device).eval()
    return model, {**info, "path": str(Path(weights))}
