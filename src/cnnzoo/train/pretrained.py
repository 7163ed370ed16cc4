"""`--pretrained imagenet`: moved to `cnnzoo.pretrained`, beside `cnnzoo.weights`; kept importable here."""

from cnnzoo.pretrained import PretrainedUnavailable, imagenet_url, imagenet_weights

__all__ = ["PretrainedUnavailable", "imagenet_url", "imagenet_weights"]
