"""Training, evaluation and fine-tuning of any zoo model (`cnnzoo train`, `cnnzoo eval`, `cnnzoo predict`).

>>> from cnnzoo.train import resolve_config, train
>>> result = train(resolve_config("lenet-fast", model="lenet5", data="fashion-mnist"))  # doctest: +SKIP
>>> result["test_top1"]  # doctest: +SKIP
0.90...

`TrainConfig` holds a run's settings; `RECIPES` the lectures' hyper-parameters by name;
`Trainer` the loop (one process, or DistributedDataParallel under torchrun); checkpoints are
safetensors + JSON, written atomically, and `resume=True` continues bit for bit on CPU.
"""

from cnnzoo.pretrained import PretrainedUnavailable, imagenet_weights
from cnnzoo.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from cnnzoo.train.config import TrainConfig, resolve_config
from cnnzoo.train.evaluate import LoadedModel, evaluate, load_model, predict
from cnnzoo.train.recipes import RECIPES, Recipe, UnknownRecipeError, default_recipe
from cnnzoo.train.tasks import ClassificationTask, Task
from cnnzoo.train.trainer import NonFiniteLossError, ResumeError, Trainer, TrainingError, train

__all__ = [
    "RECIPES",
    "ClassificationTask",
    "LoadedModel",
    "NonFiniteLossError",
    "PretrainedUnavailable",
    "Recipe",
    "ResumeError",
    "Task",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "UnknownRecipeError",
    "default_recipe",
    "evaluate",
    "imagenet_weights",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model",
    "predict",
    "resolve_config",
    "save_checkpoint",
    "train",
]
