"""Deployment: inference-time tidying, export with a check against eager, and inference paths.

>>> from cnnzoo.deploy import export, optimize_for_inference
>>> fast = optimize_for_inference(model)   # doctest: +SKIP  (BN folded, NHWC, same outputs)
>>> export(model, "model.onnx", input_size=(3, 224, 224), dynamic_batch=True)  # doctest: +SKIP

ONNX export and ONNX Runtime need the optional extra: pip install 'cnnzoo[onnx]'. Nothing here
imports onnx until it is used, so the package works without it.
"""

from cnnzoo.deploy.bench import BenchRow, bench, warm_batchnorm
from cnnzoo.deploy.export import FORMATS, ExportError, ExportResult, MissingDependency, export, load_exported
from cnnzoo.deploy.fastest import Choice, choose_fastest, run_fastest
from cnnzoo.deploy.fold import FoldReport, fold_batchnorm, optimize_for_inference, strip_training_modules

__all__ = [
    "FORMATS",
    "BenchRow",
    "Choice",
    "ExportError",
    "ExportResult",
    "FoldReport",
    "MissingDependency",
    "bench",
    "choose_fastest",
    "export",
    "fold_batchnorm",
    "load_exported",
    "optimize_for_inference",
    "run_fastest",
    "strip_training_modules",
    "warm_batchnorm",
]
