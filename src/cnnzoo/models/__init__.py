"""Model families, one module each. Importing this package registers every builder."""

from cnnzoo.models import (  # noqa: F401
    alexnet,
    cifar_resnet,
    densenet,
    efficientnet,
    googlenet,
    inception,
    lenet,
    mobilenet,
    nas,
    nin,
    resnet,
    shufflenet,
    squeezenet,
    vgg,
    xception,
)
from cnnzoo.models.base import ZooModel

__all__ = ["ZooModel"]
