"""Model families, one module each. Importing this package registers every builder."""

from cnnzoo.models import alexnet, cifar_resnet, lenet, resnet, vgg  # noqa: F401
from cnnzoo.models.base import ZooModel

__all__ = ["ZooModel"]
