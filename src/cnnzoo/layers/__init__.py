"""The lectures' building blocks, shared by every model family."""

from cnnzoo.layers.activations import ACTIVATIONS, Maxout, get_act, resolve_act
from cnnzoo.layers.conv_bn_act import ConvBnAct, conv1x1, conv3x3
from cnnzoo.layers.drop_path import DropPath, drop_path, drop_path_rates
from cnnzoo.layers.lrn import LocalResponseNorm, alexnet_lrn
from cnnzoo.layers.residual import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PlainBlock,
    PreActBasicBlock,
    PreActBottleneck,
    make_shortcut,
)
from cnnzoo.layers.se import SqueezeExcite

__all__ = [
    "ACTIVATIONS",
    "BasicBlock",
    "Bottleneck",
    "ConvBnAct",
    "DropPath",
    "LocalResponseNorm",
    "Maxout",
    "PadShortcut",
    "PlainBlock",
    "PreActBasicBlock",
    "PreActBottleneck",
    "SqueezeExcite",
    "alexnet_lrn",
    "conv1x1",
    "conv3x3",
    "drop_path",
    "drop_path_rates",
    "get_act",
    "make_shortcut",
    "resolve_act",
]
