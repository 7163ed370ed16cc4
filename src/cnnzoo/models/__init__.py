"""Model families, one module each. Importing this package registers every builder."""

from cnnzoo.models import resnet  # noqa: F401
from cnnzoo.models.base import ZooModel

__all__ = ["ZooModel"]
