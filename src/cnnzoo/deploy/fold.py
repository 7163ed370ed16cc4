"""Inference-time tidying that keeps the function: fold BatchNorm, drop training-only modules.

In eval mode a BatchNorm layer is a fixed per-channel affine map,
``y = (x - mean) / sqrt(var + eps) * gamma + beta`` (Ioffe & Szegedy 2015, arXiv:1502.03167),
so when it reads the output of a convolution and nothing else reads that output, it can be
absorbed into the convolution's weights and bias and removed: one full pass over the activation
saved per conv-BN pair, and one operator fewer for every exporter and runtime.

Which convolution feeds which BatchNorm is read from the data flow of one eager forward pass,
not guessed from the order of submodules: a pair is folded only when the BatchNorm's input is
the very tensor the convolution returned and no other operation read that tensor (a residual
add or concatenation of the raw convolution output would see the folded values otherwise).
Pre-activation blocks (BN -> ReLU -> conv) have no convolution before their first BatchNorm and
keep it; every later BN in them follows a convolution and is folded.

The model keeps its class, `forward` and interface (`forward_features`, `feature_info`, ...);
only its parameterisation changes, so its state dict is no longer a training checkpoint.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from cnnzoo.layers.drop_path import DropPath

__all__ = [
    "FoldReport",
    "example_input",
    "fold_batchnorm",
    "fold_conv_bn",
    "optimize_for_inference",
    "strip_training_modules",
]

M = TypeVar("M", bound=nn.Module)

_CONV = nn.modules.conv._ConvNd
_BN = nn.modules.batchnorm._BatchNorm
# Identity in eval mode; replacing them removes a Python call and an exporter node each.
_TRAINING_ONLY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, DropPath)


@dataclass
class FoldReport:
    """What `optimize_for_inference` changed, for messages and tests."""

    folded: list[tuple[str, str]] = field(default_factory=list)  # (conv, batchnorm) names
    kept_batchnorms: list[str] = field(default_factory=list)  # BN layers with no conv of their own
    removed: list[str] = field(default_factory=list)  # dropout, drop-path, auxiliary heads
    channels_last: bool = False

    def summary(self) -> str:
        parts = [
            f"folded {len(self.folded)} BatchNorm layers into their convolutions"
            if self.folded or self.kept_batchnorms
            else "no BatchNorm to fold"
        ]
        if self.kept_batchnorms:
            parts.append(f"kept {len(self.kept_batchnorms)} (no convolution right before them)")
        if self.removed:
            parts.append(f"removed {len(self.removed)} training-only modules")
        if self.channels_last:
            parts.append("channels_last")
        return ", ".join(parts)


def example_input(model: nn.Module, *, batch: int = 1, size: int | None = None) -> torch.Tensor:
    """A random input the model accepts: its fixed size, or its smallest one (a cheap forward pass)."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    in_chans = int(getattr(model, "in_chans", 3))
    if size is None:
        size = getattr(model, "fixed_input_size", None) or max(int(getattr(model, "min_input_size", 32)), 1)
    return torch.randn(batch, in_chans, size, size, dtype=dtype, device=device)


# -- data flow of one forward pass ------------------------------------------------------------------
class _UseCounter(TorchFunctionMode):
    """Counts how many tensor-producing torch calls read each tensor.

    Calls that return no tensor (``x.dim()``, ``x.shape``) are metadata queries, not uses. The
    tensors are kept alive until the pass ends so that `id()` values are never reused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.uses: dict[int, int] = defaultdict(int)
        self.keep: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        produced, _ = tree_flatten(out)
        if any(isinstance(t, torch.Tensor) for t in produced):
            inputs, _ = tree_flatten((args, kwargs or {}))
            for t in inputs:
                if isinstance(t, torch.Tensor):
                    self.uses[id(t)] += 1
                    self.keep.append(t)
        return out


@dataclass
class _Trace:
    conv_outputs: dict[int, str] = field(default_factory=dict)  # id(output) -> conv name
    conv_calls: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    bn_inputs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    called: set[str] = field(default_factory=set)
    uses: dict[int, int] = field(default_factory=dict)


@torch.no_grad()
def _trace(model: nn.Module, example: torch.Tensor) -> _Trace:
    trace = _Trace()
    handles = []
    keep: list[torch.Tensor] = []

    def on_call(name: str) -> Any:
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            trace.called.add(name)
            if isinstance(module, _CONV) and isinstance(out, torch.Tensor):
                trace.conv_outputs[id(out)] = name
                trace.conv_calls[name].append(id(out))
                keep.append(out)
            elif isinstance(module, _BN) and args and isinstance(args[0], torch.Tensor):
                trace.bn_inputs[name].append(id(args[0]))
                keep.append(args[0])

        return hook

    for name, module in model.named_modules():
        handles.append(module.register_forward_hook(on_call(name)))
    counter = _UseCounter()
    try:
        with counter:
            model(example)
    finally:
        for h in handles:
            h.remove()
    trace.uses = dict(counter.uses)
    return trace


def _conv_bn_pairs(model: nn.Module, trace: _Trace) -> tuple[list[tuple[str, str]], list[str]]:
    pairs, kept = [], []
    modules = dict(model.named_modules())
    for bn_name, input_ids in trace.bn_inputs.items():
        bn = modules[bn_name]
        sources = {trace.conv_outputs.get(i) for i in input_ids}
        conv_name = sources.pop() if len(sources) == 1 else None
        ok = (
            conv_name is not None
            and bn.track_running_stats
            and bn.running_mean is not None
            # Every call of the conv feeds this BN, and only this BN reads those outputs.
            and sorted(trace.conv_calls[conv_name]) == sorted(input_ids)
            and all(trace.uses.get(i, 0) == 1 for i in input_ids)
            and not isinstance(modules[conv_name], nn.modules.conv._ConvTransposeNd)
            and modules[conv_name].out_channels == bn.num_features
        )
        if ok:
            pairs.append((conv_name, bn_name))
        else:
            kept.append(bn_name)
    return pairs, kept


# -- folding ----------------------------------------------------------------------------------------
@torch.no_grad()
def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> None:
    """Absorb eval-mode `bn` into `conv` (in place): W' = W * s, b' = (b - mean) * s + beta.

    s = gamma / sqrt(running_var + eps) per output channel. Computed in float64 and rounded once,
    so the folded layer differs from conv -> BN by float32 rounding only.
    """
    w = conv.weight
    var = bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    conv.weight = nn.Parameter(
        (w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype), requires_grad=w.requires_grad
    )
    conv.bias = nn.Parameter(shift.to(device=w.device, dtype=w.dtype), requires_grad=w.requires_grad)


def _replace(model: nn.Module, name: str, new: nn.Module | None) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if new is None:
        # An attribute, not a deletion: forward code tests `self.aux1 is not None`.
        delattr(parent, attr)
        setattr(parent, attr, None)
    else:
        setattr(parent, attr, new)


def fold_batchnorm(
    model: nn.Module, example: torch.Tensor | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """Fold every eval-mode BatchNorm that reads only a convolution's output into it (in place).

    Returns the folded (conv, batchnorm) names and the BatchNorm layers kept. `example` is any
    input the model accepts (default: its smallest); the model is put in eval mode.
    """
    model.eval()
    if example is None:
        example = example_input(model)
    trace = _trace(model, example)
    pairs, kept = _conv_bn_pairs(model, trace)
    for conv_name, bn_name in pairs:
        fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _replace(model, bn_name, nn.Identity())
    return pairs, kept


def strip_training_modules(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Replace dropout and drop-path by Identity and remove auxiliary heads eval never runs (in place).

    Auxiliary heads are the submodules a model lists in `optional_prefixes` (GoogLeNet's aux1,
    aux2); they are removed only if an eval-mode forward pass does not call them.
    """
    model.eval()
    removed = []
    for name, module in list(model.named_modules()):
        if name and isinstance(module, _TRAINING_ONLY):
            _replace(model, name, nn.Identity())
            removed.append(name)
    optional = [p.rstrip(".") for p in getattr(model, "optional_prefixes", ())]
    present = [n for n in optional if isinstance(getattr(model, n, None), nn.Module)]
    if present:
        called = _trace(model, example if example is not None else example_input(model)).called
        for name in present:
            if not any(c == name or c.startswith(name + ".") for c in called):
                _replace(model, name, None)
                removed.append(name)
        if hasattr(model, "aux_logits") and all(getattr(model, n, None) is None for n in present):
            model.aux_logits = False
            model.extra_head_names = ()
    return removed


@overload
def optimize_for_inference(
    model: M,
    *,
    example: torch.Tensor | None = ...,
    channels_last: bool = ...,
    inplace: bool = ...,
    return_report: Literal[False] = ...,
) -> M: ...
@overload
def optimize_for_inference(
    model: M,
    *,
    example: torch.Tensor | None = ...,
    channels_last: bool = ...,
    inplace: bool = ...,
    return_report: Literal[True],
) -> tuple[M, FoldReport]: ...
def optimize_for_inference(
    model: M,
    *,
    example: torch.Tensor | None = None,
    channels_last: bool = True,
    inplace: bool = False,
    return_report: bool = False,
) -> M | tuple[M, FoldReport]:
    """The model tidied for inference: eval mode, BN folded, training-only modules gone, NHWC.

    Same outputs as `model.eval()` up to float rounding (tested on every registered model within
    1e-5 relative). Returns the model, a copy unless `inplace`, like
    `torch.jit.optimize_for_inference`; with `return_report=True`, ``(model, FoldReport)``, the
    report naming what was folded, kept and removed.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if example is None:
        example = example_input(model)
    report = FoldReport()
    report.removed = strip_training_modules(model, example)
    report.folded, report.kept_batchnorms = fold_batchnorm(model, example)
    for p in model.parameters():
        p.requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        report.channels_last = True
    return (model, report) if return_report else model
