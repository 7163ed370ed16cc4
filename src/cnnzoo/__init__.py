"""cnnzoo: every classic CNN of a university course, exact, explained and torchvision-compatible.

>>> import cnnzoo
>>> model = cnnzoo.create_model("resnet50", num_classes=10)
>>> model = cnnzoo.create_model("resnet50", pretrained=True)  # doctest: +SKIP  (torchvision's ImageNet weights)
>>> cnnzoo.list_models("vgg*")[:2]
['vgg11', 'vgg11_bn']
>>> cnnzoo.profile("alexnet_paper").total_params   # the lecture's per-layer table, exact
62378344
"""

from cnnzoo.analysis import Profile, profile
from cnnzoo.pretrained import PretrainedUnavailable
from cnnzoo.registry import (
    ModelInfo,
    UnknownModelError,
    create_model,
    get_builder,
    is_model,
    list_models,
    model_info,
    register,
)
from cnnzoo.weights import CheckpointError, load_pretrained, read_state_dict, save_weights

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ModelInfo",
    "PretrainedUnavailable",
    "Profile",
    "UnknownModelError",
    "__version__",
    "create_model",
    "get_builder",
    "is_model",
    "list_models",
    "load_pretrained",
    "model_info",
    "profile",
    "read_state_dict",
    "register",
    "save_weights",
]
