"""Data subsets and training runs shared by the experiments, on top of `cnnzoo.train.Trainer`.

The experiments compare nets by how fast they learn, so they need curves finer than one point
per epoch and runs on labelled subsets. `StepChunks` turns a loader into "epochs" of a fixed
number of steps drawn from its endless stream (the Trainer evaluates after each), and
`train_run` gives the Trainer ready-made loaders on any subset, for a registered name or any
`nn.Module`. Everything runs on the CPU so that runs are comparable and the reports' timings
mean one thing.

Every run is selected as the engine selects: on a validation set of training images that the run
does not train on (`validation_subset`), never on test. The per-chunk test accuracy is kept as
a learning curve (the engine's `test_curve`, labelled as such in the plots); the number a report
quotes as a run's test accuracy is the selected weights' (`RunResult.test_top1`).

Every test evaluation uses "precise" BatchNorm statistics (Wu & Johnson 2021, Rethinking "Batch"
in BatchNorm, arXiv:2105.07576): the population mean and variance recomputed, with the weights
being evaluated, on a few hundred training images. The running averages BatchNorm keeps
(momentum 0.1) forget their initial variance of 1 only after about a hundred steps, and these
runs are a few hundred steps long: in eval mode a depthwise conv whose outputs vary by 1e-3 is
then divided by sqrt(0.03), and MobileNet or EfficientNet score chance on the very images they
fit. Recomputing costs a few forward passes and changes nothing in training (BatchNorm trains
on batch statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from cnnzoo.experiments.runner import Context

__all__ = [
    "PRECISE_BN_NOTE",
    "Dataset",
    "RunResult",
    "StepChunks",
    "accuracy",
    "load_dataset",
    "normalize",
    "options_note",
    "predict",
    "progress_label",
    "recompute_bn_stats",
    "resolve_data",
    "stratified_subset",
    "train_run",
    "validation_subset",
]


PRECISE_BN_NOTE = (
    "Test accuracies use BatchNorm statistics recomputed on 512 training images with the weights "
    "being tested (precise BN, Wu & Johnson 2021, arXiv:2105.07576): in runs of a few hundred steps "
    "the running averages still remember their initialisation, which sends nets with depthwise "
    "convolutions to chance accuracy in eval mode."
)


def options_note(model_kwargs: dict[str, dict[str, Any]]) -> str:
    """The report's note on the non-default builder options some nets were trained with."""
    options = "; ".join(
        f"{n} " + ", ".join(f"{k}={v!r}" for k, v in kw.items()) for n, kw in model_kwargs.items()
    )
    return (
        f"Built with options: {options} (LeNet-5's 1998 sigmoids stay on their plateau for a run this "
        "short; see the activations experiment)."
    )


@dataclass
class Dataset:
    name: str
    train: tuple[torch.Tensor, torch.Tensor]  # uint8 (N, C, H, W), int64 (N,)
    test: tuple[torch.Tensor, torch.Tensor]
    info: Any  # cnnzoo.data.DatasetInfo


def resolve_data(name: str, root: str | None) -> str:
    """'auto': CIFAR-10 when its files are in the cache, else Fashion-MNIST (always fetchable)."""
    if name != "auto":
        return name
    from cnnzoo.data import dataset_info

    return "cifar10" if dataset_info("cifar10", root=root).fetched else "fashion-mnist"


def load_dataset(name: str, root: str | None = None) -> Dataset:
    """Both splits of a fetched dataset (a DatasetNotFoundError says how to fetch it)."""
    from cnnzoo.data import dataset_info, load_arrays

    train, test = load_arrays(name, "train", root), load_arrays(name, "test", root)
    info = replace(
        dataset_info(name, root=root), train_size=int(train[0].shape[0]), test_size=int(test[0].shape[0])
    )
    return Dataset(name, train, test, info)


def experiment_subsets(
    data: Any, train_size: int, test_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The stratified training and test subsets of an experiment: the training one fixed by
    `seed`, the test one by `seed + 1` (the seeds every report lists)."""
    return (
        stratified_subset(data.train[1], train_size, seed),
        stratified_subset(data.test[1], test_size, seed + 1),
    )


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """`n` indices with the classes in their overall proportions, fixed by `seed` (all of them
    when n <= 0 or n >= len(labels)). The order is stratified too: every prefix of the result is
    itself a stratified subset, so the subsets of one seed are nested."""
    g = torch.Generator().manual_seed(seed)
    total = labels.shape[0]
    if n <= 0 or n > total:
        n = total
    perm = torch.randperm(total, generator=g)
    # Rank every sample within its class in the shuffled order, then take the lowest ranks
    # first: each class contributes in proportion, and small n still covers every class.
    shuffled = labels[perm]
    rank = torch.empty(total, dtype=torch.float64)
    for c in shuffled.unique():
        where = (shuffled == c).nonzero().flatten()
        rank[where] = (torch.arange(where.numel(), dtype=torch.float64) + 0.5) / where.numel()
    order = torch.argsort(rank, stable=True)
    return perm[order[:n]]


def normalize(images: torch.Tensor, info: Any) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float, scaled to [0, 1] and normalised with the dataset's mean/std."""
    c = images.shape[1]
    mean = torch.tensor(info.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(1, c, 1, 1)
    return (images.float() / 255 - mean) / std


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits of `model` in eval mode on normalised float inputs, in batches."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Set every BatchNorm's running mean and variance to the average over `batches` (precise
    BN); the momentum and the model's train/eval mode are restored afterwards."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or not batches:
        return
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    for x in batches:
        model(x)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def bn_batches(
    x: torch.Tensor, info: Any, n: int, batch_size: int = 128, resize_to: int | None = None
) -> list[torch.Tensor]:
    """The first `n` images of a (shuffled) uint8 training subset, normalised (and resized as the
    loaders resize: bilinear, antialiased when shrinking), in batches."""
    x = normalize(x[:n], info)
    if resize_to is not None and tuple(x.shape[-2:]) != (resize_to, resize_to):
        shrink = resize_to < x.shape[-2] or resize_to < x.shape[-1]
        x = torch.nn.functional.interpolate(
            x, size=(resize_to, resize_to), mode="bilinear", align_corners=False, antialias=shrink
        )
    return [x[i : i + batch_size] for i in range(0, x.shape[0], batch_size)]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


class StepChunks:
    """A loader whose every "epoch" is the next `steps` batches of `loader`'s endless stream.

    The Trainer evaluates and logs once per epoch; chunks let it do so every few hundred
    steps, and let a 100-image subset train for as many steps as a large one. Epochs of the
    underlying loader follow one another with their own permutations (`set_epoch`).
    """

    def __init__(self, loader: Any, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.loader, self.steps = loader, steps
        self._epoch = 0
        self._it: Iterator | None = None

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        # The stream goes on where the last chunk stopped: a run is trained once, never resumed.
        pass

    def _next(self) -> Any:
        if self._it is not None:
            try:
                return next(self._it)
            except StopIteration:
                pass
        self.loader.set_epoch(self._epoch)
        self._epoch += 1
        self._it = iter(self.loader)
        return next(self._it)

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.steps):
            yield self._next()


@dataclass
class RunResult:
    name: str
    history: list[dict[str, Any]]  # the Trainer's rows (with the test curve), plus epochs_seen
    final: dict[str, Any]
    model: nn.Module
    seconds: float  # training time (evaluation excluded)
    out: str
    # `probe`'s measurements: at initialisation, then at each evaluation (one per history row).
    probes: list[Any] = field(default_factory=list)

    @property
    def test_top1(self) -> float:
        """Test top-1 of the weights selected on validation."""
        return float(self.final["test_top1"])

    @property
    def val_top1(self) -> float:
        """Validation top-1 of the selected weights: what a search may compare runs by."""
        return float(self.final["val_top1"])

    @property
    def train_top1(self) -> float:
        return float(self.history[-1]["train_top1"])


def validation_subset(
    labels: torch.Tensor, train_idx: torch.Tensor | None, n: int, seed: int
) -> torch.Tensor:
    """`n` stratified training-set indices outside `train_idx` (a run's validation images).

    When the subset is the whole training set there is no outside: `train_run` then holds out
    `split_validation`'s tenth of it instead.
    """
    pool = torch.ones(labels.shape[0], dtype=torch.bool)
    if train_idx is not None:
        pool[train_idx] = False
    candidates = pool.nonzero().flatten()
    pick = stratified_subset(labels[candidates], n, seed)
    return candidates[pick]


def progress_label(
    chunk_index: int, *, epochs: float, evals_per_epoch: int, steps: int | None, chunk: int
) -> str:
    """A run's progress after its `chunk_index`-th evaluation interval, in the settings' units:
    "step 150/300" for a run of `steps`, else "epoch 3/12" (one evaluation an epoch) or
    "epoch 2/4, evaluation 3/4" (several)."""
    if steps is not None:
        return f"step {min(chunk_index * chunk, steps):,}/{steps:,}"
    total = f"{epochs:g}"
    if evals_per_epoch <= 1:
        return f"epoch {chunk_index}/{total}"
    epoch, within = divmod(chunk_index - 1, evals_per_epoch)
    return f"epoch {epoch + 1}/{total}, evaluation {within + 1}/{evals_per_epoch}"


def train_run(
    ctx: Context,
    name: str,
    model: str | nn.Module,
    *,
    data: Dataset,
    train_idx: torch.Tensor | None = None,
    test_idx: torch.Tensor | None = None,
    epochs: float = 1.0,
    evals_per_epoch: int = 1,
    steps: int | None = None,
    evals: int | None = None,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    augment: str | None = None,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    pretrained: str | None = None,
    precise_bn: int = 512,
    val_size: int | None = None,
    resize_to: int | None = None,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    probe: Callable[[nn.Module], Any] | None = None,
) -> RunResult:
    """Train `model` (a registered name or any nn.Module) on a subset of `data` with the engine.

    Length is `epochs` passes over the training subset, evaluated `evals_per_epoch` times a
    pass, or, when `steps` is given, `steps` optimizer steps evaluated `evals` times. Each
    evaluation reads a validation set of `val_size` training images outside the subset (default
    a tenth of the subset, 100 to 2,000 images) and, for the curve only, the test subset. The
    learning rate rises linearly over the first `warmup_steps` steps. Before each evaluation the
    BatchNorm statistics are recomputed on `precise_bn` training images (0: not). `resize_to`
    resizes every image to that side (a pretrained net's input size); `normalization` is the
    (mean, std) to use instead of the dataset's (ImageNet's, for ImageNet weights). `probe`, when
    given, is called with the model before training and at each evaluation (after the BatchNorm
    statistics); what it returns is kept in `RunResult.probes`. It must leave the model as it
    found it (mode and weights) and use no random numbers, so that probing changes no result.
    """
    from cnnzoo.data import TensorLoader, split_validation
    from cnnzoo.train import Trainer, resolve_config

    probes: list[Any] = []

    class PreciseBNTrainer(Trainer):
        def fit(self) -> dict[str, Any]:
            if probe is not None:
                probes.append(probe(self.raw_model))  # at initialisation
            return super().fit()

        def evaluate(self, split: str = "val") -> dict[str, float]:
            recompute_bn_stats(self.raw_model, stats_batches)
            if probe is not None and split == "val":  # once per evaluation: val comes first
                probes.append(probe(self.raw_model))
            return super().evaluate(split)

        def epoch_label(self, epoch: int) -> str:
            # The Trainer's epochs are evaluation intervals here: count what the settings say.
            return progress_label(
                epoch, epochs=epochs, evals_per_epoch=evals_per_epoch, steps=steps, chunk=chunk_steps
            )

    x_all, y_all = data.train
    n_train = y_all.shape[0] if train_idx is None else train_idx.shape[0]
    if val_size is None:
        val_size = min(2000, max(100, round(0.1 * n_train)))
    if train_idx is None:
        train_idx = torch.arange(y_all.shape[0])
    if train_idx.shape[0] >= y_all.shape[0]:  # nothing outside the subset: hold a tenth of it out
        keep, held = split_validation(y_all[train_idx], 0.1)
        train_idx, val_idx = train_idx[keep], train_idx[held]
    else:
        val_idx = validation_subset(y_all, train_idx, val_size, seed + 2)
    x, y = x_all[train_idx], y_all[train_idx]
    vx, vy = x_all[val_idx], y_all[val_idx]
    tx, ty = data.test
    if test_idx is not None:
        tx, ty = tx[test_idx], ty[test_idx]
    n = x.shape[0]
    info = replace(data.info, train_size=n, test_size=int(tx.shape[0]))
    if normalization is not None:
        info = replace(info, mean=tuple(normalization[0]), std=tuple(normalization[1]))
    common = dict(mean=info.mean, std=info.std, device="cpu", seed=seed, resize_to=resize_to)
    # Whole batches only, so that every step sees `batch_size` samples and epochs_seen is exact.
    batch_size = min(batch_size, n)
    train_loader = TensorLoader(
        x, y, batch_size=batch_size, shuffle=True, drop_last=True, augment=augment, **common
    )
    test_loader = TensorLoader(tx, ty, batch_size=500, shuffle=False, pad_shards=False, **common)
    val_loader = TensorLoader(vx, vy, batch_size=500, shuffle=False, pad_shards=False, **common)
    per_epoch = len(train_loader)
    if steps is not None:
        chunks = max(1, evals or 1)
        chunk_steps = max(1, math.ceil(steps / chunks))
    else:
        chunks = max(1, round(epochs * evals_per_epoch))
        chunk_steps = max(1, math.ceil(per_epoch / evals_per_epoch))
    out = ctx.runs_dir(name)
    config = resolve_config(
        None,
        model=model if isinstance(model, str) else "",
        data=data.name,
        epochs=chunks,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup=warmup_steps / chunk_steps,  # the Trainer counts warm-up in its (chunk) epochs
        augment=augment,
        seed=seed,
        device="cpu",
        out=str(out),
        overwrite=True,  # the experiment's own folder; the experiment guards the user's report
        test_curve=True,  # the learning curves; selection reads validation only
        progress=False,
        summary=False,
        checkpoint_every=chunks,  # one checkpoint, at the end: the runs are short
        model_kwargs=dict(model_kwargs or {}),
        pretrained=pretrained,
        resize_to=resize_to,
    )
    stats_batches = bn_batches(x, info, precise_bn, resize_to=resize_to)
    trainer = PreciseBNTrainer(
        config,
        model=None if isinstance(model, str) else model,
        data=(StepChunks(train_loader, chunk_steps), val_loader, test_loader, info),
        log=lambda text: ctx.log(f"  [{name}] {text}"),
    )
    final = trainer.fit()
    history = [dict(row) for row in trainer.history]
    for row in history:
        row["epochs_seen"] = row["epoch"] * chunk_steps * batch_size / n
    seconds = sum(r["train_seconds"] for r in history)
    return RunResult(name, history, final, trainer.raw_model.eval(), seconds, str(out), probes)
