"""The Inception module (Szegedy et al. 2014, Going Deeper with Convolutions, arXiv:1409.4842).

Four parallel branches read the same input and are concatenated along the channels: a 1x1, a 3x3
and a 5x5 convolution and a 3x3/1 max-pool, so that each module sees several receptive-field
sizes at once (the paper's Fig. 2). The course's lectures ("Inception Module", after Szegedy et al.)
compare two versions on a 28x28x256 input with 128 1x1, 192 3x3 and 96 5x5 filters:

- naive (Fig. 2a, `reduce=False`): the 3x3 and 5x5 convolutions read all 256 channels and the
  pool branch passes all 256 through, so the output has 128 + 192 + 96 + 256 = 672 channels and
  the convolutions cost 28*28*256 * (128*1 + 192*9 + 96*25) = 854M multiply-adds. The pool
  branch alone keeps the depth, so stacking naive modules can only grow it.
- with dimension reductions (Fig. 2b, `reduce=True`): 1x1 "bottleneck" convolutions (64 each in
  the lecture's example) shrink the input of the 3x3 and 5x5 and project the pooled features,
  giving 480 channels for 271M multiply-adds (the slide's six terms; see tests/test_googlenet.py
  for why the slide prints 358M).

Inception v3 and v4 (Szegedy et al. 2015, arXiv:1512.00567; 2016, arXiv:1602.07261) keep the idea
but vary the branches from block to block: factorised 5x5 (two 3x3), n x 1 and 1 x n pairs,
forks into 1x3 and 3x1 at the end of a branch, and grid reductions whose stride-2 branches run
beside a pooling. `MixedBlock` builds any such block from data: a tuple of `Branch`es, each a
chain of `Conv` and `Pool` steps with an optional `fork`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnzoo.layers.activations import get_act

__all__ = ["BasicConv2d", "Branch", "Conv", "InceptionModule", "MixedBlock", "Pool", "tf_input_transform"]

Size = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """Convolution -> BatchNorm -> activation, with torchvision's GoogLeNet names (`conv`, `bn`).

    `bn=True` is torchvision's unit: a bias-free convolution and BatchNorm with eps = 1e-3,
    TensorFlow's default, kept because torchvision's GoogLeNet weights were ported from a
    TensorFlow-trained network. `bn=False` is the 2014 paper's unit, which predates BatchNorm: a
    convolution with bias, then the activation.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: Size,
        stride: int = 1,
        padding: Size = 0,
        *,
        bn: bool = True,
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=not bn)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3) if bn else nn.Identity()
        self.act = get_act(act, out_ch)
        self.in_channels, self.out_channels = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InceptionModule(nn.Module):
    """Parallel 1x1, 3x3, 5x5 convolutions and a 3x3 max-pool, concatenated (Szegedy et al. Fig. 2).

    Branch names follow torchvision (`branch1` 1x1, `branch2` 3x3, `branch3` 5x5, `branch4`
    pool), so a torchvision checkpoint's keys land on the same tensors.

    Args:
        in_ch: input channels.
        ch1x1, ch3x3, ch5x5: filters of the three convolution branches (the paper's Table 1
            columns "#1x1", "#3x3", "#5x5").
        ch3x3_reduce, ch5x5_reduce, pool_proj: widths of the 1x1 reductions before the 3x3 and
            5x5 and of the projection after the pool ("#3x3 reduce", "#5x5 reduce",
            "pool proj"). Required with `reduce=True`, refused with `reduce=False`.
        reduce: True for the module with dimension reductions (Fig. 2b), False for the naive
            module (Fig. 2a), whose pool branch passes all `in_ch` channels through.
        branch3_kernel: kernel of the "5x5" branch. torchvision's GoogLeNet uses 3 there (a
            known slip, pytorch/vision#906, kept so its checkpoints load); the paper uses 5.
        bn: BatchNorm in every unit (torchvision) or convolutions with bias (the paper).
        act: activation by name after every convolution, reductions included (the paper: "all
            the convolutions, including those inside the Inception modules, use rectified
            linear activation").
    """

    def __init__(
        self,
        in_ch: int,
        *,
        ch1x1: int,
        ch3x3: int,
        ch5x5: int,
        ch3x3_reduce: int | None = None,
        ch5x5_reduce: int | None = None,
        pool_proj: int | None = None,
        reduce: bool = True,
        branch3_kernel: int = 5,
        bn: bool = False,
        act: str = "relu",
    ) -> None:
        super().__init__()
        reductions = {"ch3x3_reduce": ch3x3_reduce, "ch5x5_reduce": ch5x5_reduce, "pool_proj": pool_proj}
        if reduce and None in reductions.values():
            missing = ", ".join(k for k, v in reductions.items() if v is None)
            raise ValueError(f"an Inception module with reductions needs {missing}; or pass reduce=False")
        if not reduce and any(v is not None for v in reductions.values()):
            given = ", ".join(k for k, v in reductions.items() if v is not None)
            raise ValueError(f"the naive Inception module (reduce=False) has no {given}")
        if branch3_kernel % 2 == 0:
            raise ValueError(f"branch3_kernel must be odd to keep the resolution, got {branch3_kernel}")

        def unit(i: int, o: int, k: int) -> BasicConv2d:
            return BasicConv2d(i, o, k, padding=k // 2, bn=bn, act=act)

        self.reduce = reduce
        self.branch1 = unit(in_ch, ch1x1, 1)
        # ceil_mode changes nothing at stride 1; it is torchvision's (and Caffe's) setting.
        pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True)
        self.branch2: nn.Module
        self.branch3: nn.Module
        self.branch4: nn.Module
        if reduce:
            assert ch3x3_reduce is not None and ch5x5_reduce is not None and pool_proj is not None
            self.branch2 = nn.Sequential(unit(in_ch, ch3x3_reduce, 1), unit(ch3x3_reduce, ch3x3, 3))
            self.branch3 = nn.Sequential(
                unit(in_ch, ch5x5_reduce, 1), unit(ch5x5_reduce, ch5x5, branch3_kernel)
            )
            self.branch4 = nn.Sequential(pool, unit(in_ch, pool_proj, 1))
            pool_out = pool_proj
        else:
            self.branch2 = unit(in_ch, ch3x3, 3)
            self.branch3 = unit(in_ch, ch5x5, branch3_kernel)
            self.branch4 = pool
            pool_out = in_ch
        self.in_channels = in_ch
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def tf_input_transform(x: torch.Tensor) -> torch.Tensor:
    """Map ImageNet-normalised RGB input to [-1, 1], what TensorFlow-trained Inceptions expect.

    x = (img - mean) / std, so (img - 0.5) / 0.5 = x * std / 0.5 + (mean - 0.5) / 0.5. Written
    channel by channel as torchvision's GoogLeNet and Inception3 do, so the result is bit-identical.
    """
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    chans = [x[:, c : c + 1] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5 for c in range(3)]
    return torch.cat(chans, 1)


@dataclass(frozen=True)
class Conv:
    """One conv-BN-act unit of a branch; kernel and padding may be (h, w) for 1 x n and n x 1."""

    out: int
    kernel: Size
    stride: int = 1
    padding: Size = 0


@dataclass(frozen=True)
class Pool:
    """A pooling step: "max" or "avg"."""

    kind: str
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    # torchvision's Inception v3 averages over the zero padding (F.avg_pool2d's default); the
    # TensorFlow-slim Inception v4 that timm ports does not.
    count_include_pad: bool = True

    def module(self) -> nn.Module:
        if self.kind == "max":
            return nn.MaxPool2d(self.kernel, self.stride, self.padding)
        if self.kind == "avg":
            return nn.AvgPool2d(
                self.kernel, self.stride, self.padding, count_include_pad=self.count_include_pad
            )
        raise ValueError(f"a pooling step is 'max' or 'avg', got {self.kind!r}")


@dataclass(frozen=True)
class Branch:
    """One branch of a mixed block: a chain of steps, then optionally a fork.

    The fork's convolutions all read the chain's output and their outputs are concatenated
    (Inception v3's "expanded filter bank" of Fig. 7, a 1x3 beside a 3x1).
    """

    name: str
    steps: tuple[Conv | Pool, ...]
    fork: tuple[Conv, ...] = ()

    def out_channels(self, in_ch: int) -> int:
        if self.fork:
            return sum(c.out for c in self.fork)
        convs = [s for s in self.steps if isinstance(s, Conv)]
        return convs[-1].out if convs else in_ch  # a pooling branch keeps the channels

    @property
    def stride(self) -> int:
        out = 1
        for s in self.steps:
            out *= s.stride
        return out


def _unit_names(branch: Branch) -> list[str]:
    # torchvision's Inception v3 names: a lone convolution is the branch's name, a chain numbers
    # its convolutions from 1 (`branch3x3dbl_1`, `_2`, ...) and a fork letters the next number
    # (`branch3x3_2a`, `branch3x3_2b`).
    chain = sum(isinstance(s, Conv) for s in branch.steps)
    if chain + len(branch.fork) == 1:
        return [branch.name]
    names = [f"{branch.name}_{i + 1}" for i in range(chain)]
    return names + [f"{branch.name}_{chain + 1}{'abcdefgh'[i]}" for i in range(len(branch.fork))]


class MixedBlock(nn.Module):
    """Parallel branches over one input, concatenated along the channels in the spec's order.

    Every convolution is a `BasicConv2d` (bias-free conv, BatchNorm with eps 1e-3, activation)
    named after torchvision's Inception v3 (see `_unit_names`); the pooling steps hold no
    tensors, so a checkpoint's keys are the convolutions' only.

    Args:
        in_ch: input channels.
        branches: the spec, a tuple of `Branch`es.
        act: activation by name after every convolution.
    """

    def __init__(self, in_ch: int, branches: tuple[Branch, ...], *, act: str = "relu") -> None:
        super().__init__()
        strides = {b.stride for b in branches}
        if len(strides) != 1:
            raise ValueError(f"the branches of a mixed block must share one stride, got {sorted(strides)}")
        self.stride = strides.pop()
        self._plan: list[tuple[list[str], list[str]]] = []  # per branch: chain and fork module names
        for branch in branches:
            names = iter(_unit_names(branch))
            chain: list[str] = []
            c = in_ch
            for step in branch.steps:
                if isinstance(step, Conv):
                    name = next(names)
                    self.add_module(
                        name, BasicConv2d(c, step.out, step.kernel, step.stride, step.padding, act=act)
                    )
                    c = step.out
                else:
                    name = f"{branch.name}_{step.kind}pool"
                    self.add_module(name, step.module())
                chain.append(name)
            fork: list[str] = []
            for step in branch.fork:
                name = next(names)
                self.add_module(
                    name, BasicConv2d(c, step.out, step.kernel, step.stride, step.padding, act=act)
                )
                fork.append(name)
            self._plan.append((chain, fork))
        self.in_channels = in_ch
        self.out_channels = sum(b.out_channels(in_ch) for b in branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for chain, fork in self._plan:
            y = x
            for name in chain:
                y = self._modules[name](y)  # type: ignore[misc]
            outs += [self._modules[name](y) for name in fork] if fork else [y]  # type: ignore[misc]
        return torch.cat(outs, 1)
