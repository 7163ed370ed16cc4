"""Crowd counting (`cnnzoo count ...`): ShanghaiTech, exact density maps, counters, MAE/RMSE.

The lecture's assignment: "Use ResNet for crowd counting task, and report the performance on
ShanghaiTech Crowd counting dataset."

>>> from cnnzoo.counting import ShanghaiTech, density_map, create_counter
>>> ds = ShanghaiTech("data/ShanghaiTech", part="B", split="test")  # doctest: +SKIP
>>> image, points, name = ds[0]                   # uint8 3 x H x W, N x 2 (x, y) 0-based  # doctest: +SKIP
>>> density_map([[10.0, 20.0]], (64, 64), method="fixed").sum()
1.0
>>> model = create_counter("resnet50_counter", pretrained="resnet50-0676ba61.pth")  # doctest: +SKIP

See docs/counting.md for the data layout, the recipes and the published numbers.
"""

from cnnzoo.counting.density import (
    METHODS,
    DensityCache,
    adaptive_sigmas,
    density_map,
    gaussian_kernel1d,
    inside_image,
    sum_pool,
)
from cnnzoo.counting.models import (
    COUNTER_SPECS,
    CounterSpec,
    CrowdCounter,
    create_counter,
    cut_trunk,
    list_counters,
    load_counter,
)
from cnnzoo.counting.shanghaitech import (
    STANDARD_SIZES,
    AnnotationError,
    CrowdSample,
    ShanghaiTech,
    find_part,
    load_rgb,
    read_points,
)
from cnnzoo.counting.synth import render_scene, write_annotation, write_synthetic
from cnnzoo.counting.train import (
    COUNT_RECIPES,
    CountConfig,
    CountingBatches,
    evaluate_counter,
    predict_counts,
    train_counter,
)

__all__ = [
    "COUNTER_SPECS",
    "COUNT_RECIPES",
    "METHODS",
    "STANDARD_SIZES",
    "AnnotationError",
    "CountConfig",
    "CounterSpec",
    "CountingBatches",
    "CrowdCounter",
    "CrowdSample",
    "DensityCache",
    "ShanghaiTech",
    "adaptive_sigmas",
    "create_counter",
    "cut_trunk",
    "density_map",
    "evaluate_counter",
    "find_part",
    "gaussian_kernel1d",
    "inside_image",
    "list_counters",
    "load_counter",
    "load_rgb",
    "predict_counts",
    "read_points",
    "render_scene",
    "sum_pool",
    "train_counter",
    "write_annotation",
    "write_synthetic",
]
