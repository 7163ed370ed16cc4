"""What differs between kinds of training, as a small object the one training loop calls.

The engine (`cnnzoo.train.Trainer`) owns everything that holds for every task: devices, speed
flags, DDP, the optimizer and schedule, checkpoints, resume, selection on validation, logs and
files. A `Task` says what a batch's target is, the loss, the metrics and how an evaluation is
summarised (Lightning's LightningModule split the same way, minus the loop).

Metrics are accumulated as sums over batches (so that DDP can add them across processes
exactly) and turned into means by `summarize`. Every task names the validation metric that
selects the epoch (`monitor`, `mode`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from cnnzoo.train.trainer import Trainer

__all__ = ["AUX_LOSS_WEIGHT", "ClassificationTask", "Task"]

# Szegedy et al. 2014 (arXiv:1409.4842), sec. 5: each auxiliary classifier's loss is added with
# weight 0.3 during training.
AUX_LOSS_WEIGHT = 0.3


class Task:
    """The interface the engine calls. Subclasses override what differs."""

    name = "task"
    monitor = "loss"  # the validation metric that selects the epoch (and drives "plateau")
    mode = "min"  # "min" or "max": which way `monitor` improves

    def loss(self, output: Any, target: Any) -> torch.Tensor:
        """The training loss of one batch (a scalar the engine back-propagates)."""
        raise NotImplementedError

    def train_sums(self, output: Any, target: Any) -> dict[str, float]:
        """Metric sums of one training batch, with "n" its sample count (the loss is added by the engine)."""
        return {"n": float(batch_size(target))}

    def eval_sums(self, output: Any, target: Any) -> dict[str, float]:
        """Metric sums of one evaluation batch, with "n"; "loss" as a sum over samples if there is one."""
        return {"loss": float(self.loss(output, target)) * batch_size(target), "n": float(batch_size(target))}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        """Means of the sums (everything divided by "n")."""
        n = max(sums.get("n", 0.0), 1.0)
        return {k: v / n for k, v in sums.items() if k != "n"}

    def evaluate(self, trainer: Trainer, loader: Any, split: str) -> dict[str, float]:
        """The metrics of the model on one evaluation set; the default runs `eval_sums` batch by batch."""
        return trainer.evaluate_batches(loader)

    def format(self, metrics: dict[str, float]) -> str:
        """One log fragment for a set of metrics (without the split's name)."""
        return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())

    def is_better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best

    def finish(self, trainer: Trainer, final: dict[str, Any]) -> None:
        """Called once after the test evaluation, before final.json is written: add entries, write files."""


def batch_size(target: Any) -> int:
    """Samples in a batch's target (a tensor, or a tuple/list whose first item is one)."""
    while isinstance(target, tuple | list):
        target = target[0]
    return int(target.shape[0])


def _topk_hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    k = min(5, logits.shape[1])
    hit = logits.topk(k, dim=1).indices == y[:, None]
    return float(hit[:, 0].sum()), float(hit.any(dim=1).sum())


class ClassificationTask(Task):
    """Cross-entropy on logits (auxiliary heads with weight 0.3); top-1 and top-5 accuracy.

    The epoch is selected on validation top-1: the lectures' and the papers' "validation error".
    """

    name = "classification"
    monitor = "top1"
    mode = "max"

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    @staticmethod
    def _main(output: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if isinstance(output, tuple | list):  # auxiliary heads (GoogLeNet): main output first
            return output[0], [a for a in output[1:] if a is not None]
        return output, []

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        logits, aux = self._main(output)
        loss = self.criterion(logits.float(), target)
        for a in aux:
            loss = loss + AUX_LOSS_WEIGHT * self.criterion(a.float(), target)
        return loss

    def train_sums(self, output: Any, target: torch.Tensor) -> dict[str, float]:
        top1, top5 = _topk_hits(self._main(output)[0].detach(), target)
        return {"top1": top1, "top5": top5, "n": float(target.shape[0])}

    def eval_sums(self, output: Any, target: torch.Tensor) -> dict[str, float]:
        logits = self._main(output)[0].float()
        top1, top5 = _topk_hits(logits, target)
        loss = float(F.cross_entropy(logits, target, reduction="sum"))
        return {"loss": loss, "top1": top1, "top5": top5, "n": float(target.shape[0])}

    def format(self, metrics: dict[str, float]) -> str:
        parts = []
        if "loss" in metrics:
            parts.append(f"loss {metrics['loss']:.4f}")
        if "top1" in metrics:
            parts.append(f"top-1 {100 * metrics['top1']:.2f}%")
        if "top5" in metrics and "loss" not in metrics:
            parts.append(f"top-5 {100 * metrics['top5']:.2f}%")
        return " ".join(parts)
