"""The training loop: one `Trainer` for one process or many (DDP), resumable bit for bit.

    result = cnnzoo.train.train(TrainConfig(model="lenet5", data="fashion-mnist", epochs=4))
    result["test_top1"]   # a fraction in [0, 1]

A run directory holds `config.json`, `metrics.jsonl` (one row per epoch), `final.json`,
`model.safetensors` (the final weights, with the run's config in the header), `curves.png`,
`checkpoints/` (see checkpoint.py) and `tb/` when TensorBoard is installed.

Data come from `cnnzoo.data.make_loaders` unless a `data` callable with the same signature, or a
ready `(train_loader, test_loader, info)` tuple, is passed.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.train import distributed
from cnnzoo.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, write_json_atomic
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.optim import LRSchedule, build_optimizer, head_parameter_names
from cnnzoo.train.progress import ProgressBar

__all__ = ["NonFiniteLossError", "Trainer", "TrainingError", "train"]

Loaders = tuple[Any, Any, Any]


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to change."""


class NonFiniteLossError(TrainingError):
    pass


AUX_LOSS_WEIGHT = 0.3


def info_get(info: Any, key: str, default: Any = None) -> Any:
    """A field of the data package's info (a dataclass or a dict)."""
    if isinstance(info, dict):
        return info.get(key, default)
    return getattr(info, key, default)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def default_out(config: TrainConfig) -> Path:
    """runs/MODEL-DATA, or runs/MODEL-DATA-2, -3, ... when that already holds a run."""
    data = config.data.replace("imagefolder:", "").rstrip("/").replace("/", "_").replace(":", "_")
    base = Path("runs") / f"{config.model}-{Path(data).name or 'data'}"
    path, n = base, 1
    while (path / "config.json").exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _accuracy_counts(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == y[:, None]
    return int(hit[:, 0].sum()), int(hit.any(dim=1).sum())


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class Trainer:
    """Builds data, model, optimizer and schedule from a TrainConfig, then `fit()` runs it."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        data: Callable[..., Loaders] | Loaders | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.dist = distributed.setup(config.device if config.device != "auto" else _auto_type())
        self.device = resolve_device(config.device, self.dist.local_rank)
        self._log = log if log is not None else print
        if config.workers > 0:
            torch.set_num_threads(config.workers)

        out = Path(config.out) if config.out else default_out(config)
        if self.dist.enabled:  # every rank picks the name before rank 0 creates it
            torch.distributed.barrier()
        self.out = out  # created by the first file written, so a failed start leaves nothing behind
        config.out = str(out)
        self.ckpt = latest_checkpoint(out) if config.resume else None
        if config.resume and self.ckpt is None:
            raise FileNotFoundError(f"--resume: {str(out)!r} holds no checkpoint to continue from")

        self._build_data(data)
        self._build_model()
        self.optimizer = build_optimizer(self.raw_model, config)
        self.schedule = LRSchedule(self.optimizer, config, max(1, len(self.train_loader)))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        if self.ckpt is not None:
            self._restore(self.ckpt)

    # -- building -------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self.dist.is_main:
            self._log(text)

    def _build_data(self, data: Callable[..., Loaders] | Loaders | None) -> None:
        from cnnzoo.registry import model_info

        c = self.config
        world = self.dist.world_size
        if c.batch_size % world:
            raise ValueError(f"batch_size {c.batch_size} is not divisible by the {world} processes")
        if isinstance(data, tuple):
            self.train_loader, self.test_loader, self.info = data
            self.resize_to = c.resize_to
            return
        make = data
        known_info = None
        if make is None:
            from cnnzoo.data import dataset_info, make_loaders

            make = make_loaders
            with contextlib.suppress(Exception):  # an imagefolder may only know its size once read
                known_info = dataset_info(c.data, root=c.data_root)

        minfo = model_info(c.model)
        resize = c.resize_to

        def needed(info: Any) -> int | None:
            size = info_get(info, "image_size")
            if resize is not None or size is None:
                return resize
            side = min(size)
            if c.pretrained == "imagenet" and side < minfo.input_size[1]:
                return minfo.input_size[1]  # the input the published weights were trained at
            return None if self._fits(side, int(info_get(info, "in_chans"))) else minfo.input_size[1]

        kwargs = dict(
            batch_size=c.batch_size // world,
            root=c.data_root,
            augment=c.augment,
            device=str(self.device),
            seed=c.seed,
            rank=self.dist.rank,
            world_size=world,
            download=c.download,
        )
        if c.channels_last and "channels_last" in inspect.signature(make).parameters:
            kwargs["channels_last"] = True  # the loader lays batches out as the model wants them
        if known_info is not None:
            resize = needed(known_info)
            loaders = make(c.data, resize_to=resize, **kwargs)
        else:
            loaders = make(c.data, resize_to=resize, **kwargs)
            if needed(loaders[2]) != resize:
                resize = needed(loaders[2])
                loaders = make(c.data, resize_to=resize, **kwargs)
        self.train_loader, self.test_loader, self.info = loaders
        self.resize_to = resize
        if resize is not None and c.resize_to is None:
            h, w = info_get(self.info, "image_size")
            self.log(f"images resized from {h}x{w} to {resize}x{resize} for {c.model}; --resize N to choose")

    def _fits(self, side: int, in_chans: int) -> bool:
        """Whether the model can be built for side x side inputs (LeNet-5 through img_size)."""
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
        return side >= getattr(probe, "min_input_size", 1) and fixed in (None, side)

    def input_size(self) -> tuple[int, int, int]:
        h, w = info_get(self.info, "image_size")
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
        pretrained = c.pretrained
        if pretrained == "imagenet":
            from cnnzoo.train.pretrained import imagenet_weights

            pretrained = str(imagenet_weights(c.model))
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
            if self.input_size()[0] == 1:
                # The first conv's weight is (C_out, 1, k, k); the CPU kernel returns its gradient
                # with another, equivalent stride for the size-1 dim, and DDP warns on every step
                # about a layout difference that costs nothing.
                warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.model = DistributedDataParallel(model, device_ids=ids)
        if c.compile:
            self.model = torch.compile(self.model)

    def run_metadata(self) -> dict[str, Any]:
        """What eval and predict need to rebuild the model and read its outputs."""
        mean, std = info_get(self.info, "mean"), info_get(self.info, "std")
        return {
            "cnnzoo_run": {
                "model": self.config.model,
                "model_kwargs": self.model_kwargs,
                "num_classes": int(info_get(self.info, "num_classes")),
                "in_chans": self.input_size()[0],
                "input_size": list(self.input_size()),
                "resize_to": self.resize_to,
                "data": self.config.data,
                "classes": [str(x) for x in (info_get(self.info, "classes") or [])],
                "mean": [float(v) for v in mean] if mean is not None else None,
                "std": [float(v) for v in std] if std is not None else None,
            }
        }

    # -- resume ---------------------------------------------------------------------------------
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
        self.schedule.load_state_dict(state["schedule"])
        self.start_epoch = int(state["epoch"])
        self.history = list(state.get("history", []))
        self.log(f"resumed from {path} at epoch {self.start_epoch}")

    # -- the loop -------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.config.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

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
        bar = ProgressBar(total, desc=f"epoch {epoch + 1}/{c.epochs}", enabled=self._progress())
        loss_sum, n, top1, top5 = 0.0, 0, 0, 0
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.train_loader):
            x, y = self._prepare(x, y)
            with self._autocast():
                logits = self.model(x)
                aux: list[torch.Tensor] = []
                if isinstance(logits, tuple | list):  # auxiliary heads (GoogLeNet): main output first
                    logits, aux = logits[0], [a for a in logits[1:] if a is not None]
                loss = self.criterion(logits.float(), y)
                # Szegedy et al. 2014, sec. 5: each auxiliary classifier's loss is added with weight 0.3.
                for a in aux:
                    loss = loss + AUX_LOSS_WEIGHT * self.criterion(a.float(), y)
            value = loss.item()
            if self.dist.enabled:
                value = distributed.all_reduce_sum([value], self.device)[0] / self.dist.world_size
            if not math.isfinite(value):
                bar.close()
                lr = self.schedule.lr
                raise NonFiniteLossError(
                    f"the training loss became {value} at epoch {epoch + 1}, step {step + 1} of {total} "
                    f"(lr {lr:.4g}); lower the learning rate (e.g. --lr {c.lr / 10:g}) or add --warmup 1"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            b = y.shape[0]
            loss_sum += value * b
            n += b
            h1, h5 = _accuracy_counts(logits.detach(), y)
            top1, top5 = top1 + h1, top5 + h5
            bar.update(1, loss=value, lr=self.schedule.lr)
        bar.close()
        seconds = time.perf_counter() - start
        loss_sum, n, top1, top5 = distributed.all_reduce_sum([loss_sum, n, top1, top5], self.device)
        n = max(n, 1)
        return {
            "train_loss": loss_sum / n,
            "train_top1": top1 / n,
            "train_top5": top5 / n,
            "train_seconds": seconds,
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        loss_sum, n, top1, top5 = 0.0, 0, 0, 0
        for x, y in self.test_loader:
            x, y = self._prepare(x, y)
            with self._autocast():
                logits = self.raw_model(x)  # DDP's forward would sync buffers for nothing
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
            n += y.shape[0]
            h1, h5 = _accuracy_counts(logits, y)
            top1, top5 = top1 + h1, top5 + h5
        loss_sum, n, top1, top5 = distributed.all_reduce_sum([loss_sum, n, top1, top5], self.device)
        n = max(n, 1)
        return {"test_loss": loss_sum / n, "test_top1": top1 / n, "test_top5": top5 / n}

    def _progress(self) -> bool | None:
        return False if not self.dist.is_main else self.config.progress

    def fit(self) -> dict[str, Any]:
        c = self.config
        try:
            if self.dist.is_main:
                self._write_start()
            writer = self._tensorboard()
            for epoch in range(self.start_epoch, c.epochs):
                t0 = time.perf_counter()
                row: dict[str, Any] = {"epoch": epoch + 1}
                row.update(self.train_epoch(epoch))
                row["lr"] = self.schedule.lr
                row.update(self.evaluate())
                row["seconds"] = time.perf_counter() - t0
                self.schedule.epoch_end(row["test_loss"])
                self.history.append(row)
                if self.dist.is_main:
                    self._write_metrics()
                    if writer is not None:
                        for k, v in row.items():
                            if k != "epoch":
                                writer.add_scalar(k, v, epoch + 1)
                    if (epoch + 1) % c.checkpoint_every == 0 or epoch + 1 == c.epochs:
                        self.save_checkpoint(epoch + 1)
                self.log(
                    f"epoch {epoch + 1}/{c.epochs}  train loss {row['train_loss']:.4f} "
                    f"top-1 {100 * row['train_top1']:.2f}%  test loss {row['test_loss']:.4f} "
                    f"top-1 {100 * row['test_top1']:.2f}% top-5 {100 * row['test_top5']:.2f}%  "
                    f"lr {row['lr']:.3g}  {row['train_seconds']:.1f}s"
                )
            if writer is not None:
                writer.close()
            final = self._final()
            if self.dist.enabled:
                torch.distributed.barrier()
            return final
        finally:
            distributed.cleanup(self.dist)

    # -- files ----------------------------------------------------------------------------------
    def _write_start(self) -> None:
        write_json_atomic(self.out / "config.json", {**self.config.to_dict(), **self.run_metadata()})
        if self.config.summary and self.start_epoch == 0:
            from cnnzoo.analysis import profile

            try:
                self.log(profile(self.raw_model, self.input_size()).table())
            except Exception as e:  # the summary is a courtesy; never stop a run for it
                self.log(f"(no model summary: {type(e).__name__}: {e})")

    def _write_metrics(self) -> None:
        # Rewritten whole (atomically) so that a resumed run never duplicates or loses a row.
        path = self.out / "metrics.jsonl"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        os.replace(tmp, path)

    def save_checkpoint(self, epoch: int) -> Path:
        state = {
            "epoch": epoch,
            "step": self.schedule.step_count,
            "schedule": self.schedule.state_dict(),
            "history": self.history,
            "config": self.config.to_dict(),
        }
        return save_checkpoint(
            self.out,
            model=self.raw_model,
            optimizer=self.optimizer,
            state=state,
            metadata=self.run_metadata(),
        )

    def _tensorboard(self) -> Any:
        if not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out / "tb"))

    def _final(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        final: dict[str, Any] = {
            "model": self.config.model,
            "data": self.config.data,
            "epochs": len(self.history),
            "out": str(self.out),
            "world_size": self.dist.world_size,
        }
        for k in ("test_top1", "test_top5", "test_loss", "train_top1", "train_top5", "train_loss"):
            if k in last:
                final[k] = last[k]
        if self.history:
            final["best_test_top1"] = max(r["test_top1"] for r in self.history)
            final["train_seconds"] = sum(r["train_seconds"] for r in self.history)
            final["seconds"] = sum(r["seconds"] for r in self.history)
        final["params"] = sum(p.numel() for p in self.raw_model.parameters())
        if self.dist.is_main:
            from cnnzoo.weights import save_weights

            save_weights(self.raw_model, self.out / "model.safetensors", metadata=self.run_metadata())
            write_json_atomic(self.out / "final.json", final)
            from cnnzoo.train.plots import have_matplotlib, plot_curves

            if self.history and have_matplotlib():
                plot_curves(
                    self.history, self.out / "curves.png", title=f"{self.config.model} on {self.config.data}"
                )
        return final


def _auto_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def train(
    config: TrainConfig,
    *,
    data: Callable[..., Loaders] | Loaders | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `config` and return the final metrics (also in `OUT/final.json`)."""
    return Trainer(config, data=data, log=log).fit()
