"""`profile()`: the lectures' per-layer table, exact, for any PyTorch model.

How it sees a model: module hooks give the names, a `TorchFunctionMode` sees every call at the
level the model's code is written in (`F.conv2d`, `x + identity`, `torch.cat`, `x @ w`), and a
`TorchDispatchMode` below it sees every aten operator, where the multiply-accumulates are counted
(`counting.py`). Each activation carries its receptive field as an attribute, transformed by
every call it passes through (`receptive_field.py`).

Rows, in execution order:

- one per call of a leaf module (a module without children: `Conv2d`, `ReLU`, `BatchNorm2d`,
  ...); everything its forward does (functional calls, in-place ops) is that row's cost;
- one per functional call made outside any leaf module that reads an activation and returns a
  tensor: the residual add, a concat, `torch.flatten`, `x.mean((2, 3))`, `F.conv2d(x, w)`,
  `x @ w`. Such a row is named after the module whose forward made the call, e.g.
  `layer1.0.add`, `flatten`, `layer2.0.se.mean` (`_1`, `_2` number repeats within one call).
  Queries (`x.shape`, `x.size()`, `x.dim()`) and computations on parameters alone
  (`self.weight.view(...)`) get no row; a parameter they prepare is charged to the row using it.

A row whose output has its input's shape and which costs no multiply-accumulate and is not a
pooling (activations, BatchNorm, dropout, identity, residual adds, gates) is marked
`elementwise`: the tables hide it by default, as the lectures do, and `total_memory_bytes` does
not count it (frameworks compute such outputs in place or fuse them into the layer before).

Counting conventions:

- `macs`: multiply-accumulates of convolutions and matrix products only: torchvision's "GFLOPS"
  and the ResNet paper's "FLOPs" are this number. It equals torch's `FlopCounterMode` total / 2.
- `ops`: the other operations (pointwise, BatchNorm, pooling, reductions; see `counting.py`);
  `Profile.total_flops = 2 * total_macs + total_ops` is a FLOPs figure in the 2-per-MAC sense.
- `params`: each parameter once, in the first row that uses it (a module called twice is charged
  twice in MACs, once in parameters; tied weights count once).
- `memory_bytes`: the output activation of one sample at fp32, the lecture's "memory (KB)" x 1024.

The model runs once, in eval mode under `torch.no_grad()`, on one sample. A registered name is
built on the meta device, so no weights are allocated and no arithmetic is done (a 1.2-GMAC net
profiles as fast as a 1-MMAC one); a model that cannot run on meta (data-dependent control flow)
is rebuilt and run on the CPU instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cnnzoo.analysis.counting import aten_costs
from cnnzoo.analysis.receptive_field import WHOLE_INPUT, Field, adaptive_window, join, spatial_layer

__all__ = ["Layer", "Profile", "profile"]

BYTES_PER_VALUE = 4  # the lecture's memory column is fp32 whatever the model's dtype


@dataclass
class Layer:
    """One row of the table: a leaf module call or a functional call outside leaf modules."""

    name: str
    kind: str  # the module's class (Conv2d, ReLU) or the function (add, cat, flatten, conv2d)
    input_shape: tuple[int, ...] | None  # per sample, (C, H, W) for an image
    output_shape: tuple[int, ...] | None
    kernel: tuple[int, ...] | None = None
    stride: tuple[int | float, ...] | None = None
    padding: tuple[int, ...] | None = None
    filters: int | None = None  # output channels of a conv, output features of a linear layer
    params: int = 0
    macs: int = 0
    ops: int = 0  # operations that are not multiply-accumulates (see counting.py)
    memory_bytes: int = 0
    receptive_field: int | float | str | None = None  # a number of pixels, or "whole input"
    effective_stride: int | float | None = None
    elementwise: bool = False
    groups: int | None = None  # of a convolution: 1 dense, its input channels when depthwise
    parts: tuple[int, ...] | None = None  # a channel concatenation's inputs' channels (Inception, DenseNet)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("input_shape", "output_shape", "kernel", "stride", "padding", "parts"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


@dataclass
class Profile:
    """The per-layer table of one model at one input size, with its totals."""

    model_name: str
    input_size: tuple[int, ...]
    layers: list[Layer]
    num_parameters: int  # every parameter of the model, used or not
    device: str = "meta"
    module_kinds: dict[str, str] = field(default_factory=dict, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        """Parameters the forward pass used, each counted once."""
        return sum(r.params for r in self.layers)

    @property
    def unused_params(self) -> int:
        """Parameters the eval-mode forward never touched (e.g. auxiliary classifier heads)."""
        return self.num_parameters - self.total_params

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def total_ops(self) -> int:
        return sum(r.ops for r in self.layers)

    @property
    def total_flops(self) -> int:
        """2 FLOPs per multiply-accumulate plus every other operation (an estimate; see counting.py)."""
        return 2 * self.total_macs + self.total_ops

    @property
    def total_memory_bytes(self) -> int:
        """Output activations of the rows the tables show (elementwise rows are in place)."""
        return sum(r.memory_bytes for r in self.layers if not r.elementwise)

    @property
    def receptive_field(self) -> int | float | str | None:
        """The largest receptive field of any activation, in input pixels; `WHOLE_INPUT` ("whole
        input") when a global operation (an SE gate, attention) lets some unit see every pixel."""
        values = [r.receptive_field for r in self.layers if r.receptive_field is not None]
        if WHOLE_INPUT in values:
            return WHOLE_INPUT
        return max(values) if values else None

    @property
    def effective_stride(self) -> int | float | None:
        values = [r.effective_stride for r in self.layers if r.effective_stride is not None]
        return max(values) if values else None

    def visible_layers(self) -> list[Layer]:
        return [r for r in self.layers if not r.elementwise]

    def aggregate(self, depth: int) -> list[Layer]:
        """Rows merged to module depth `depth` (1: `layer1`, 2: `layer1.0`), consecutive calls only."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        groups: list[tuple[str, list[Layer]]] = []
        for r in self.layers:
            key = ".".join(r.name.split(".")[:depth])
            if groups and groups[-1][0] == key:
                groups[-1][1].append(r)
            else:
                groups.append((key, [r]))
        out = []
        for key, rows in groups:
            if len(rows) == 1:
                out.append(rows[0])
                continue
            first, last = rows[0], rows[-1]
            spatial = [r for r in rows if r.receptive_field is not None]
            out.append(
                Layer(
                    name=key,
                    kind=self.module_kinds.get(key, first.kind),
                    input_shape=first.input_shape,
                    output_shape=last.output_shape,
                    params=sum(r.params for r in rows),
                    macs=sum(r.macs for r in rows),
                    ops=sum(r.ops for r in rows),
                    memory_bytes=sum(r.memory_bytes for r in rows if not r.elementwise),
                    receptive_field=last.receptive_field
                    if last.receptive_field is not None or not spatial
                    else None,
                    effective_stride=last.effective_stride,
                    elementwise=all(r.elementwise for r in rows),
                )
            )
        return out

    def totals(self) -> dict[str, Any]:
        return {
            "params": self.total_params,
            "unused_params": self.unused_params,
            "macs": self.total_macs,
            "ops": self.total_ops,
            "flops": self.total_flops,
            "memory_bytes": self.total_memory_bytes,
            "receptive_field": self.receptive_field,
            "effective_stride": self.effective_stride,
        }

    def to_dict(self, depth: int | None = None) -> dict[str, Any]:
        layers = self.layers if depth is None else self.aggregate(depth)
        return {
            "model": self.model_name,
            "input_size": list(self.input_size),
            "device": self.device,
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "total_memory_bytes": self.total_memory_bytes,
            "total_ops": self.total_ops,
            "total_flops": self.total_flops,
            "num_parameters": self.num_parameters,
            "unused_params": self.unused_params,
            "receptive_field": self.receptive_field,
            "effective_stride": self.effective_stride,
            "notes": list(self.notes),
            "layers": [r.to_dict() for r in layers],
        }

    def table(self, fmt: str = "table", *, depth: int | None = None, all_rows: bool = False) -> str:
        """The lecture's columns as text: "table", "md", "csv" or "json" (see `formats.py`)."""
        from cnnzoo.analysis.formats import render_profile

        return render_profile(self, fmt, depth=depth, all_rows=all_rows)

    def __str__(self) -> str:
        return self.table()


# -- tracing ---------------------------------------------------------------------------------------
_FIELD = "_cnnzoo_field"  # attribute of an activation: its Field, or None once it is not spatial
_PARAMS = "_cnnzoo_params"  # attribute of a tensor computed from parameters alone: their ids
_UNTRACED = object()

# Calls that only ask about a tensor: never a row.
_QUERIES = {
    "size",
    "dim",
    "numel",
    "shape",
    "ndim",
    "device",
    "dtype",
    "is_contiguous",
    "stride",
    "data_ptr",
    "element_size",
    "nelement",
    "requires_grad",
    "is_floating_point",
    "get_device",
    "layout",
    "names",
    "grad",
    "is_leaf",
    "itemsize",
}
_CONVS = {"conv1d", "conv2d", "conv3d"}
_CONV_TRANSPOSES = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_MAX_POOLS = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices"}
_MAX_POOLS |= {"max_pool2d_with_indices", "max_pool3d_with_indices"}
_AVG_POOLS = {"avg_pool1d", "avg_pool2d", "avg_pool3d"}
_LP_POOLS = {"lp_pool1d", "lp_pool2d", "lp_pool3d"}
_ADAPTIVE_POOLS = {
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices",
    "adaptive_max_pool3d_with_indices",
}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "norm", "prod"}
# Matrix products: per position when they contract channels, a global operation when they
# contract positions or multiply two activations (attention's scores and weighted sum).
_PRODUCTS = {"matmul", "mm", "bmm", "einsum", "addmm", "baddbmm"}
_ATTENTION = {"scaled_dot_product_attention", "multi_head_attention_forward"}
_SOFTMAXES = {"softmax", "log_softmax", "softmin", "normalize"}
_PERMUTES = {"permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "t", "T", "mT", "mH", "H"}
_VIEWS = {"view", "reshape", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_SPLITS = {"chunk", "split", "tensor_split", "split_with_sizes"}
_RESAMPLES = {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}
_SPATIAL_KINDS = _CONVS | _CONV_TRANSPOSES | _MAX_POOLS | _AVG_POOLS | _LP_POOLS | _ADAPTIVE_POOLS
_SPATIAL_KINDS |= {"pad", "getitem", "unfold", "fold"} | _RESAMPLES
# Calls on (N, C, *spatial) maps, whose output axes are known whatever happened before.
_MAP_OPS = _SPATIAL_KINDS - {"getitem", "pad"}


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":  # a property getter, e.g. Tensor.shape
        name = getattr(getattr(func, "__self__", None), "__name__", "get")
    name = name.strip("_")
    if name.startswith(("i", "r")) and name[1:] in {"add", "sub", "mul", "truediv", "matmul", "and", "or"}:
        name = name[1:]  # x += y is an add; w @ x a matmul
    return {"truediv": "div", "concat": "cat", "concatenate": "cat"}.get(name, name)


def _tensors(x: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)]


def _first_tensor(x: Any) -> torch.Tensor | None:
    ts = _tensors(x)
    return ts[0] if ts else None


def _per_sample(t: torch.Tensor | None) -> tuple[int, ...] | None:
    if t is None:
        return None
    return tuple(int(s) for s in t.shape[1:])


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _ntuple(v: Any, n: int) -> tuple:
    if isinstance(v, int | float):
        return (v,) * n
    v = tuple(v)
    return v * n if len(v) == 1 else v


@dataclass
class _Frame:
    name: str
    row: Layer | None  # the leaf row this module call fills, if it is a leaf
    previous: Layer | None = None  # the row receiving costs before this call
    passive: bool = False  # a module called from inside a leaf: part of that leaf's row
    counts: dict[str, int] = field(default_factory=dict)


class _CostMode(TorchDispatchMode):
    """Charges every aten operator's cost to the row being executed."""

    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        macs, ops = aten_costs(func, args, kwargs, out)
        if macs or ops:
            row = self.tracer.current
            if row is None:
                self.tracer.unattributed[0] += macs
                self.tracer.unattributed[1] += ops
            else:
                row.macs += macs
                row.ops += ops
        return out


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.names: dict[int, str] = {}
        self.kinds: dict[str, str] = {}
        for name, m in model.named_modules():
            self.names.setdefault(id(m), name)
            self.kinds.setdefault(name, type(m).__name__)
        self.param_numel = {id(p): p.numel() for p in model.parameters()}
        self.claimed: set[int] = set()
        self.rows: list[Layer] = []
        self.frames: list[_Frame] = []
        self.current: Layer | None = None
        self.pending: Layer | None = None  # a functional row whose call is running
        self.unattributed = [0, 0]
        self.notes: list[str] = []
        self.func: Any = None  # the function being traced (F.unfold and Tensor.unfold share a name)
        self.why: str | None = None  # why the call being traced made the field the whole input
        self.whole_noted = False
        self.handles: list[Any] = []
        for m in model.modules():
            self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post, with_kwargs=True))

    def remove_hooks(self) -> None:
        for h in self.handles:
            h.remove()

    # -- parameters ---------------------------------------------------------------------------
    def _claim(self, ids: Iterable[int]) -> int:
        n = 0
        for i in ids:
            if i in self.param_numel and i not in self.claimed:
                self.claimed.add(i)
                n += self.param_numel[i]
        return n

    def _param_ids(self, tensors: Iterable[torch.Tensor]) -> set[int]:
        ids: set[int] = set()
        for t in tensors:
            if id(t) in self.param_numel:
                ids.add(id(t))
            else:
                ids |= getattr(t, _PARAMS, set())
        return ids

    # -- module hooks -------------------------------------------------------------------------
    def _leaf_row(self) -> Layer | None:
        for f in reversed(self.frames):
            if f.row is not None:
                return f.row
        return None

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        name = self.names.get(id(module), type(module).__name__)
        if self._leaf_row() is not None:
            self.frames.append(_Frame(name, None, passive=True))
            return
        # A container's own calls become functional rows; so do those of a model with no
        # submodules at all (parameters and F.conv2d calls): one row for it would hide every layer.
        if module._modules or name == "":
            self.frames.append(_Frame(name, None))
            return
        inputs = _tensors((args, kwargs))
        traced = [t for t in inputs if getattr(t, _FIELD, _UNTRACED) is not _UNTRACED]
        row = Layer(
            name=name or type(module).__name__,
            kind=type(module).__name__,
            input_shape=_per_sample(traced[0] if traced else (inputs[0] if inputs else None)),
            output_shape=None,
            params=self._claim(id(p) for p in module.parameters()),
        )
        self.rows.append(row)
        self.frames.append(_Frame(name, row, previous=self.current))
        self.current = row

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        frame = self.frames.pop()
        if frame.row is not None:
            self._finish(frame.row, output)
            self.current = frame.previous

    # -- every call ---------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        name = _op_name(func)
        if name in _QUERIES:
            return func(*args, **kwargs)
        inputs = _tensors((args, kwargs))
        traced = [t for t in inputs if getattr(t, _FIELD, _UNTRACED) is not _UNTRACED]
        if not traced:
            out = func(*args, **kwargs)
            ids = self._param_ids(inputs)
            if ids:  # e.g. a weight reshaped or scaled before use: charge it where it is used
                for t in _tensors(out):
                    if id(t) not in self.param_numel:
                        setattr(t, _PARAMS, ids)
            return out
        leaf = self._leaf_row()
        self.func = func
        if leaf is not None:
            out = func(*args, **kwargs)
            self._propagate(name, args, kwargs, traced, out, leaf)
            return out
        frame = self.frames[-1] if self.frames else None
        row = Layer(
            name=self._row_name(frame, name), kind=name, input_shape=_per_sample(traced[0]), output_shape=None
        )
        if name == "cat":
            row.parts = _channel_parts(args, kwargs)
        previous, self.current, self.pending = self.current, row, row
        try:
            out = func(*args, **kwargs)
        finally:
            self.current = previous
        self.pending = None
        if _first_tensor(out) is None:  # x.tolist(), x.unbind() of nothing, ...
            return out
        if frame is not None:
            frame.counts[name] = frame.counts.get(name, 0) + 1
        row.params = self._claim(self._param_ids(inputs))
        self.rows.append(row)
        self._propagate(name, args, kwargs, traced, out, row)
        self._finish(row, out)
        return out

    def _row_name(self, frame: _Frame | None, op: str) -> str:
        n = frame.counts.get(op, 0) if frame is not None else 0
        base = f"{frame.name}.{op}" if frame is not None and frame.name else op
        return f"{base}_{n}" if n else base

    def _finish(self, row: Layer, output: Any) -> None:
        t = _first_tensor(output)
        row.output_shape = _per_sample(t)
        row.memory_bytes = (t.numel() // max(int(t.shape[0]), 1) if t is not None and t.dim() else 1) * (
            BYTES_PER_VALUE
        )
        f = getattr(t, _FIELD, None) if t is not None else None
        if f is not None:
            row.receptive_field, row.effective_stride = f.scalar_rf(), f.scalar_jump()
        row.elementwise = (
            row.macs == 0
            and row.output_shape == row.input_shape
            and row.kernel is None
            and row.kind not in _SPATIAL_KINDS
        )

    # -- receptive fields ---------------------------------------------------------------------
    def _propagate(
        self, op: str, args: tuple, kwargs: dict, traced: list[torch.Tensor], out: Any, row: Layer
    ) -> None:
        x = traced[0]
        f_in: Field | None = getattr(x, _FIELD)
        outs = _tensors(out)
        if not outs:
            return
        y = outs[0]
        n = x.dim() - 2  # spatial axes of an (N, C, *spatial) activation
        f_out: Field | None
        self.why = None
        try:
            f_out = self._transform(op, args, kwargs, traced, x, y, f_in, n, row)
        except (TypeError, ValueError, IndexError) as e:  # an unusual call signature: keep the field
            self._note(f"receptive field passed unchanged through {row.name} ({op}): {e}")
            f_out = None if f_in is None else f_in.untracked()
        if f_out is not None and not _fits(f_out, y):
            f_out = f_out.moved(None).untracked()
        was_whole = any(getattr(t, _FIELD) is not None and getattr(t, _FIELD).whole for t in traced)
        if f_out is not None and f_out.whole and not was_whole and not self.whole_noted:
            self.whole_noted = True
            why = self.why or "a global operation"
            self._note(f"the receptive field is the whole input from {row.name} ({op}) on: {why}")
        for t in outs:
            if id(t) not in self.param_numel:
                setattr(t, _FIELD, f_out)

    def _note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    def _whole(self, f: Field, why: str) -> Field:
        if not f.whole:
            self.why = why
        return f.made_whole()

    def _join(self, fields: Sequence[Field | None]) -> Field | None:
        f = join(fields)
        if f is not None and f.whole and not any(g is not None and g.whole for g in fields):
            self.why = (
                "a summary with no spatial extent left (a global pooling or mean) is combined with "
                "the map again, as a squeeze-and-excitation gate or a pooled vector broadcast back"
            )
        return f

    def _transform(
        self,
        op: str,
        args: tuple,
        kwargs: dict,
        traced: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        f_in: Field | None,
        n: int,
        row: Layer,
    ) -> Field | None:
        fields = [getattr(t, _FIELD) for t in traced]
        if any(f is not None and f.lost for f in fields) and op not in _MAP_OPS:
            # Axes not followed: keep the field (the widest path), claim nothing global.
            return join(fields) if len(traced) > 1 else (None if y.dim() < 3 else f_in)
        if op in _ATTENTION:
            spatial = [f for f in fields if f is not None]
            if not spatial:
                return None
            base = f_in if f_in is not None else spatial[0]
            return self._whole(base, "attention mixes every position with every other")
        if op == "linear":
            if row.filters is None:
                row.filters = int(_arg(args, kwargs, 1, "weight").shape[0])
            if f_in is None:
                return None
            if x.dim() - 1 in f_in.axes(x.dim()):  # weights across positions (an MLP-Mixer's token mixing)
                return self._whole(f_in, f"a dense layer across positions ({op}) mixes all of them")
            return f_in  # per position: it mixes channels only
        if op in _PRODUCTS:
            return self._product(op, args, kwargs, y)
        if op in _CONVS or op in _CONV_TRANSPOSES:
            w = _arg(args, kwargs, 1, "weight")
            k = tuple(int(s) for s in w.shape[2:])
            n = len(k)
            transposed = op in _CONV_TRANSPOSES
            stride = _ntuple(_arg(args, kwargs, 3, "stride", 1), n)
            padding = _arg(args, kwargs, 4, "padding", 0)
            groups = _arg(args, kwargs, 6, "groups", 1)
            dilation = _ntuple(_arg(args, kwargs, 7 if transposed else 5, "dilation", 1), n)
            if isinstance(padding, str):  # 'valid' or 'same' (stride 1)
                padding = tuple(
                    0 if padding == "valid" else d * (kk - 1) // 2 for kk, d in zip(k, dilation, strict=False)
                )
            padding = _ntuple(padding, n)
            self._set_geometry(row, k, stride, padding)
            if row.groups is None:
                row.groups = int(groups)
            if row.filters is None:
                row.filters = int(w.shape[1]) * int(groups) if transposed else int(w.shape[0])
            if f_in is None:
                return None
            if transposed:
                return _scattered(f_in, k, stride, dilation)
            return spatial_layer(f_in, k, stride, padding, dilation)
        if op == "unfold":
            return None if f_in is None else self._unfold(args, kwargs, x, f_in, row)
        if op == "fold":  # col2im: (N, C k k, L) back to (N, C, H, W), summing overlapping patches
            kernel = _arg(args, kwargs, 2, "kernel_size")
            n = y.dim() - 2
            k = _ntuple(kernel, n)
            dilation = _ntuple(_arg(args, kwargs, 3, "dilation", 1), n)
            stride = _ntuple(_arg(args, kwargs, 5, "stride", 1), n)
            self._set_geometry(row, k, stride, _ntuple(_arg(args, kwargs, 4, "padding", 0), n))
            return None if f_in is None else _scattered(f_in, k, stride, dilation)
        if op in _MAX_POOLS or op in _AVG_POOLS or op in _LP_POOLS:
            if op in _LP_POOLS:
                kernel, stride = _arg(args, kwargs, 2, "kernel_size"), _arg(args, kwargs, 3, "stride")
                padding, dilation = 0, 1
            else:
                kernel, stride = _arg(args, kwargs, 1, "kernel_size"), _arg(args, kwargs, 2, "stride")
                padding = _arg(args, kwargs, 3, "padding", 0)
                dilation = _arg(args, kwargs, 4, "dilation", 1) if op in _MAX_POOLS else 1
            n = x.dim() - 2
            k = _ntuple(kernel, n)
            s = _ntuple(stride if stride not in (None, [], ()) else kernel, n)
            p = _ntuple(padding, n)
            self._set_geometry(row, k, s, p)
            return None if f_in is None else spatial_layer(f_in, k, s, p, _ntuple(dilation, n))
        if op in _ADAPTIVE_POOLS:
            size_in, size_out = x.shape[2:], y.shape[2:]
            if all(int(s) == 1 for s in size_out):  # global pooling: no spatial extent left
                return None
            windows = [adaptive_window(int(i), int(o)) for i, o in zip(size_in, size_out, strict=False)]
            k = tuple(w[0] for w in windows)
            s = tuple(w[1] for w in windows)
            self._set_geometry(
                row, k, tuple(int(v) if float(v).is_integer() else v for v in s), (0,) * len(k)
            )
            return None if f_in is None else spatial_layer(f_in, k, s, (0,) * len(k))
        dims = _arg(args, kwargs, 1, "dim") if op in _REDUCTIONS else None
        if op in _REDUCTIONS and not isinstance(dims, torch.Tensor):  # torch.max(a, b) is a join
            if dims is None or f_in is None:  # over everything
                return None
            reduced = {d % x.dim() for d in _ntuple(dims, 1)}
            axes = f_in.axes(x.dim())
            if reduced & set(axes):  # over the positions: a summary of the whole map, no map left
                return None
            if y.dim() == x.dim():  # keepdim
                return f_in
            return f_in.moved(tuple(d - sum(r < d for r in reduced) for d in axes))
        if op in ("cat", "stack"):
            f = self._join([getattr(t, _FIELD) for t in traced]) if len(traced) > 1 else f_in
            if f is None or op == "cat":  # a concatenation keeps every axis where it was
                return f
            d = int(_arg(args, kwargs, 1, "dim", 0)) % y.dim()
            return f.moved(tuple(a + (a >= d) for a in f.axes(x.dim())))
        if len(traced) > 1:  # residual add, gate: the widest path
            return self._join([getattr(t, _FIELD) for t in traced])
        if f_in is None:
            return None
        axes = f_in.axes(x.dim())
        if op in _SOFTMAXES:
            dim = _arg(args, kwargs, 2 if op == "normalize" else 1, "dim", 1 if op == "normalize" else None)
            if dim is not None and int(dim) % x.dim() in axes:
                return self._whole(
                    f_in, f"a {op} over the positions divides each unit by a sum over all of them"
                )
            return f_in
        if op in ("layer_norm", "group_norm", "instance_norm", "batch_norm"):
            return self._normalised(op, args, kwargs, x, f_in)
        if op in _PERMUTES:
            perm = _permutation(op, args, kwargs, x.dim())
            return f_in.moved(tuple(perm.index(a) for a in axes))
        if op == "flatten":
            start = int(_arg(args, kwargs, 1, "start_dim", 0)) % x.dim()
            end = int(_arg(args, kwargs, 2, "end_dim", -1)) % x.dim()
            merged = range(start, end + 1)
            if any(a in merged for a in axes) and any(x.shape[d] > 1 for d in merged if d not in axes):
                return None  # positions interleaved with channels: features, no map
            return f_in.moved(tuple(start if a in merged else a - (end - start) * (a > end) for a in axes))
        if op in _VIEWS:
            return _reshaped(f_in, tuple(x.shape), tuple(y.shape))
        if op == "unbind":
            d = int(_arg(args, kwargs, 1, "dim", 0)) % x.dim()
            return None if d in axes else f_in.moved(tuple(a - (a > d) for a in axes))
        if op in _SPLITS:
            return f_in
        if op == "pad":
            pad = _arg(args, kwargs, 1, "pad")
            # F.pad lists (left, right) pairs from the last axis backwards.
            lefts = [pad[2 * i] for i in range(len(pad) // 2)][::-1]
            n = f_in.ndim
            lefts = [0] * (n - len(lefts)) + lefts[-n:] if n else []
            start = tuple(s0 - p * j for s0, p, j in zip(f_in.start, lefts, f_in.jump, strict=False))
            return Field(f_in.rf, f_in.jump, start, f_in.whole)
        if op == "getitem":
            return self._slice(args[1], f_in, x)
        if op in _RESAMPLES:
            return _resampled(f_in, op, args, kwargs, x, y)
        if y.dim() != x.dim() and y.numel() == x.numel():  # a reshape by another name
            return _reshaped(f_in, tuple(x.shape), tuple(y.shape))
        if y.dim() < 3:  # no spatial extent left
            return None
        n = f_in.ndim
        if y.dim() == x.dim() and any(int(y.shape[a]) != int(x.shape[a]) for a in axes):
            self._note(f"receptive field passed unchanged through {row.name} ({op}), which reshapes space")
        return f_in

    def _product(self, op: str, args: tuple, kwargs: dict, y: torch.Tensor) -> Field | None:
        """x @ w per position keeps the field; a product over positions, or of two activations
        (attention's q k^T and its weighted sum of v), makes it the whole input."""
        if op == "einsum":
            return self._einsum(args, y)
        if getattr(self.func, "__name__", "") == "__rmatmul__":  # x.__rmatmul__(w) is w @ x
            a, b = args[1], args[0]
        elif op in ("addmm", "baddbmm"):
            a, b = args[1], args[2]
        else:
            a, b = args[0], args[1]
        fields = {}
        for side, t in (("a", a), ("b", b)):
            f = getattr(t, _FIELD, _UNTRACED) if isinstance(t, torch.Tensor) else _UNTRACED
            if f is not _UNTRACED:
                fields[side] = (t, f)
        spatial = {side: tf for side, tf in fields.items() if tf[1] is not None}
        if not spatial:
            return None
        side, (t, f) = next(iter(spatial.items()))
        nd = t.dim()
        axes = f.axes(nd)
        contracted = nd - 1 if side == "a" else max(nd - 2, 0)
        # Batch axes align from the right (broadcasting); a's rows and b's columns stay in place.
        moved = f.moved(tuple(y.dim() - nd + d for d in axes)) if contracted not in axes else f.moved(None)
        if len(fields) > 1:
            return self._whole(moved, "a product of two activations pairs every position with every other")
        if contracted in axes:
            return self._whole(moved, f"a matrix product across positions ({op}) mixes all of them")
        return moved

    def _einsum(self, args: tuple, y: torch.Tensor) -> Field | None:
        equation = str(args[0]).replace(" ", "")
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], list | tuple) else list(args[1:])
        if "->" not in equation or "." in equation:
            raise TypeError(f"einsum {equation!r} without an explicit output or with '...'")
        inputs, output = equation.split("->")
        found = []
        for t, subscripts in zip(operands, inputs.split(","), strict=True):
            f = getattr(t, _FIELD, _UNTRACED) if isinstance(t, torch.Tensor) else _UNTRACED
            if f is not _UNTRACED:
                found.append((t, f, subscripts))
        spatial = [(t, f, sub) for t, f, sub in found if f is not None]
        if not spatial:
            return None
        t, f, sub = spatial[0]
        letters = [sub[a] for a in f.axes(t.dim())]
        kept = all(c in output for c in letters)
        moved = f.moved(tuple(output.index(c) for c in letters) if kept else None)
        if len(found) > 1:
            return self._whole(moved, "a product of two activations pairs every position with every other")
        if not kept:
            return self._whole(moved, "an einsum summing over positions mixes all of them")
        return moved

    def _unfold(self, args: tuple, kwargs: dict, x: torch.Tensor, f_in: Field, row: Layer) -> Field:
        axes = f_in.axes(x.dim())
        n = f_in.ndim
        if self.func is F.unfold:
            # im2col: (N, C, H, W) -> (N, C k k, L), one column per kernel position: the field of a
            # convolution with the same kernel, its positions flattened into the last axis.
            k = _ntuple(_arg(args, kwargs, 1, "kernel_size"), n)
            dilation = _ntuple(_arg(args, kwargs, 2, "dilation", 1), n)
            padding = _ntuple(_arg(args, kwargs, 3, "padding", 0), n)
            stride = _ntuple(_arg(args, kwargs, 4, "stride", 1), n)
            self._set_geometry(row, k, stride, padding)
            return spatial_layer(f_in, k, stride, padding, dilation).moved((2,) * n)
        # Tensor.unfold(dim, size, step): windows along one axis, their contents in a new last axis.
        d = int(_arg(args, kwargs, 1, "dimension")) % x.dim()
        size, step = int(_arg(args, kwargs, 2, "size")), int(_arg(args, kwargs, 3, "step"))
        if axes.count(d) != 1:
            return f_in
        k, s = [1] * n, [1] * n
        k[axes.index(d)], s[axes.index(d)] = size, step
        return spatial_layer(f_in, k, s, (0,) * n).moved(axes)

    def _normalised(self, op: str, args: tuple, kwargs: dict, x: torch.Tensor, f_in: Field) -> Field:
        """Statistics taken over one sample's positions (GroupNorm, InstanceNorm, a LayerNorm over
        space, BatchNorm in training) make every unit depend on every position."""
        axes = f_in.axes(x.dim())
        if op == "layer_norm":
            shape = _arg(args, kwargs, 1, "normalized_shape")
            k = 1 if isinstance(shape, int) else len(tuple(shape))
            over = set(range(x.dim() - k, x.dim())) & set(axes)
        elif op == "instance_norm":
            over = set(axes) if _arg(args, kwargs, 5, "use_input_stats", True) else set()
        elif op == "batch_norm":
            over = set(axes) if _arg(args, kwargs, 5, "training", False) else set()
        else:
            over = set(axes)
        if over:
            return self._whole(f_in, f"{op} divides every unit by statistics over all positions")
        return f_in

    def _set_geometry(self, row: Layer, k: Sequence, s: Sequence, p: Sequence) -> None:
        if row.kernel is None:  # the first spatial call of a leaf describes it (a Conv2d's conv)
            row.kernel, row.stride, row.padding = tuple(k), tuple(s), tuple(int(v) for v in p)

    def _slice(self, index: Any, f: Field, x: torch.Tensor) -> Field | None:
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            e = index.index(Ellipsis)
            used = sum(1 for i in index if i is not None and i is not Ellipsis)
            index = index[:e] + (slice(None),) * (x.dim() - used) + index[e + 1 :]
        axes = f.axes(x.dim())
        rf, jump, start = list(f.rf), list(f.jump), list(f.start)
        where: dict[int, int] = {}  # input axis -> output axis
        d_in = d_out = 0
        for idx in index:
            if idx is None:  # a new axis of size 1
                d_out += 1
                continue
            if isinstance(idx, bool) or not isinstance(idx, int | slice):
                raise TypeError(f"index {idx!r}")
            if isinstance(idx, int):
                if d_in in axes:  # one position along an axis: a row or a token, no map
                    return None
                d_in += 1
                continue
            if axes.count(d_in) == 1 and (idx.start or idx.step):
                axis = axes.index(d_in)
                step, first = idx.step or 1, idx.start or 0
                if first < 0:
                    first += int(x.shape[d_in])
                start[axis] += first * jump[axis]
                jump[axis] *= step
            where[d_in] = d_out
            d_in, d_out = d_in + 1, d_out + 1
        for d in range(d_in, x.dim()):
            where[d] = d_out + d - d_in
        return Field(tuple(rf), tuple(jump), tuple(start), f.whole, tuple(where[a] for a in axes))

    # -- where a failure happened -------------------------------------------------------------
    def location(self) -> tuple[str, str, tuple[int, ...] | None] | None:
        if self.pending is not None:
            return self.pending.name, self.pending.kind, self.pending.input_shape
        row = self._leaf_row()
        if row is not None:
            return row.name, row.kind, row.input_shape
        if self.frames:
            name = self.frames[-1].name
            return name or "the model's forward", self.kinds.get(name, "?"), None
        return None


# -- the entry point --------------------------------------------------------------------------------
_SIZE_ERRORS = re.compile(
    r"too small|can't be greater|cannot be multiplied|size mismatch|must match the size|"
    r"Padding size should be less|non-positive|Expected .*size|expected input.*to have|"
    r"shape '\[.*\]' is invalid|Kernel size can't",
    re.IGNORECASE,
)


class _DoesNotFit(Exception):
    pass


def _resolve_input_size(input_size: Any, default: tuple[int, ...]) -> tuple[int, ...]:
    if input_size is None:
        return tuple(default)
    if isinstance(input_size, int):
        raise TypeError(f"input_size is (C, H, W), e.g. {tuple(default)}, not {input_size!r}")
    size = tuple(input_size)
    if not size or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"input_size must be positive ints (C, H, W), got {input_size!r}")
    return size


def _fixed_size(name: str) -> bool:
    """Whether the registered model only takes one input size (and so has an `img_size` option)."""
    from cnnzoo.registry import create_model

    with torch.device("meta"):
        return getattr(create_model(name), "fixed_input_size", None) is not None


# Input pixels one output pixel reads per axis: nearest copies one, (bi/tri)linear blends two
# neighbours, bicubic four (PyTorch's interpolate kernels).
_RESAMPLE_TAPS = {
    "nearest": 1,
    "nearest-exact": 1,
    "area": 1,
    "linear": 2,
    "bilinear": 2,
    "trilinear": 2,
    "bicubic": 4,
}


def _resampled(f_in: Field, op: str, args: tuple, kwargs: dict, x: torch.Tensor, y: torch.Tensor) -> Field:
    """The field after F.interpolate / nn.Upsample: every output unit sees the union of the input
    units its kernel blends, so a bilinear resize widens the field by one input step and a bicubic
    one by three (nearest only changes the step). A downscale with antialias widens the kernel by
    the scale, as PyTorch's antialiased filter does."""
    if op == "upsample_bilinear":
        mode = "bilinear"
    elif op == "upsample_nearest":
        mode = "nearest"
    else:
        mode = _arg(args, kwargs, 3, "mode", "nearest")
    antialias = bool(_arg(args, kwargs, 6, "antialias", False))
    rf, jump, start = [], [], []
    for r, j, s0, a, b in zip(f_in.rf, f_in.jump, f_in.start, x.shape[2:], y.shape[2:], strict=False):
        scale = int(a) / int(b)  # input pixels per output pixel
        taps = _RESAMPLE_TAPS.get(str(mode), 1)
        if antialias and scale > 1 and taps > 1:
            taps = math.ceil(taps * scale)
        rf.append(r + (taps - 1) * j)
        jump.append(j * scale)
        start.append(s0 + (scale - 1) / 2 * j)
    return Field(tuple(rf), tuple(jump), tuple(start), f_in.whole)


def _fits(f: Field, y: torch.Tensor) -> bool:
    """Whether `f`'s axes exist in `y` (an unknown reshape may have moved them)."""
    if f.dims is None:
        return y.dim() > f.ndim
    return all(0 <= d < y.dim() for d in f.dims)


def _scattered(f_in: Field, k: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> Field:
    """The field after a transposed convolution or F.fold (col2im): an output unit sums the input
    units whose kernel window covers it, at most (d (k - 1)) // s + 1 of them per axis."""
    n = len(k)
    k_in = tuple(d * (kk - 1) // s + 1 for kk, s, d in zip(k, stride, dilation, strict=True))
    f = spatial_layer(f_in, k_in, (1,) * n, (0,) * n)
    return Field(f.rf, tuple(j / s for j, s in zip(f_in.jump, stride, strict=True)), f.start, f.whole)


def _permutation(op: str, args: tuple, kwargs: dict, ndim: int) -> list[int]:
    """perm[j] = the input axis that becomes output axis j."""
    perm = list(range(ndim))
    if op == "permute":
        dims = kwargs.get("dims", args[1:] if len(args) > 2 or isinstance(args[1], int) else args[1])
        return [int(d) % ndim for d in dims]
    if op in ("T", "H") or (op == "t" and ndim == 2):
        return perm[::-1]
    if op in ("mT", "mH"):
        a, b = ndim - 2, ndim - 1
    elif op in ("movedim", "moveaxis"):
        src = [int(d) % ndim for d in _ntuple(_arg(args, kwargs, 1, "source"), 1)]
        dst = [int(d) % ndim for d in _ntuple(_arg(args, kwargs, 2, "destination"), 1)]
        out: list[int | None] = [None] * ndim
        for s, d in zip(src, dst, strict=True):
            out[d] = s
        rest = iter(d for d in range(ndim) if d not in src)
        return [next(rest) if v is None else v for v in out]
    elif op == "t":
        return perm
    else:  # transpose, swapaxes, swapdims
        a = int(_arg(args, kwargs, 1, "dim0")) % ndim
        b = int(_arg(args, kwargs, 2, "dim1")) % ndim
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def _reshaped(f: Field, a: tuple[int, ...], b: tuple[int, ...]) -> Field | None:
    """The field after a reshape from shape `a` to shape `b` (view, flatten, unflatten, squeeze).

    In row-major order an axis is known by its element stride: an input axis whose stride and
    size reappear is kept, one spread over several output axes (tokens back to rows and columns)
    is split, one inside a larger output axis with only other positions (or size-1 axes) is merged
    into tokens. Positions merged with channels leave no map (None).
    """

    def strides(shape: tuple[int, ...]) -> list[int]:
        st = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            st[i] = st[i + 1] * shape[i + 1]
        return st

    sa, sb = strides(a), strides(b)
    axes = f.axes(len(a))
    if all(a[d] == 1 for d in axes):  # a 1x1 map: no positions to follow
        return None
    new: dict[int, list[int]] = {}
    for d in sorted(set(axes)):
        count = axes.count(d)
        lo, hi = sa[d], sa[d] * a[d]  # the strides this input axis spans
        if a[d] == 1:
            raise TypeError("a spatial axis of size 1 among larger ones")
        over = [j for j in range(len(b)) if b[j] > 1 and sb[j] < hi and sb[j] * b[j] > lo]
        if len(over) == 1 and sb[over[0]] <= lo and sb[over[0]] * b[over[0]] >= hi:
            j = over[0]
            others = [e for e in range(len(a)) if a[e] > 1 and sa[e] < sb[j] * b[j] and sa[e] * a[e] > sb[j]]
            if any(e not in axes for e in others):
                return None
            new[d] = [j] * count
        elif len(over) == count and sb[over[-1]] == lo and sb[over[0]] * b[over[0]] == hi:
            new[d] = over  # merged axes split back, in order
        else:
            raise TypeError(f"reshape {a} -> {b} splits a spatial axis")
    seen: dict[int, int] = {}
    dims = []
    for d in axes:
        dims.append(new[d][seen.get(d, 0)])
        seen[d] = seen.get(d, 0) + 1
    return f.moved(tuple(dims))


def _channel_parts(args: tuple, kwargs: dict) -> tuple[int, ...] | None:
    """The channels of each input of a torch.cat along the channel axis (dim 1 of N, C, H, W), so
    that a concatenation row shows all its inputs (64+128+32+32), not only the first one's."""
    tensors = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not isinstance(tensors, list | tuple) or len(tensors) < 2:
        return None
    shapes = [tuple(t.shape) for t in tensors if isinstance(t, torch.Tensor)]
    if len(shapes) != len(tensors) or any(len(s) < 2 for s in shapes):
        return None
    if dim not in (1, 1 - len(shapes[0])):  # only the channel axis is a "parts" concatenation
        return None
    return tuple(int(s[1]) for s in shapes)


def profile(
    model_or_name: nn.Module | str,
    input_size: Sequence[int] | None = None,
    **model_kwargs: Any,
) -> Profile:
    """The per-layer table of a model: shapes, parameters, MACs, memory, receptive fields.

    Args:
        model_or_name: a registered name (built on the meta device with `model_kwargs`) or any
            `nn.Module` taking one (N, *input_size) tensor.
        input_size: (C, H, W) of one sample; defaults to the registry's input size for a name
            (`model_info(name).input_size`), or (in_chans, 224, 224) for a module.
        **model_kwargs: options for `create_model`, e.g. ``variant="v1"``, ``num_classes=10``.

    Raises:
        ValueError: the input does not fit the model; the message names the layer where the
            shape collapses and the size the model expects.
    """
    from cnnzoo.registry import create_model, is_model, model_info

    if isinstance(model_or_name, str):
        name = model_or_name
        info = model_info(name)
        size = _resolve_input_size(input_size, info.input_size)
        if len(size) != len(info.input_size):
            example = "x".join(map(str, info.input_size))
            raise ValueError(f"{name} takes inputs of shape {example} (C, H, W), not {input_size!r}")
        kwargs = dict(model_kwargs)
        if "in_chans" not in kwargs and input_size is not None and size[0] != info.input_size[0]:
            kwargs["in_chans"] = size[0]
        # A net whose head is tied to one input size (LeNet-5's flatten) is built for the size
        # asked for, as for the channels: `cnnzoo summary lenet5 --input 1x32x32` builds it for 32x32.
        square = len(size) == 3 and size[1] == size[2] and tuple(size[1:]) != tuple(info.input_size[1:])
        if "img_size" not in kwargs and input_size is not None and square and _fixed_size(name):
            kwargs["img_size"] = size[1]

        def build(device: str) -> nn.Module:
            with torch.device(device):
                return create_model(name, **kwargs)

        try:
            return _run(build("meta"), name, size, "meta")
        except _DoesNotFit as e:
            raise ValueError(str(e)) from e.__cause__
        except (NotImplementedError, RuntimeError):
            # Data-dependent control flow cannot run without data: run it for real.
            try:
                return _run(build("cpu"), name, size, "cpu")
            except _DoesNotFit as e:
                raise ValueError(str(e)) from e.__cause__
    if not isinstance(model_or_name, nn.Module):
        raise TypeError(f"profile() takes a model name or an nn.Module, got {type(model_or_name).__name__}")
    if model_kwargs:
        raise TypeError(f"model options {sorted(model_kwargs)} only apply to a registered model name")
    model = model_or_name
    name = getattr(model, "model_name", type(model).__name__)
    default = model_info(name).input_size if is_model(name) else (getattr(model, "in_chans", 3), 224, 224)
    size = _resolve_input_size(input_size, default)
    first = next(model.parameters(), None)
    device = str(first.device) if first is not None else "cpu"
    try:
        return _run(model, name, size, device)
    except _DoesNotFit as e:
        raise ValueError(str(e)) from e.__cause__
    except (NotImplementedError, RuntimeError) as e:
        if device != "meta":
            raise
        raise RuntimeError(f"{name} cannot run on the meta device ({e}); profile a copy on the CPU") from e


def _expected(model: nn.Module, name: str) -> str:
    from cnnzoo.registry import is_model, model_info

    fixed = getattr(model, "fixed_input_size", None)
    if fixed:
        return f"; {name} expects H = W = {fixed}"
    low = getattr(model, "min_input_size", None)
    if low is None and is_model(name):
        low = model_info(name).min_input_size
    return f"; {name} expects H, W >= {low}" if low and low > 1 else ""


def _run(model: nn.Module, name: str, size: tuple[int, ...], device: str) -> Profile:
    first = next(model.parameters(), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.zeros((1, *size), device=device, dtype=dtype)
    check = getattr(model, "check_input", None)
    check_error: ValueError | None = None
    if callable(check):
        try:
            check(x)
        except ValueError as e:
            check_error = e
    was_training = model.training
    model.eval()
    if check_error is not None:  # let the shape collapse where it does, to name that layer
        model.check_input = lambda x: None  # type: ignore[method-assign]
    tracer = _Tracer(model)
    setattr(x, _FIELD, Field.identity(len(size) - 1))
    try:
        with torch.no_grad(), tracer, _CostMode(tracer):
            model(x)
    except (RuntimeError, ValueError) as e:
        if isinstance(e, RuntimeError) and device == "meta" and not _SIZE_ERRORS.search(str(e)):
            raise
        raise _DoesNotFit(_failure_message(model, name, size, tracer, e, check_error)) from e
    finally:
        tracer.remove_hooks()
        if check_error is not None:
            del model.check_input
        model.train(was_training)
    if check_error is not None:
        raise _DoesNotFit(str(check_error)) from check_error
    rows = tracer.rows
    if tracer.unattributed != [0, 0]:
        rows.append(
            Layer(
                "(unattributed)",
                "other",
                None,
                None,
                macs=tracer.unattributed[0],
                ops=tracer.unattributed[1],
                elementwise=True,
            )
        )
    return Profile(
        model_name=name,
        input_size=size,
        layers=rows,
        num_parameters=sum(p.numel() for p in model.parameters()),
        device=device,
        module_kinds=tracer.kinds,
        notes=tracer.notes,
    )


def _failure_message(
    model: nn.Module,
    name: str,
    size: tuple[int, ...],
    tracer: _Tracer,
    error: Exception,
    check_error: ValueError | None,
) -> str:
    size_s = "x".join(map(str, size))
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = tracer.location()
    if where is None:
        return f"{name} cannot take input {size_s}: {reason}{_expected(model, name)}"
    layer, kind, shape = where
    got = f" on its input {'x'.join(map(str, shape))}" if shape else ""
    head = f"{check_error}; " if check_error is not None else f"{name} cannot take input {size_s}: "
    return f"{head}the shape collapses at layer {layer} ({kind}){got}: {reason}" + (
        "" if check_error is not None else _expected(model, name)
    )
