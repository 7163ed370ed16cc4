"""Cost of one aten operation: multiply-accumulates, and a rough count of the other operations.

Counted at the aten level (below `F.linear`, `torch.matmul`, `x @ w`, `torch.einsum`), so every
way of writing a product ends in one of five operators whose cost is written out here:

    convolution      out_elements * (C_in / groups) * prod(kernel)     (transposed: in_elements * ...)
    mm, addmm        M * K * N
    bmm, baddbmm     B * M * K * N

Biases, the additions of `addmm` and the scaling of `baddbmm` are not multiply-accumulates and
are not counted, which is also torch's `FlopCounterMode` convention (it reports 2 FLOPs per MAC).
Other matrix operators that torch's counter knows (attention kernels, scaled mm) fall back to
its formulas, halved.

The "other operations" are a documented approximation for a FLOPs figure, not an oracle: one per
output element of a pointwise operator (activations, residual adds, gates), two per element of an
inference BatchNorm (scale and shift), k - 1 comparisons per max-pooled output over a k-element
window and k operations per average-pooled one, one per input element of a reduction (mean, sum,
adaptive pooling), three per element of a softmax. Views, copies and concatenations cost nothing.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

__all__ = ["aten_costs"]

_aten = torch.ops.aten


def _numel(shape: Any) -> int:
    return math.prod(int(s) for s in shape)


def _conv_macs(args: tuple, out: torch.Tensor) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    kernel = _numel(w.shape[2:])
    if transposed:
        # Each input element is scattered through C_out / groups filters of prod(kernel) taps.
        return x.numel() * int(w.shape[1]) * kernel
    return out.numel() * int(w.shape[1]) * kernel


def _mm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    return int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1])


def _bmm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    return int(a.shape[0]) * int(a.shape[1]) * int(a.shape[2]) * int(b.shape[2])


_MAC_FORMULAS = {
    _aten.convolution: _conv_macs,
    _aten._convolution: _conv_macs,
    _aten.mm: lambda args, out: _mm_macs(args[0], args[1]),
    _aten.addmm: lambda args, out: _mm_macs(args[1], args[2]),
    _aten.bmm: lambda args, out: _bmm_macs(args[0], args[1]),
    _aten.baddbmm: lambda args, out: _bmm_macs(args[1], args[2]),
}

_BATCH_NORMS = {
    _aten.native_batch_norm,
    _aten._native_batch_norm_legit_no_training,
    _aten._native_batch_norm_legit,
    _aten.batch_norm,
}
_MAX_POOLS = {
    _aten.max_pool1d,
    _aten.max_pool2d,
    _aten.max_pool3d,
    _aten.max_pool2d_with_indices,
    _aten.max_pool3d_with_indices,
}
_AVG_POOLS = {_aten.avg_pool1d, _aten.avg_pool2d, _aten.avg_pool3d}
_REDUCTIONS = {
    _aten.mean,
    _aten.sum,
    _aten.amax,
    _aten.amin,
    _aten._adaptive_avg_pool2d,
    _aten._adaptive_avg_pool3d,
    _aten.adaptive_max_pool2d,
    _aten.adaptive_max_pool3d,
    _aten.adaptive_avg_pool1d,
    _aten.adaptive_max_pool1d,
}
_MATRIX_KERNEL = re.compile(r"attention|scaled_mm|_mm$|mm_")
_SOFTMAXES = {_aten._softmax, _aten._log_softmax, _aten.softmax, _aten.log_softmax}


def _first_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, list | tuple):
        for item in x:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _attention_macs(args: tuple) -> int:
    """A fused attention kernel's MACs from its shapes: q (..., L, E), k (..., S, E), v (..., S, Ev)
    give ... x L x S x E for Q K^T and ... x L x S x Ev for the weights times V (Vaswani et al.
    2017, eq. 1). The CPU's flash kernel has no entry in torch's counter, which left attention at
    zero when a model ran on the CPU."""
    q, k, v = args[0], args[1], args[2]
    batch = _numel(q.shape[:-2])
    length, source = int(q.shape[-2]), int(k.shape[-2])
    return batch * length * source * (int(q.shape[-1]) + int(v.shape[-1]))


_FUSED_ATTENTION = re.compile(r"_scaled_dot_product_\w*attention")


def _torch_fallback(packet: Any) -> Any:
    from torch.utils.flop_counter import flop_registry

    return flop_registry.get(packet)


def aten_costs(func: Any, args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    """(multiply-accumulates, other operations) of one aten call; see the module docstring."""
    packet = func.overloadpacket
    formula = _MAC_FORMULAS.get(packet)
    out_t = _first_tensor(out)
    if formula is not None:
        return int(formula(args, out_t)), 0
    if out_t is None:
        return 0, 0
    if packet in _BATCH_NORMS:
        return 0, 2 * out_t.numel()
    if packet in _MAX_POOLS:
        return 0, out_t.numel() * max(_numel(_as_tuple(args[1], out_t.dim() - 2)) - 1, 0)
    if packet in _AVG_POOLS:
        return 0, out_t.numel() * _numel(_as_tuple(args[1], out_t.dim() - 2))
    if packet in _REDUCTIONS:
        inp = _first_tensor(args)
        return 0, inp.numel() if inp is not None else 0
    if packet in _SOFTMAXES:
        return 0, 3 * out_t.numel()
    if torch.Tag.pointwise in func.tags:
        return 0, out_t.numel()
    if _FUSED_ATTENTION.search(str(packet)) and len(args) >= 3:
        return _attention_macs(args), 0
    # Importing torch's counter costs seconds; only its attention/scaled-mm formulas are needed.
    fallback = _torch_fallback(packet) if _MATRIX_KERNEL.search(str(packet)) else None
    if fallback is not None:  # attention and other matrix kernels torch's counter knows
        return int(fallback(*args, out_val=out, **kwargs)) // 2, 0
    return 0, 0


def _as_tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(i) for i in v)
    return v * n if len(v) == 1 else v
