"""Key maps from other projects' checkpoint layouts to cnnzoo's (torchvision's) names.

Importing the package registers every map with `cnnzoo.weights.register_key_converter`; the
weights module imports it before converting a file, so a map works without being imported by hand.
"""

from cnnzoo.convert import timm_keys

__all__ = ["timm_keys"]
