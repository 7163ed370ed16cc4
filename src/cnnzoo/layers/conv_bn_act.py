"""Conv -> BatchNorm -> activation, the unit every post-2015 network is made of."""

from __future__ import annotations

from torch import nn

from cnnzoo.layers.activations import get_act

__all__ = ["ConvBnAct", "conv1x1", "conv3x3"]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding and no bias (the BatchNorm after it has one)."""
    return nn.Conv2d(
        in_ch, out_ch, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation
    )


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias: channel mixing, projection shortcuts, bottlenecks."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation, 'same' padding for odd kernels.

    A Sequential so that its state-dict keys are `0.weight`, `1.weight`, ... exactly as in
    torchvision's Conv2dNormActivation, which keeps checkpoints interchangeable.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        padding: int | None = None,
        groups: int = 1,
        act: str | None = "relu",
        bn: bool = True,
    ) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=not bn)
        ]
        if bn:
            layers.append(nn.BatchNorm2d(out_ch))
        if act is not None:
            layers.append(get_act(act, out_ch))
        super().__init__(*layers)
        self.in_channels, self.out_channels = in_ch, out_ch
