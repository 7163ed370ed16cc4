"""Network in Network's mlpconv layer (Lin, Chen, Yan 2013, arXiv:1312.4400, Sec. 3.1).

A convolution followed by 1x1 convolutions, each with its ReLU: at every position a small
multilayer perceptron reads the k x k patch, where a plain convolution applies one linear filter
and a nonlinearity. The paper writes it as a "cascaded cross channel parametric pooling" (the
reference Caffe models name the 1x1 layers `cccp`); it is the 1x1 convolution that GoogLeNet's
Inception module and every bottleneck after it build on.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cnnzoo.layers.activations import get_act

__all__ = ["MLPConv"]


class MLPConv(nn.Sequential):
    """k x k conv -> act -> (1x1 conv -> act) per entry of `mlp`, a Sequential of conv/act pairs.

    Args:
        in_ch: input channels.
        width: filters of the k x k convolution.
        kernel_size, stride, padding: of the k x k convolution.
        mlp: widths of the 1x1 convolutions after it (two in every network of the paper).
        act: activation by name after every convolution.
    """

    def __init__(
        self,
        in_ch: int,
        width: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        mlp: Sequence[int] = (),
        act: str = "relu",
    ) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_ch, width, kernel_size, stride, padding), get_act(act, width)]
        prev = width
        for w in mlp:
            layers += [nn.Conv2d(prev, w, 1), get_act(act, w)]
            prev = w
        super().__init__(*layers)
        self.in_channels = in_ch
        self.out_channels = prev
