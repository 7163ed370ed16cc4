"""The lectures' building blocks, shared by every model family."""

from cnnzoo.layers.activations import ACTIVATIONS, Maxout, get_act, resolve_act
from cnnzoo.layers.conv_bn_act import ConvBnAct, conv1x1, conv3x3
from cnnzoo.layers.dense import DenseBlock, DenseLayer, Transition
from cnnzoo.layers.depthwise import DepthwiseSeparable, InvertedResidual, SeparableConv2d, make_divisible
from cnnzoo.layers.drop_path import DropPath, drop_path, drop_path_rates
from cnnzoo.layers.fire import Fire
from cnnzoo.layers.inception import BasicConv2d, Branch, Conv, InceptionModule, MixedBlock, Pool
from cnnzoo.layers.lrn import LocalResponseNorm, alexnet_lrn
from cnnzoo.layers.mbconv import MBConv
from cnnzoo.layers.mlpconv import MLPConv
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
from cnnzoo.layers.shuffle import ChannelShuffle, ShuffleUnitV1, ShuffleUnitV2, channel_shuffle

__all__ = [
    "ACTIVATIONS",
    "BasicBlock",
    "BasicConv2d",
    "Bottleneck",
    "Branch",
    "ChannelShuffle",
    "Conv",
    "ConvBnAct",
    "DenseBlock",
    "DenseLayer",
    "DepthwiseSeparable",
    "DropPath",
    "Fire",
    "InceptionModule",
    "InvertedResidual",
    "LocalResponseNorm",
    "MBConv",
    "MLPConv",
    "Maxout",
    "MixedBlock",
    "PadShortcut",
    "PlainBlock",
    "Pool",
    "PreActBasicBlock",
    "PreActBottleneck",
    "SeparableConv2d",
    "ShuffleUnitV1",
    "ShuffleUnitV2",
    "SqueezeExcite",
    "Transition",
    "alexnet_lrn",
    "channel_shuffle",
    "conv1x1",
    "conv3x3",
    "drop_path",
    "drop_path_rates",
    "get_act",
    "make_divisible",
    "make_shortcut",
    "resolve_act",
]
