"""`cnnzoo visualize`: see inside the networks (filters, feature maps, deconvnet, attributions).

`subject` loads a model with its normalisation and finds layers by the names `cnnzoo summary`
prints; `maps` computes the pictures' tensors; `figures` draws and writes them as PNG.
"""

from cnnzoo.visualize.maps import (
    deconv_project,
    feature_maps,
    filter_images,
    gradcam,
    occlusion,
    saliency,
    tile,
    top_activations,
)
from cnnzoo.visualize.subject import Subject, find_layer, load_subject

__all__ = [
    "Subject",
    "deconv_project",
    "feature_maps",
    "filter_images",
    "find_layer",
    "gradcam",
    "load_subject",
    "occlusion",
    "saliency",
    "tile",
    "top_activations",
]
