"""timm's checkpoint layouts, renamed to cnnzoo's (torchvision's) names.

timm (Wightman, "PyTorch Image Models", github.com/huggingface/pytorch-image-models) stores its
ResNet, ResNeXt, Wide ResNet, SE-ResNet and DenseNet weights under torchvision's names already, so
those load without a map. Its MobileNetV2, EfficientNet and VGG are built from other blocks, and
their tensors are renamed here. Each map is data: a table from timm's names inside one block to
cnnzoo's, plus the block's position, which is counted from the file itself (the stage depths are
read off the `blocks.<stage>.<block>.` keys), so one map serves every width and depth.

What no map can fix is refused by `check_source`: timm's `tf_efficientnet_*` weights were ported
from TensorFlow and need its "same" padding (asymmetric on stride-2 layers) and BatchNorm
eps 1e-3, neither of which cnnzoo's (torchvision's) EfficientNet has. Their tensors have the very
names and shapes of `efficientnet_*`, so only the file's name or its hub `config.json` tells them
apart.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cnnzoo.weights import CheckpointError, register_key_converter

__all__ = [
    "check_model",
    "check_source",
    "timm_efficientnet_to_cnnzoo",
    "timm_inception_v4_to_cnnzoo",
    "timm_mobilenetv2_to_cnnzoo",
    "timm_vgg_to_cnnzoo",
]

StateDict = dict[str, torch.Tensor]

_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\d+)\.(.+)")

# timm's module names inside a block -> torchvision's. A depthwise-separable block (the first
# stage, expansion 1) has no expansion conv; an inverted residual has conv_pw, conv_dw, conv_pwl.
_MOBILENETV2_DS = {"conv_dw": "conv.0.0", "bn1": "conv.0.1", "conv_pw": "conv.1", "bn2": "conv.2"}
_MOBILENETV2_IR = {
    "conv_pw": "conv.0.0",
    "bn1": "conv.0.1",
    "conv_dw": "conv.1.0",
    "bn2": "conv.1.1",
    "conv_pwl": "conv.2",
    "bn3": "conv.3",
}
_EFFICIENTNET_DS = {
    "conv_dw": "block.0.0",
    "bn1": "block.0.1",
    "se.conv_reduce": "block.1.fc1",
    "se.conv_expand": "block.1.fc2",
    "conv_pw": "block.2.0",
    "bn2": "block.2.1",
}
_EFFICIENTNET_IR = {
    "conv_pw": "block.0.0",
    "bn1": "block.0.1",
    "conv_dw": "block.1.0",
    "bn2": "block.1.1",
    "se.conv_reduce": "block.2.fc1",
    "se.conv_expand": "block.2.fc2",
    "conv_pwl": "block.3.0",
    "bn3": "block.3.1",
}

# timm architectures whose tensors fit a cnnzoo model but whose computation differs: refused.
UNSUPPORTED = {
    "tf_efficientnet": (
        "a TensorFlow port that needs 'same' padding (asymmetric on stride-2 layers) and BatchNorm "
        "eps 1e-3, which cnnzoo's EfficientNet (torchvision's) does not have; use timm's "
        "efficientnet_b* weights, or run this file in timm"
    ),
}


def _is_timm_mobile_layout(state: StateDict) -> bool:
    return "conv_stem.weight" in state and any(k.startswith("blocks.") for k in state)


def _rename_blocks(
    state: StateDict,
    *,
    ds: dict[str, str],
    ir: dict[str, str],
    block_prefix: Callable[[int, int, list[int]], str],
    head_index: int,
) -> StateDict:
    depths: dict[int, int] = {}
    inverted: set[tuple[int, int]] = set()
    for k in state:
        m = _BLOCK_KEY.match(k)
        if m:
            i, j = int(m[1]), int(m[2])
            depths[i] = max(depths.get(i, 0), j + 1)
            if m[3].startswith("conv_pwl."):
                inverted.add((i, j))
    offsets = [sum(depths.get(s, 0) for s in range(i)) for i in range(len(depths) + 1)]
    top = {"conv_stem": "features.0.0", "bn1": "features.0.1", "classifier": "classifier.1"}
    head = head_index if head_index >= 0 else offsets[-1] + 1  # the 1x1 conv after the last block
    top |= {"conv_head": f"features.{head}.0", "bn2": f"features.{head}.1"}

    out: StateDict = {}
    for k, v in state.items():
        m = _BLOCK_KEY.match(k)
        if m:
            i, j, rest = int(m[1]), int(m[2]), m[3]
            table = ir if (i, j) in inverted else ds
            module, _, leaf = rest.rpartition(".")
            if module not in table:
                return state  # not the layout this map knows: leave the file as it is
            out[f"{block_prefix(i, j, offsets)}.{table[module]}.{leaf}"] = v
            continue
        module, _, leaf = k.rpartition(".")
        if module not in top:
            return state
        out[f"{top[module]}.{leaf}"] = v
    return out


@register_key_converter("mobilenet")
def timm_mobilenetv2_to_cnnzoo(state: StateDict) -> StateDict:
    """timm's `mobilenetv2_*` (Sandler et al. 2018, arXiv:1801.04381) -> torchvision's `features.N`.

    The blocks are numbered through all stages, as torchvision's flat `features` list numbers them.
    """
    if not _is_timm_mobile_layout(state):
        return state
    return _rename_blocks(
        state,
        ds=_MOBILENETV2_DS,
        ir=_MOBILENETV2_IR,
        block_prefix=lambda i, j, offsets: f"features.{offsets[i] + j + 1}",
        head_index=-1,
    )


@register_key_converter("efficientnet")
def timm_efficientnet_to_cnnzoo(state: StateDict) -> StateDict:
    """timm's `efficientnet_b*` (Tan & Le 2019, arXiv:1905.11946) -> torchvision's `features.stage.block`."""
    if not _is_timm_mobile_layout(state):
        return state
    stages = 1 + max((int(m[1]) for m in map(_BLOCK_KEY.match, state) if m), default=-1)
    return _rename_blocks(
        state,
        ds=_EFFICIENTNET_DS,
        ir=_EFFICIENTNET_IR,
        block_prefix=lambda i, j, offsets: f"features.{i + 1}.{j}",
        head_index=stages + 1,
    )


@register_key_converter("vgg")
def timm_vgg_to_cnnzoo(state: StateDict) -> StateDict:
    """timm's `vgg*` (Simonyan & Zisserman 2014, arXiv:1409.1556): its first two FC layers as convs.

    timm runs fc6/fc7 as a 7x7 and a 1x1 convolution (`pre_logits`); on the 7x7 map of a 224-pixel
    input a 7x7 convolution is the Linear layer on the flattened map, in the same (C, H, W) order,
    so the kernels are reshaped to torchvision's `classifier.0` and `classifier.3`.
    """
    if "pre_logits.fc1.weight" not in state:
        return state
    renames = {
        "pre_logits.fc1": "classifier.0",
        "pre_logits.fc2": "classifier.3",
        "head.fc": "classifier.6",
    }
    out: StateDict = {}
    for k, v in state.items():
        module, _, leaf = k.rpartition(".")
        if module in renames:
            k = f"{renames[module]}.{leaf}"
            if v.dim() == 4:
                v = v.reshape(v.shape[0], -1)
        out[k] = v
    return out


# timm's `inception_v4` keeps its blocks in one Sequential; cnnzoo names them by their
# TensorFlow-slim scopes, in the same order.
_INCEPTION_V4_BLOCKS = (
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Mixed_3a", "Mixed_4a", "Mixed_5a"]
    + [f"Mixed_5{c}" for c in "bcde"]
    + ["Mixed_6a"]
    + [f"Mixed_6{c}" for c in "bcdefgh"]
    + ["Mixed_7a"]
    + [f"Mixed_7{c}" for c in "bcd"]
)
_V4_KEY = re.compile(r"features\.(\d+)\.(.+)")
_V4_CHAIN = re.compile(r"(branch\d)\.(\d+)\.(.+)")  # a branch's i-th unit inside a Sequential
_V4_FLAT = re.compile(r"(branch\d)_(\d)([ab]?)\.(.+)")  # Inception-C's units, numbered from 0


@register_key_converter("inception")
def timm_inception_v4_to_cnnzoo(state: StateDict) -> StateDict:
    """timm's `inception_v4` (Szegedy et al. 2016, arXiv:1602.07261): blocks and units renamed.

    timm numbers the blocks (`features.7`) and a branch's units from 0 (`branch1.0`, or
    `branch1_0`, `branch1_1a` in Inception-C); cnnzoo names the blocks by their slim scopes and
    the units as torchvision's Inception v3 does, from 1 (`branch1_1`, `branch1_2a`), a lone conv
    by its branch's name. Two-branch stem blocks call their conv `conv`: it is the branch beside
    the max-pool (branch1 in Mixed_3a, branch0 in Mixed_5a). `last_linear` is `fc`.
    """
    if "features.21.branch3.1.conv.weight" not in state:
        return state
    out: StateDict = {}
    for k, v in state.items():
        m = _V4_KEY.fullmatch(k)
        if m is None:
            out["fc." + k.removeprefix("last_linear.") if k.startswith("last_linear.") else k] = v
            continue
        block, rest = _INCEPTION_V4_BLOCKS[int(m.group(1))], m.group(2)
        if block in ("Mixed_3a", "Mixed_5a") and rest.startswith("conv."):  # their strided conv
            rest = ("branch1." if block == "Mixed_3a" else "branch0.") + rest[len("conv.") :]
        elif chain := _V4_CHAIN.fullmatch(rest):
            branch, i, leaf = chain.groups()
            # A pooling branch's conv (`branch3.1`, after the pool) is the branch's only unit.
            lone = branch == "branch3" and block.startswith("Mixed_") and not block.endswith("a")
            rest = f"{branch}.{leaf}" if lone else f"{branch}_{int(i) + 1}.{leaf}"
        elif flat := _V4_FLAT.fullmatch(rest):
            branch, i, fork, leaf = flat.groups()
            rest = f"{branch}_{int(i) + 1}{fork}.{leaf}"
        out[f"{block}.{rest}"] = v
    return out


def _timm_architecture(path: Path) -> str | None:
    """The timm architecture a file says it holds: its hub `config.json`, or timm's file naming."""
    config = path.parent / "config.json"
    if config.is_file():
        try:
            arch = json.loads(config.read_text(encoding="utf-8")).get("architecture")
        except (ValueError, OSError, AttributeError):
            arch = None
        if isinstance(arch, str):
            return arch
    # timm's release files are named after the architecture (tf_efficientnet_b0_aa-827b6e33.pth);
    # the hub cache keeps the repository name in a folder (models--timm--tf_efficientnet_b0.ns_jft_in1k).
    for part in reversed(path.parts):
        name = part.rsplit("--", 1)[-1]
        if any(name.startswith(prefix) for prefix in UNSUPPORTED):
            return name
    return None


def check_model(state: StateDict, model: nn.Module, *, source: str) -> None:
    """Refuse timm MobileNet/EfficientNet tensors for a model whose BatchNorm constants differ.

    timm trains its `efficientnet_b*` and `mobilenetv2_*` with torch's BatchNorm eps 1e-5; cnnzoo's
    EfficientNet-B5 to B7 keep the eps 1e-3 of torchvision's TF-ported weights, and eps changes
    every eval output, so those need `bn_eps=1e-5`.
    """
    if not any(k.endswith("conv_stem.weight") for k in state):
        return
    eps = {m.eps for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if eps and eps != {1e-5}:
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(
            f"{source} holds timm weights, trained with BatchNorm eps 1e-5, but this {name} uses eps "
            f"{max(eps):g} (torchvision's); build it with bn_eps=1e-5 (--model-arg bn_eps=1e-5)"
        )


def check_source(path: str | os.PathLike) -> None:
    """Refuse a timm file whose architecture differs from cnnzoo's in ways no key map can fix."""
    arch = _timm_architecture(Path(path))
    if arch is None:
        return
    for prefix, why in UNSUPPORTED.items():
        if arch.startswith(prefix):
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds timm's {arch}: {why}")
