"""The training engine: one loop for every task, one process or many (DDP), resumable bit for bit.

    result = cnnzoo.train.train(TrainConfig(model="lenet5", data="fashion-mnist", epochs=4))
    result["test_top1"]   # top-1 on test of the epoch selected on validation

    result = cnnzoo.train.train(TrainConfig(data="fashion-mnist", epochs=2), model=MyNet())

What differs between tasks (classification, density counting, a user's own) is a `Task`
(tasks.py): the loss, the metrics and how an evaluation is summarised. Everything else is here:
devices, bf16 autocast, channels_last, torch.compile, DDP, the optimizer and schedule,
checkpoints, resume, logs, and the selection rule.

Selection reads validation only. After every validated epoch the task's `monitor` metric on
the validation set decides whether these weights are the best so far (written to
`model.safetensors`); the plateau schedule listens to the same metric. Test is evaluated once
at the end on the selected weights (and, for the record, on the last ones as `*_last`); with
`test_curve` a per-epoch test curve is drawn too, labelled, and never read by a choice.

A run directory holds `config.json` (what ran, resumes included), `metrics.jsonl` (one row per
epoch), `final.json`, `model.safetensors` (the selected weights, with the run's metadata in the
header), `last.safetensors`, `curves.png`, `checkpoints/` (checkpoint.py) and `tb/` when
TensorBoard is installed.

Data come from `cnnzoo.data.make_loaders` unless a `data` callable with the same signature, or a
ready `(train, val, test, info)` tuple, is passed; `val` may be None (no selection: the last
epoch is reported) and `test` may be None.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.train import distributed
from cnnzoo.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_state,
    save_checkpoint,
    write_json_atomic,
)
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.optim import LRSchedule, build_optimizer, head_parameter_names
from cnnzoo.train.progress import ProgressBar, warn_if_busy
from cnnzoo.train.tasks import ClassificationTask, Task
from cnnzoo.words import plural

__all__ = ["NonFiniteLossError", "ResumeError", "Trainer", "TrainingError", "train"]

Loaders = tuple[Any, Any, Any, Any]


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to change."""


class NonFiniteLossError(TrainingError):
    pass


class ResumeError(TrainingError):
    """A resume whose settings cannot continue the run; the message names the setting."""


# What a resume may change. Fields that fix the data stream or the parameters' meaning cannot
# change in the middle of a run; schedule fields start a new phase of the schedule at the resume
# step; the rest apply from the resume on. Every change is recorded in config.json's "resumes".
FIXED_ON_RESUME = (
    "model",
    "data",
    "batch_size",
    "optimizer",
    "seed",
    "model_kwargs",
    "val_fraction",
    "resize_to",
    "augment",
    "freeze_backbone",
    "shard_streams",
)
SCHEDULE_FIELDS = ("epochs", "lr", "schedule", "milestones", "gamma", "patience", "warmup", "pct_start")
GROUP_FIELDS = ("weight_decay", "momentum", "nesterov", "backbone_lr_mult")
RECORDED_ON_RESUME = (
    *SCHEDULE_FIELDS,
    *GROUP_FIELDS,
    "label_smoothing",
    "amp",
    "channels_last",
    "compile",
    "eval_every",
    "test_curve",
    "device",
    "workers",  # streamed and in-memory folders give the same batches: neither changes the data
    "memory_budget",
)


def refuse_changes(before: dict[str, Any], now: dict[str, Any], names: tuple[str, ...], why: str) -> None:
    """ResumeError naming the first of `names` whose value a resume would change (`why`: the reason)."""
    for name in names:
        if name in before and before[name] != now[name]:
            raise ResumeError(
                f"--resume cannot change {name} (the run used {before[name]!r}, now {now[name]!r}): "
                f"{why}; start a new run with another --out"
            )


def info_get(info: Any, key: str, default: Any = None) -> Any:
    """A field of the data package's info (a dataclass or a dict)."""
    if isinstance(info, dict):
        return info.get(key, default)
    return getattr(info, key, default)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def default_out(config: TrainConfig) -> Path:
    """runs/MODEL-DATA: the base name of a run's default folder (numbered when taken)."""
    data = Path(config.data.removeprefix("imagefolder:").rstrip("/")).name.replace(":", "_")
    return Path("runs") / f"{config.model or 'model'}-{data or 'data'}"


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple | list):
        return type(obj)(_to(o, device) for o in obj)
    return obj


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class Trainer:
    """The engine: `Trainer(config, model=..., task=..., data=...).fit()`.

    Args:
        config: every setting of the run (TrainConfig).
        model: an `nn.Module` to train, or None to build the registered `config.model` for the
            data (num_classes, in_chans and input size from the dataset).
        task: what a batch's target is, the loss and metrics; default classification.
        data: a callable with `cnnzoo.data.make_loaders`'s signature, or a ready
            `(train, val, test, info)` tuple; default `make_loaders` on `config.data`.
        log: where lines go (default: print, flushed, so a redirected stdout gets each epoch).
        run_config: what config.json records as the run's settings (default `config.to_dict()`
            and the model's metadata); counting records its own settings this way.
        metadata: the JSON header of every weights file (default: what eval/predict need).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nn.Module | None = None,
        task: Task | None = None,
        data: Callable[..., Loaders] | Loaders | None = None,
        log: Callable[[str], None] | None = None,
        run_config: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if model is not None and not config.model:
            config.model = type(model).__name__
        config.validate()
        self.config = config
        self.task = task if task is not None else ClassificationTask(label_smoothing=config.label_smoothing)
        self.dist = distributed.setup(config.device)
        self.device = resolve_device(config.device, self.dist.local_rank)
        self._log = log if log is not None else _print
        if config.threads > 0:
            torch.set_num_threads(config.threads)

        self._open_out()
        try:
            self._setup(model, data, run_config, metadata)
        except BaseException:
            self.close()  # a failed start leaves no lock, and no folder it created
            raise

    def _setup(
        self,
        model: nn.Module | None,
        data: Callable[..., Loaders] | Loaders | None,
        run_config: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        config = self.config
        self.ckpt = latest_checkpoint(self.out) if config.resume else None
        if config.resume and self.ckpt is None:
            raise FileNotFoundError(f"--resume: {str(self.out)!r} holds no checkpoint to continue from")
        self.changes: dict[str, list[Any]] = {}
        if self.ckpt is not None:
            self.changes = self._resume_changes(read_state(self.ckpt))

        self._user_model = model is not None
        self._said_empty: set[str] = set()
        self._build_data(data)
        if model is None:
            self._build_model()
        else:
            self.model_kwargs: dict[str, Any] = {}
            self._wrap_model(model)
        self._run_config = run_config
        self._metadata = metadata
        self.optimizer = build_optimizer(self.raw_model, config)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": 0, "value": None, "metrics": {}}
        self.schedule = LRSchedule(self.optimizer, config, self.steps_per_epoch)
        if self.dist.is_main:
            self._check_space()
        if self.ckpt is not None:
            self._restore(self.ckpt)

    def _check_space(self) -> None:
        """Stop before training, not at the first checkpoint, when the disk cannot hold the run."""
        from cnnzoo.atomic import ensure_free_space
        from cnnzoo.train.checkpoint import KEEP

        weights = sum(t.numel() * t.element_size() for t in self.raw_model.state_dict().values())
        slots = 2 if self.config.optimizer == "adamw" else 1  # Adam's two moments, SGD's momentum
        # model.safetensors + last.safetensors, and KEEP checkpoints plus the one being written.
        needed = weights * (2 + (KEEP + 1) * (1 + slots)) + (8 << 20)
        ensure_free_space(
            self.out, needed, what="this run's checkpoints", fix="free some space or choose another --out"
        )

    # -- the run folder -------------------------------------------------------------------------
    def _open_out(self) -> None:
        """Open (rank 0) and lock the run folder; every rank learns its path.

        A folder that holds another run needs `resume` or `overwrite`; a second live process on
        the same folder is refused at once; the default folder is numbered with an atomic create.
        """
        from cnnzoo.train.rundir import open_run_dir

        c = self.config
        self.run = None
        path = [None]
        if self.dist.is_main:
            self.run = open_run_dir(
                c.out or None, default=default_out(c), resume=c.resume, overwrite=c.overwrite
            )
            path = [str(self.run.path)]
        if self.dist.enabled:
            torch.distributed.broadcast_object_list(path, src=0)
        self.out = Path(path[0])
        c.out = str(self.out)

    def close(self) -> None:
        """Release the run folder's lock (fit() does this when it ends)."""
        if self.run is not None:
            self.run.close()

    # -- resume ---------------------------------------------------------------------------------
    def _resume_changes(self, state: dict[str, Any]) -> dict[str, list[Any]]:
        """{field: [before, now]} of what this resume changes; refuses what cannot change."""
        before = TrainConfig.from_dict(state.get("config", {})).to_dict()
        now = self.config.to_dict()
        refuse_changes(before, now, FIXED_ON_RESUME, "it fixes the data or the parameters")
        done = int(state["epoch"])
        if self.config.epochs < done:
            raise ResumeError(
                f"--resume: the run in {str(self.out)!r} already trained {plural(done, 'epoch')}, more than "
                f"--epochs {self.config.epochs}; pass --epochs N > {done} to extend it"
            )
        if self.config.epochs == done and done == int(before.get("epochs", done)):
            raise ResumeError(
                f"--resume: the run in {str(self.out)!r} finished all {plural(done, 'epoch')}; "
                f"pass --epochs N > {done} to extend it"
            )
        return {k: [before[k], now[k]] for k in RECORDED_ON_RESUME if k in before and before[k] != now[k]}

    def _restore(self, path: Path) -> None:
        from cnnzoo.weights import fit_state_dict

        weights, optim_state, state = load_checkpoint(path)
        weights = fit_state_dict(self.raw_model, weights, source=f"checkpoint {str(path)!r}")
        self.raw_model.load_state_dict(weights)
        try:
            self.optimizer.load_state_dict(optim_state)
        except (ValueError, KeyError) as e:
            raise TrainingError(
                f"checkpoint {str(path)!r} has optimizer state for another configuration ({e}); "
                "resume with the run's own settings"
            ) from e
        self.start_epoch = int(state["epoch"])
        self.history = list(state.get("history", []))
        self.resumes = list(state.get("resumes", []))
        self.best = dict(state.get("best") or self.best)
        saved = state["schedule"]
        c = self.config
        # The optimizer's groups come back with the checkpoint's lr, weight decay and momentum:
        # set what the config says now, so that a change is applied, never silently ignored.
        for g in self.optimizer.param_groups:
            g["base_lr"] = c.lr * (c.backbone_lr_mult if g.get("name") == "backbone" else 1.0)
            g["weight_decay"] = c.weight_decay
            if "momentum" in g:
                g["momentum"], g["nesterov"] = c.momentum, c.nesterov and c.momentum > 0
        if any(k in self.changes for k in SCHEDULE_FIELDS):
            # A new phase from here: the schedule runs again over the epochs that remain, peaking
            # at the (new) lr; a warm restart (Loshchilov & Hutter 2016, arXiv:1608.03983).
            step = int(state["step"])
            self.schedule = LRSchedule(self.optimizer, c, self.steps_per_epoch, start_step=step)
            if "lr" not in self.changes:  # plateau keeps the reductions it made
                self.schedule.plateau_scale = float(saved.get("plateau_scale", 1.0))
                self.schedule.best = math.inf if saved.get("best") is None else float(saved["best"])
                self.schedule.step_count = step
                self.schedule._apply()
        else:
            self.schedule = LRSchedule(
                self.optimizer, c, self.steps_per_epoch, start_step=int(saved.get("start", 0))
            )
            self.schedule.load_state_dict(saved)
        if self.changes:
            record = {
                "at_epoch": self.start_epoch,
                "changes": self.changes,
                "schedule": self.schedule.describe(),
            }
            self.resumes.append(record)
            changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in self.changes.items())
            self.log(f"resumed from {path} at epoch {self.start_epoch}; applied from here: {changed}")
            self.log(f"schedule: {self.schedule.describe()}")
        else:
            self.log(f"resumed from {path} at epoch {self.start_epoch}")

    # -- building -------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self.dist.is_main:
            self._log(text)

    def _build_data(self, data: Callable[..., Loaders] | Loaders | None) -> None:
        c = self.config
        world = self.dist.world_size
        if c.batch_size % world:
            raise ValueError(f"batch_size {c.batch_size} is not divisible by the {world} processes")
        if isinstance(data, tuple):
            if len(data) != 4:
                raise TypeError("data must be (train, val, test, info) loaders; val and test may be None")
            self.train_loader, self.val_loader, self.test_loader, self.info = data
            self.resize_to = c.resize_to
            return
        make = data
        known_info = None
        if make is None:
            from cnnzoo.data import dataset_info, make_loaders

            make = make_loaders
            with contextlib.suppress(Exception):  # an imagefolder may only know its size once read
                known_info = dataset_info(c.data, root=c.data_root)

        resize = c.resize_to
        kwargs = dict(
            batch_size=c.batch_size // world,
            root=c.data_root,
            augment=c.augment,
            device=str(self.device),
            seed=c.seed,
            rank=self.dist.rank,
            world_size=world,
            download=c.download,
            val_fraction=c.val_fraction,
        )
        params = inspect.signature(make).parameters
        if c.channels_last and "channels_last" in params:
            kwargs["channels_last"] = True  # the loader lays batches out as the model wants them
        if "val_fraction" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs.pop("val_fraction")
        # Named only: a wrapper's **kwargs may end in a loader without them. memory_budget and
        # workers choose an image folder's in-memory or streamed path; streams fix shards' batches.
        for name, value in (
            ("memory_budget", c.memory_budget),
            ("workers", c.workers),
            ("streams", c.shard_streams),
        ):
            if name in params:
                kwargs[name] = value
        if known_info is not None:
            resize = self._needed_resize(known_info)
            loaders = make(c.data, resize_to=resize, **kwargs)
        else:
            loaders = make(c.data, resize_to=resize, **kwargs)
            if self._needed_resize(loaders[-1]) != resize:
                resize = self._needed_resize(loaders[-1])
                loaders = make(c.data, resize_to=resize, **kwargs)
        if len(loaders) != 4:
            raise TypeError(
                "the data callable must return (train, val, test, info), as cnnzoo.data.make_loaders"
            )
        self.train_loader, self.val_loader, self.test_loader, self.info = loaders
        self.resize_to = resize
        if resize is not None and c.resize_to is None:
            h, w = info_get(self.info, "image_size")
            source = f"from {h}x{w}" if info_get(self.info, "uniform_size", True) else "(their sizes differ)"
            self.log(f"images resized {source} to {resize}x{resize} for {c.model}; --resize N to choose")
        if info_get(self.info, "pipeline"):
            self.log(f"data: {info_get(self.info, 'pipeline')}")

    def _needed_resize(self, info: Any) -> int | None:
        from cnnzoo.registry import model_info

        c = self.config
        size = info_get(info, "image_size")
        if c.resize_to is not None or size is None or self._user_model:
            return c.resize_to  # a user's module takes the data as it is, or as --resize says
        side = min(size)
        native = model_info(c.model).input_size[1]
        if not info_get(info, "uniform_size", True):
            return native  # a folder of mixed sizes: the model's input size, never one file's
        if c.pretrained == "imagenet" and side < native:
            return native  # the input the published weights were trained at
        square = size[0] == size[1]
        return None if self._fits(side, int(info_get(info, "in_chans")), square) else native

    def _fits(self, side: int, in_chans: int, square: bool = True) -> bool:
        """Whether the model can be built for side x side inputs (LeNet-5 through img_size); a
        model with a fixed input size (a flatten) takes only square ones."""
        from cnnzoo.registry import create_model

        kwargs = dict(self.config.model_kwargs)
        with torch.device("meta"):
            probe = create_model(self.config.model, num_classes=1, in_chans=in_chans, **kwargs)
            if getattr(probe, "fixed_input_size", None) not in (None, side) and "img_size" not in kwargs:
                try:
                    probe = create_model(
                        self.config.model, num_classes=1, in_chans=in_chans, img_size=side, **kwargs
                    )
                except (ValueError, TypeError):
                    return False
        fixed = getattr(probe, "fixed_input_size", None)
        return side >= getattr(probe, "min_input_size", 1) and (fixed is None or (fixed == side and square))

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_loader))

    def input_size(self) -> tuple[int, int, int] | None:
        size = info_get(self.info, "image_size")
        if size is None:
            return None
        h, w = size
        if self.resize_to is not None:
            h = w = self.resize_to
        return (int(info_get(self.info, "in_chans")), int(h), int(w))

    def _model_kwargs(self) -> dict[str, Any]:
        from cnnzoo.registry import create_model

        kwargs = dict(self.config.model_kwargs)
        c, h, _ = self.input_size()
        with torch.device("meta"):
            probe = create_model(self.config.model, num_classes=1, in_chans=c, **kwargs)
        # A flatten ties LeNet-5's head to one size: build it for the data's size.
        if getattr(probe, "fixed_input_size", None) not in (None, h) and "img_size" not in kwargs:
            kwargs["img_size"] = h
        return kwargs

    def _build_model(self) -> None:
        from cnnzoo.registry import create_model

        c = self.config
        self.model_kwargs = self._model_kwargs()
        # A resume has its own weights; "imagenet" is resolved by create_model (torchvision's file).
        pretrained = None if self.ckpt is not None else c.pretrained
        torch.manual_seed(c.seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = create_model(
                c.model,
                num_classes=int(info_get(self.info, "num_classes")),
                in_chans=self.input_size()[0],
                pretrained=pretrained,
                **self.model_kwargs,
            )
        for w in caught:
            self.log(f"note: {w.message}")
        self._wrap_model(model)

    def _wrap_model(self, model: nn.Module) -> None:
        c = self.config
        model.to(self.device)
        if c.channels_last:
            model.to(memory_format=torch.channels_last)
        self.raw_model = model
        if c.freeze_backbone:
            self.head_params = head_parameter_names(model)
        self.model: nn.Module = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            size = self.input_size()
            if size is not None and size[0] == 1:
                # The first conv's weight is (C_out, 1, k, k); the CPU kernel returns its gradient
                # with another, equivalent stride for the size-1 dim, and DDP warns on every step
                # about a layout difference that costs nothing.
                warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.model = DistributedDataParallel(model, device_ids=ids)
        if c.compile:
            self.model = torch.compile(self.model)

    def run_metadata(self) -> dict[str, Any]:
        """What eval and predict need to rebuild the model and read its outputs."""
        if self._metadata is not None:
            return self._metadata
        mean, std = info_get(self.info, "mean"), info_get(self.info, "std")
        size = self.input_size()
        return {
            "cnnzoo_run": {
                "model": self.config.model,
                "model_kwargs": self.model_kwargs,
                "num_classes": int(info_get(self.info, "num_classes", 0) or 0),
                "in_chans": size[0] if size else None,
                "input_size": list(size) if size else None,
                "resize_to": self.resize_to,
                "augment": self.config.augment,  # an image folder's evaluation crop follows it
                "data": self.config.data,
                "classes": [str(x) for x in (info_get(self.info, "classes") or [])],
                "mean": [float(v) for v in mean] if mean is not None else None,
                "std": [float(v) for v in std] if std is not None else None,
            }
        }

    # -- the loop -------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.config.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _prepare(self, batch: Any) -> tuple[torch.Tensor, Any]:
        x, target = batch[0], batch[1] if len(batch) == 2 else tuple(batch[1:])
        x = x.to(self.device, non_blocking=True)
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, _to(target, self.device)

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.config.freeze_backbone:
            # A frozen backbone keeps its BatchNorm statistics too: the backbone is not trained.
            heads = {n.rsplit(".", 1)[0] for n in self.head_params}
            for name, m in self.raw_model.named_modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and name not in heads:
                    m.eval()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        c = self.config
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        self._set_train_mode()
        total = len(self.train_loader)
        bar = ProgressBar(total, desc=self.epoch_label(epoch + 1), enabled=self._progress())
        sums: dict[str, float] = {}
        start = time.perf_counter()
        for step, batch in enumerate(self.train_loader):
            x, target = self._prepare(batch)
            with self._autocast():
                output = self.model(x)
                loss = self.task.loss(output, target)
            value = loss.item()
            if self.dist.enabled:
                value = distributed.all_reduce_sum([value], self.device)[0] / self.dist.world_size
            if not math.isfinite(value):
                bar.close()
                lr = self.schedule.lr
                raise NonFiniteLossError(
                    f"the training loss became {value} at epoch {epoch + 1}, step {step + 1} of {total} "
                    f"(lr {lr:.4g}); lower the learning rate (e.g. --lr {c.lr / 10:g}, also when "
                    "resuming: --resume DIR --lr ...) or add --warmup 1"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            batch_sums = self.task.train_sums(output, target)
            batch_sums["loss"] = value * batch_sums["n"]
            for k, v in batch_sums.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1, loss=value, lr=self.schedule.lr)
        bar.close()
        seconds = time.perf_counter() - start
        metrics = self.task.summarize(self._reduce(sums))
        return {**{f"train_{k}": v for k, v in metrics.items()}, "train_seconds": seconds}

    def _reduce(self, sums: dict[str, float]) -> dict[str, float]:
        # A process whose slice of an evaluation set is empty (fewer shards or images than
        # processes) has no sums at all: agree on the names first, its values are zeros.
        keys = distributed.union_of_keys(sums)
        values = [sums.get(k, 0.0) for k in keys]
        return dict(zip(keys, distributed.all_reduce_sum(values, self.device), strict=True))

    @torch.no_grad()
    def evaluate_batches(self, loader: Any) -> dict[str, float]:
        """The task's metrics over `loader` (eval mode; summed over DDP processes)."""
        self.model.eval()
        sums: dict[str, float] = {}
        for batch in loader:
            x, target = self._prepare(batch)
            with self._autocast():
                output = self.raw_model(x)  # DDP's forward would sync buffers for nothing
            for k, v in self.task.eval_sums(output, target).items():
                sums[k] = sums.get(k, 0.0) + v
        sums = self._reduce(sums)
        if not sums.get("n"):  # an empty split has no accuracy (not 0%): it has no figures at all
            return {}
        return self.task.summarize(sums)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        """The task's metrics on "val" or "test", keyed `val_*` / `test_*`."""
        loader = {"val": self.val_loader, "test": self.test_loader}[split]
        if loader is None:
            return {}
        was = self.model.training
        try:
            metrics = self.task.evaluate(self, loader, split)
        finally:
            self.model.train(was)
        if not metrics and split not in self._said_empty:
            self._said_empty.add(split)
            self.log(f"the {split} split holds no images: no {split} figures are reported")
        return {f"{split}_{k}": v for k, v in metrics.items()}

    def _progress(self) -> bool | None:
        return False if not self.dist.is_main else self.config.progress

    def _validated(self, epoch: int) -> bool:
        c = self.config
        return self.val_loader is not None and ((epoch + 1) % c.eval_every == 0 or epoch + 1 == c.epochs)

    def fit(self) -> dict[str, Any]:
        c = self.config
        monitor = f"val_{self.task.monitor}"
        try:
            if self.dist.is_main:
                self._write_start()
                # After the start's messages, so that a bad setting's error comes first and alone.
                warn_if_busy(torch.get_num_threads(), "training will run far slower than it could")
            writer = self._tensorboard()
            for epoch in range(self.start_epoch, c.epochs):
                t0 = time.perf_counter()
                row: dict[str, Any] = {"epoch": epoch + 1}
                row.update(self.train_epoch(epoch))
                row["lr"] = self.schedule.lr
                improved = False
                if self._validated(epoch):
                    row.update(self.evaluate("val"))
                    if monitor not in row:
                        raise TrainingError(f"the {self.task.name} task's validation gave no {monitor}")
                    self.schedule.epoch_end(row[monitor], self.task.mode)
                    improved = self.task.is_better(row[monitor], self.best["value"])
                    if improved:
                        val = {k: v for k, v in row.items() if k.startswith("val_")}
                        self.best = {"epoch": epoch + 1, "value": row[monitor], "metrics": val}
                if c.test_curve and self.test_loader is not None:
                    row.update(self.evaluate("test"))  # a curve for the plot; no choice reads it
                row["seconds"] = time.perf_counter() - t0
                self.history.append(row)
                if self.dist.is_main:
                    if improved:
                        self._save_weights("model.safetensors", selected=True)
                    self._write_metrics()
                    if writer is not None:
                        for k, v in row.items():
                            if k != "epoch" and isinstance(v, int | float):
                                writer.add_scalar(k, v, epoch + 1)
                    if (epoch + 1) % c.checkpoint_every == 0 or epoch + 1 == c.epochs:
                        self.save_checkpoint(epoch + 1)
                self.log(self._epoch_line(row, improved))
            if writer is not None:
                writer.close()
            final = self._final()
            if self.dist.enabled:
                torch.distributed.barrier()
            return final
        finally:
            self.close()
            if self.dist.enabled:
                # DDP's reducer holds gloo work objects with tensors; left for the interpreter's
                # exit they can be destroyed after the process group, which aborts the process
                # ("terminate called without an active exception") when the machine is busy.
                import gc

                self.model = self.raw_model
                gc.collect()
            distributed.cleanup(self.dist)

    def epoch_label(self, epoch: int) -> str:
        """How the progress bar and the epoch lines count: "epoch 3/12". A caller whose "epochs"
        are something else (the experiments' evaluation intervals) says so by overriding it."""
        return f"epoch {epoch}/{self.config.epochs}"

    def _epoch_line(self, row: dict[str, Any], improved: bool) -> str:
        def part(prefix: str) -> str:
            metrics = {k[len(prefix) + 1 :]: v for k, v in row.items() if k.startswith(f"{prefix}_")}
            metrics.pop("seconds", None)
            return self.task.format(metrics)

        text = f"{self.epoch_label(row['epoch'])}  train {part('train')}"
        if any(k.startswith("val_") for k in row):
            text += f"  val {part('val')}{' *' if improved else ''}"
        if any(k.startswith("test_") for k in row):
            text += f"  (test curve {part('test')})"
        return text + f"  lr {row['lr']:.3g}  {row['train_seconds']:.1f}s"

    # -- files ----------------------------------------------------------------------------------
    def _config_record(self) -> dict[str, Any]:
        record = dict(self._run_config) if self._run_config is not None else self.config.to_dict()
        record["out"] = str(self.out)
        for action in ("resume", "overwrite"):  # how this command opened the folder, not a setting
            record.pop(action, None)
        record.update(self.run_metadata())
        split = info_get(self.info, "val_split")
        if split:
            record["val_split"] = split
        if info_get(self.info, "pipeline"):  # an image folder: which layout, and how it was read
            record["data_source"] = info_get(self.info, "source")
            record["data_pipeline"] = info_get(self.info, "pipeline")
        if self.resumes:
            record["resumes"] = self.resumes
        return record

    def _write_start(self) -> None:
        write_json_atomic(self.out / "config.json", self._config_record())
        if self.start_epoch == 0:
            if self._run_config is None:  # a task with its own settings (counting) says them itself
                self.log(f"{self.config.model} on {self.config.data}: {self.config.describe()}")
            self.log(f"schedule: {self.schedule.describe()}; run in {self.out}")
        if self.config.summary and self.start_epoch == 0 and self.input_size() is not None:
            from cnnzoo.analysis import profile

            try:
                self.log(profile(self.raw_model, self.input_size()).table())
            except Exception as e:  # the summary is a courtesy; never stop a run for it
                self.log(f"(no model summary: {type(e).__name__}: {e})")

    def _write_metrics(self) -> None:
        from cnnzoo.atomic import atomic_write_text

        # Rewritten whole (atomically) so that a resumed run never duplicates or loses a row.
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    def _save_weights(self, name: str, *, selected: bool = False) -> Path:
        from cnnzoo.weights import save_weights

        meta = dict(self.run_metadata())
        if selected:
            meta["cnnzoo_selected"] = {"epoch": self.best["epoch"], "on": f"val_{self.task.monitor}"}
        return save_weights(self.raw_model, self.out / name, metadata=meta)

    def save_checkpoint(self, epoch: int) -> Path:
        state = {
            "epoch": epoch,
            "step": self.schedule.step_count,
            "schedule": self.schedule.state_dict(),
            "history": self.history,
            "best": self.best,
            "resumes": self.resumes,
            "config": self.config.to_dict(),
        }
        return save_checkpoint(
            self.out,
            model=self.raw_model,
            optimizer=self.optimizer,
            state=state,
            metadata=self.run_metadata(),
            run_id=self.run.run_id if self.run is not None else None,
        )

    def _tensorboard(self) -> Any:
        if not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out / "tb"))

    def _select(self) -> None:
        """Load the selected weights (written by rank 0) into the model on every process."""
        from cnnzoo.weights import read_state_dict

        if self.dist.enabled:
            torch.distributed.barrier()
        weights = read_state_dict(self.out / "model.safetensors")
        self.raw_model.load_state_dict(weights)

    def _final(self) -> dict[str, Any]:
        c = self.config
        last = self.history[-1] if self.history else {}
        final: dict[str, Any] = {
            "model": c.model,
            "data": c.data,
            "task": self.task.name,
            "epochs": len(self.history),
            "out": str(self.out),
            "world_size": self.dist.world_size,
        }
        final.update({k: v for k, v in last.items() if k.startswith("train_") and k != "train_seconds"})
        selected = self.val_loader is not None and self.best["value"] is not None
        final["selected_on"] = f"val_{self.task.monitor}" if selected else "last epoch (no validation set)"
        final["best_epoch"] = self.best["epoch"] if selected else len(self.history)
        if selected:
            final.update(self.best["metrics"])
        if self.dist.is_main:
            self._save_weights("last.safetensors")
            if not selected:
                self._save_weights("model.safetensors")
        if self.test_loader is not None:
            if selected and self.best["epoch"] != len(self.history):
                # The last weights' test score, for the record; the selected one is what we report.
                last_test = self.evaluate("test")
                final.update({f"{k}_last": v for k, v in last_test.items()})
                self._select()
                final.update(self.evaluate("test"))
            else:
                test = self.evaluate("test")
                final.update(test)
                final.update({f"{k}_last": v for k, v in test.items()})
        elif selected:
            self._select()
        if self.history:
            final["train_seconds"] = sum(r["train_seconds"] for r in self.history)
            final["seconds"] = sum(r["seconds"] for r in self.history)
        final["params"] = sum(p.numel() for p in self.raw_model.parameters())
        self.task.finish(self, final)
        if self.dist.is_main:
            write_json_atomic(self.out / "final.json", final)
            from cnnzoo.train.plots import have_matplotlib, plot_curves

            if self.history and have_matplotlib():
                plot_curves(
                    self.history,
                    self.out / "curves.png",
                    title=f"{c.model} on {c.data}",
                    selected_epoch=final["best_epoch"] if selected else None,
                )
        return final


def _print(text: str) -> None:
    print(text, flush=True)  # one line per epoch reaches a redirected stdout when it happens


def train(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    task: Task | None = None,
    data: Callable[..., Loaders] | Loaders | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `config` (or `model`, any nn.Module, with `config`'s settings) and return the final
    metrics (also in `OUT/final.json`): validation metrics of the selected epoch and test metrics
    of its weights."""
    return Trainer(config, model=model, task=task, data=data, log=log).fit()
