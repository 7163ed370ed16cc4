"""What a training run is: one dataclass of every setting, resolved from defaults, a recipe
(`cnnzoo.train.recipes`) and the user's explicit values, which always win (`resolve_config`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from cnnzoo.words import plural

__all__ = ["TrainConfig", "resolve_config"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "plateau", "cosine", "onecycle", "constant")


@dataclass
class TrainConfig:
    """Everything that determines a run; saved to `OUT/config.json` and into every checkpoint.

    `batch_size` is the global batch: under DDP each of the `world_size` processes takes
    `batch_size // world_size` samples per step, so one process and N processes see the same
    batches.
    """

    model: str = ""
    data: str = ""
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of the run
    gamma: float = 0.1  # step and plateau: lr factor
    patience: int = 3  # plateau: evaluations without a better validation metric before lr *= gamma
    warmup: float = 0.0  # epochs of linear warm-up (fractional allowed)
    pct_start: float = 0.25  # onecycle: fraction of the run spent rising to the peak lr
    label_smoothing: float = 0.0
    augment: str | None = None  # None, "crop-flip" or "flip" (see cnnzoo.data)
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    out: str = ""  # run directory; "" picks runs/MODEL-DATA (numbered when taken)
    resume: bool = False  # continue from OUT's latest checkpoint
    overwrite: bool = False  # replace the run OUT holds
    val_fraction: float = 0.1  # of train, held out for validation (model selection, plateau); 0: none
    eval_every: int = 1  # epochs between validations (the last epoch is always validated)
    test_curve: bool = False  # also evaluate test every epoch, for a curve only (never for a choice)
    pretrained: str | None = None  # a weights file, or "imagenet" (torchvision's published weights)
    freeze_backbone: bool = False  # train the classifier only
    backbone_lr_mult: float = 1.0  # discriminative lr: the backbone trains at lr * mult
    resize_to: int | None = None  # side the images are resized to; None: only when the model needs it
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"act": "relu"}
    recipe: str | None = None
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    shard_streams: int | None = None  # shards:DIR: parallel shard streams; None: one per process
    workers: int | None = None  # DataLoader processes of a streamed image folder; None: min(4, cores)
    memory_budget: str = "auto"  # image folders decoding to more are streamed; "auto": RAM / 4; "0": always
    progress: bool | None = None  # None: a bar when stderr is a terminal
    summary: bool = True  # print the model's per-layer table first
    data_root: str | None = None
    download: bool = False
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always writes one)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        if "workers" in d and "threads" not in d:  # runs written when `workers` meant torch threads
            d["threads"] = d.pop("workers")
        kwargs = {k: v for k, v in d.items() if k in names}
        if "milestones" in kwargs:
            kwargs["milestones"] = tuple(kwargs["milestones"])
        return cls(**kwargs)

    def validate(self) -> None:
        if not self.model:
            raise ValueError("no model given; pass a name from `cnnzoo list`")
        if not self.data:
            raise ValueError("no dataset given; pass --data, e.g. --data fashion-mnist")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # Every float setting must be a finite number: nan passes no comparison, inf passes some.
        floats = ("lr", "momentum", "weight_decay", "gamma", "warmup", "pct_start", "label_smoothing")
        for name in (*floats, "backbone_lr_mult", "val_fraction"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a finite number, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.warmup < 0 or self.momentum < 0:
            raise ValueError("--weight-decay, --warmup and --momentum must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.gamma <= 1 or not 0 < self.pct_start < 1:
            raise ValueError(
                f"--gamma must be in (0, 1] and pct_start in (0, 1), got {self.gamma}, {self.pct_start}"
            )
        if not 0 <= self.val_fraction < 1:
            raise ValueError(
                f"val_fraction must be in [0, 1), got {self.val_fraction}; 0.1 holds out a tenth of train"
            )
        if self.shard_streams is not None and self.shard_streams < 1:
            raise ValueError(f"shard_streams must be >= 1, got {self.shard_streams}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        from cnnzoo.data.stream import parse_memory_budget

        parse_memory_budget(self.memory_budget)  # a bad size is refused before anything is read
        if self.backbone_lr_mult < 0:
            raise ValueError(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult}")

    def describe(self) -> str:
        """The hyper-parameters in one line, as a run prints them at its start."""
        opt = f"{self.optimizer} lr {self.lr:g}"
        if self.optimizer == "sgd":
            opt += f" momentum {self.momentum:g}" + (" nesterov" if self.nesterov else "")
        parts = [f"recipe {self.recipe or '(none)'}"]
        if self.model_kwargs:
            parts.append("model " + " ".join(f"{k}={v}" for k, v in self.model_kwargs.items()))
        parts += [
            plural(self.epochs, "epoch"),
            f"batch {self.batch_size}",
            opt,
            f"weight decay {self.weight_decay:g}",
            f"schedule {self.schedule}" + (f" warm-up {self.warmup:g}" if self.warmup else ""),
            f"augment {self.augment or 'none'}",
            f"label smoothing {self.label_smoothing:g}",
            f"validation {self.val_fraction:g} of train" if self.val_fraction else "no validation",
            f"seed {self.seed}",
        ]
        if self.backbone_lr_mult != 1.0:
            parts.append(f"backbone lr x {self.backbone_lr_mult:g}")
        if self.freeze_backbone:
            parts.append("backbone frozen")
        flags = [f for f in ("amp", "channels_last", "compile") if getattr(self, f)]
        if flags:
            parts.append(" ".join(flags))
        return ", ".join(parts)

    def __str__(self) -> str:
        return json.dumps(self.to_dict())


def resolve_config(recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig from defaults, then the recipe's values, then `overrides` (None values skipped).

    `recipe="fast"` picks the model family's time-to-accuracy recipe (`cnnzoo.train.recipes.FAST_RECIPES`);
    the config records the recipe it resolved to. `model_kwargs` in `overrides` are merged into
    the recipe's, key by key.
    """
    from cnnzoo.train.recipes import FAST, RECIPES, UnknownRecipeError

    values: dict[str, Any] = {}
    if recipe == FAST:
        from cnnzoo.train.recipes import fast_recipe

        if not overrides.get("model"):
            raise ValueError("the fast recipe depends on the model's family; pass a model name")
        recipe = fast_recipe(overrides["model"])
    if recipe is not None:
        if recipe not in RECIPES:
            choices = ", ".join([*RECIPES, FAST])
            raise UnknownRecipeError(f"unknown recipe {recipe!r}; choose from {choices}")
        values.update(RECIPES[recipe].values)
    # A recipe's architecture options (the fast LeNet-5's ReLU) hold unless the user sets the same
    # key: --model-arg drop_path_rate=0.1 adds to them, --model-arg act=tanh replaces one.
    user_kwargs = overrides.pop("model_kwargs", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if user_kwargs is not None or "model_kwargs" in values:  # a copy: the recipe's table stays as it is
        values["model_kwargs"] = {**values.get("model_kwargs", {}), **(user_kwargs or {})}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown TrainConfig fields: {', '.join(unknown)}")
    if "milestones" in values:
        values["milestones"] = tuple(values["milestones"])
    if values.get("augment") == "none":  # how the CLI switches a recipe's augmentation off
        values["augment"] = None
    return TrainConfig(recipe=recipe, **values)
