"""torch.hub entry points: every registered cnnzoo model.

    model = torch.hub.load("path/to/cnnzoo", "resnet50", source="local", num_classes=10)

Each entry takes create_model's keyword arguments (num_classes, in_chans, pretrained, ...);
`pretrained=True` gives torchvision's ImageNet weights, as torchvision's own hub entries do.
"""

import functools as _functools
import os as _os
import sys as _sys

dependencies = ["torch", "torchvision", "safetensors"]

_SRC = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _os.path.isdir(_SRC) and _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

import cnnzoo as _cnnzoo  # noqa: E402


def _entry(name):
    builder = _cnnzoo.registry.get_builder(name)

    @_functools.wraps(builder)
    def entry(**kwargs):
        return _cnnzoo.create_model(name, **kwargs)

    return entry


for _name in _cnnzoo.list_models():
    globals()[_name] = _entry(_name)
