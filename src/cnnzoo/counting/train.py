"""Training and evaluation of counters on ShanghaiTech: random crops, flips, count-preserving
scaling, a loss on density maps, model selection on validation, MAE and RMSE on full test images.

    result = train_counter(CountConfig(root="data/ShanghaiTech", part="B", model="resnet50_counter"))
    result["test_mae"], result["test_rmse"]

A run directory holds `config.json`, `metrics.jsonl` (per epoch: loss, train MAE on crops, val
MAE/RMSE, lr, seconds), `model.safetensors` (the epoch with the lowest validation MAE - the
model to use), `last.safetensors`, `checkpoints/` (atomic, resumable), `final.json`,
`test_predictions.csv` (per test image: true and estimated count, error), `curves.png` and
`test_scatter.png`.

Targets: the head-point density map (`density.py`) sum-pooled to the counter's output stride,
times `density_scale` (C-3 Framework's LOG_PARA = 100) so that the regression targets are of
order one; every count divides by it again, exactly. Crops start on multiples of the stride,
so the pooled map of a crop is a slice of the pooled map of the image and flips keep the
count; a rescaled image gets a map made afresh from its rescaled points, so the count is the
same number of heads.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnzoo.counting.density import METHODS, DensityCache, density_map, sum_pool
from cnnzoo.counting.models import COUNTER_SPECS, IMAGENET_MEAN, IMAGENET_STD, CrowdCounter, create_counter
from cnnzoo.counting.shanghaitech import ShanghaiTech, load_rgb
from cnnzoo.train.tasks import Task
from cnnzoo.words import plural

__all__ = [
    "COUNT_RECIPES",
    "CountConfig",
    "CountingBatches",
    "counting_trainer",
    "evaluate_counter",
    "iter_counts",
    "predict_counts",
    "resolve_count_config",
    "train_counter",
]


@dataclass
class CountConfig:
    """Everything that determines a counting run; saved to OUT/config.json and into each checkpoint."""

    root: str = ""
    part: str = "B"
    model: str = "resnet50_counter"
    epochs: int = 100
    batch_size: int = 6
    lr: float = 1e-5
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup: float = 0.0
    backbone_lr_mult: float = 1.0
    crop: tuple[int, int] | None = (576, 768)  # (H, W), multiples of 8; None: whole images
    scale: tuple[float, float] | None = (0.8, 1.2)  # random rescaling range; None: off
    flip: bool = True
    density: str | None = None  # "adaptive" or "fixed"; None: adaptive for A, fixed for B
    sigma: float = 4.0  # fixed kernel width (and a lone head's, for adaptive)
    k: int = 3
    beta: float = 0.3
    density_scale: float = 100.0
    val_fraction: float = 0.1
    pretrained: str | None = None  # a trunk weights file, or "imagenet"
    seed: int = 0
    device: str = "auto"
    out: str = ""
    resume: bool = False
    overwrite: bool = False  # replace the run OUT holds
    threads: int = 0  # torch threads; 0 leaves torch's default
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False
    progress: bool | None = None
    cache_dir: str | None = None  # keep the pooled density maps on disk here
    eval_every: int = 1
    checkpoint_every: int = 1
    recipe: str | None = None

    @property
    def density_method(self) -> str:
        return self.density or ("adaptive" if self.part == "A" else "fixed")

    def validate(self) -> None:
        if not self.root:
            raise ValueError(
                "no dataset root; pass --root DIR (the folder holding part_A_final/, part_B_final/)"
            )
        if self.part not in ("A", "B"):
            raise ValueError(f"part must be A or B, got {self.part!r}")
        if self.model not in COUNTER_SPECS:
            raise ValueError(
                f"unknown counter {self.model!r}; choose one of {', '.join(sorted(COUNTER_SPECS))}"
            )
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every", "k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.density_scale > 0 or not self.sigma > 0 or not self.beta > 0:
            raise ValueError("lr, density_scale, sigma and beta must be > 0")
        stride = COUNTER_SPECS[self.model].output_stride
        if self.crop is not None and (
            len(self.crop) != 2 or any(c < stride or c % stride for c in self.crop)
        ):
            raise ValueError(
                f"crop must be H x W with both multiples of the output stride {stride}, got {self.crop}"
            )
        if self.scale is not None and not (0 < self.scale[0] <= self.scale[1]):
            raise ValueError(f"--scale must be LO,HI with 0 < LO <= HI, got {self.scale}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(
                f"val_fraction must be in (0, 1), got {self.val_fraction}: the epoch is chosen on "
                "validation images held out of train, never on test"
            )
        if self.density is not None and self.density not in METHODS:
            raise ValueError(f"density must be one of {', '.join(METHODS)}, got {self.density!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop"] = list(self.crop) if self.crop else None
        d["scale"] = list(self.scale) if self.scale else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CountConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        if "workers" in d and "threads" not in d:  # runs written before `threads` had its own name
            d["threads"] = d["workers"]
        kw = {k: v for k, v in d.items() if k in names}
        for key in ("crop", "scale"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw)


# Published recipes, as CountConfig values. C-3 Framework's Res50 on Part B
# (results_reports/Res50/SHHB: config.py, setting.py; trainer.py): Adam lr 1e-5, weight decay
# 1e-4, lr x 0.995 every epoch, batch 6, 576x768 crops of the 768x1024 images, flips, fixed
# Gaussian sigma 4 (15x15 window), densities x 100, 200 epochs -> MAE 7.7, MSE 12.6.
# CSRNet (Li et al. 2018, sec. 3.2-4.1, and its train.py): SGD lr 1e-7 (the paper says 1e-6),
# momentum 0.9, weight decay 5e-4, batch 1, 400 epochs, random crops of a quarter of the image,
# adaptive kernels on Part A and sigma 15 on Part B, MSE summed over pixels, ground truth
# resized to 1/8 and multiplied by 64. Our mean-reduced loss and x100 densities need a larger
# lr than CSRNet's summed one; 1e-5 with AdamW is the C-3 setting for its CSRNet as well.
COUNT_RECIPES: dict[str, dict[str, Any]] = {
    "c3-res50": dict(
        model="resnet50_counter",
        optimizer="adamw",
        lr=1e-5,
        weight_decay=1e-4,
        batch_size=6,
        crop=(576, 768),
        epochs=200,
        density="fixed",
        sigma=4.0,
        density_scale=100.0,
        scale=None,
        schedule="cosine",
        pretrained="imagenet",
    ),
    "csrnet": dict(
        model="csrnet",
        optimizer="adamw",
        lr=1e-5,
        weight_decay=1e-4,
        batch_size=1,
        epochs=400,
        crop=None,
        density_scale=100.0,
        scale=None,
        schedule="constant",
        pretrained="imagenet",
    ),
}


def resolve_count_config(recipe: str | None = None, **overrides: Any) -> CountConfig:
    """CountConfig from defaults, then the recipe's values, then `overrides` (None values skipped)."""
    values: dict[str, Any] = {}
    if recipe is not None:
        if recipe not in COUNT_RECIPES:
            raise ValueError(f"unknown counting recipe {recipe!r}; choose from {', '.join(COUNT_RECIPES)}")
        values.update(COUNT_RECIPES[recipe])
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("crop", "scale"):  # "none" switches a recipe's crop or rescaling off
        if values.get(key) == "none":
            values[key] = None
    names = {f.name for f in dataclasses.fields(CountConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown CountConfig fields: {', '.join(unknown)}")
    return CountConfig(recipe=recipe, **values)


# -- inputs ---------------------------------------------------------------------------------------
def _normalise(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W float32, ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def _rescale(image: np.ndarray, points: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    h, w = image.shape[:2]
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    out = np.array(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    # Pixel edges map to pixel edges: x + 0.5 scales. A head that lands within half a pixel past
    # the new border is clamped onto the last pixel, so the count never changes.
    pts = (points + 0.5) * np.array([nw / w, nh / h]) - 0.5
    pts[:, 0] = np.clip(pts[:, 0], 0, nw - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, nh - 1)
    return out, pts


class CountingBatches:
    """Training batches of (images, scaled density targets at the output stride, true counts).

    Each sample: optional rescaling by a random factor in `scale` (image resampled, map rebuilt
    from the moved points), a random crop of `crop` pixels whose corner lies on the stride grid
    (an image smaller than the crop is taken whole), and a horizontal flip. Images are
    zero-padded in normalised units (i.e. with the mean colour) to whole stride cells, and the
    samples of a batch to the largest of them.

    The loader protocol of the training engine: `len()` steps, `set_epoch(e)`, iteration. Each
    sample's randomness comes from (seed, epoch, its position in the epoch's permutation), so
    the same seed and epoch give the same batches, and under DDP (`rank`, `world_size`) rank r
    takes positions r, r + world_size, ... of every global batch: the ranks' batches together
    are the single process's batch.
    """

    def __init__(
        self,
        dataset: ShanghaiTech,
        *,
        batch_size: int,
        stride: int = 8,
        crop: tuple[int, int] | None = None,
        scale: tuple[float, float] | None = None,
        flip: bool = True,
        density: dict[str, Any] | None = None,
        density_scale: float = 100.0,
        cache: DensityCache | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.dataset, self.batch_size, self.stride = dataset, batch_size, stride
        self.rank, self.world_size = rank, world_size
        self.current_epoch = 0
        self.crop, self.scale, self.flip = crop, scale, flip
        self.density = dict(density or {"method": "fixed", "sigma": 4.0})
        self.density_scale = density_scale
        self.cache = cache if cache is not None else DensityCache()
        self.seed = seed

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def pooled_density(self, index: int) -> np.ndarray:
        """The pooled (unscaled) density map of image `index`, cached."""
        ds = self.dataset
        points, size, s = ds.points(index), ds.image_size(index), self.stride
        key = DensityCache.key(points, size=size, stride=s, **self.density)
        return self.cache.get(
            key,
            lambda: sum_pool(density_map(points, size, **self.density), s),
            shape=(-(-size[0] // s), -(-size[1] // s)),
            total=float(len(points)),
        )

    def sample(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        ds, s = self.dataset, self.stride
        image, _ = load_rgb(ds.image_path(index))
        points = ds.points(index)
        factor = rng.uniform(*self.scale) if self.scale is not None else 1.0
        if factor != 1.0:
            image, points = _rescale(image, points, factor)
            pooled = sum_pool(density_map(points, image.shape[:2], **self.density), s)
        else:
            pooled = self.pooled_density(index)
        h, w = image.shape[:2]
        # The image padded to whole stride cells is what the pooled map covers; a crop larger
        # than that takes all of it (the batch pads it), rather than training on padding.
        ph, pw = pooled.shape[0] * s, pooled.shape[1] * s
        x = F.pad(_normalise(image), (0, pw - w, 0, ph - h))
        ch, cw = self.crop if self.crop is not None else (ph, pw)
        ch, cw = min(ch, ph), min(cw, pw)
        oy = s * int(rng.integers(0, (ph - ch) // s + 1))
        ox = s * int(rng.integers(0, (pw - cw) // s + 1))
        x = x[:, oy : oy + ch, ox : ox + cw]
        d = pooled[oy // s : (oy + ch) // s, ox // s : (ox + cw) // s]
        if self.flip and rng.random() < 0.5:
            x, d = x.flip(-1), d[:, ::-1]
        target = torch.from_numpy(np.ascontiguousarray(d))[None] * self.density_scale
        return x, target, len(points)

    def set_epoch(self, epoch: int) -> None:
        self.current_epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self.epoch(self.current_epoch)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
        # The last global batch is filled up with the permutation's head, so that every rank
        # has a sample in it (DDP steps together).
        short = -len(order) % self.world_size
        order = np.concatenate([order, order[:short]])
        for start in range(0, len(order), self.batch_size):
            positions = range(start + self.rank, min(start + self.batch_size, len(order)), self.world_size)
            samples = [
                self.sample(int(order[p]), np.random.default_rng([self.seed, epoch, p])) for p in positions
            ]
            h = max(x.shape[1] for x, _, _ in samples)
            w = max(x.shape[2] for x, _, _ in samples)
            s = self.stride
            xs = torch.stack([F.pad(x, (0, w - x.shape[2], 0, h - x.shape[1])) for x, _, _ in samples])
            ts = torch.stack(
                [F.pad(t, (0, w // s - t.shape[2], 0, h // s - t.shape[1])) for _, t, _ in samples]
            )
            counts = torch.tensor([c for _, t, c in samples], dtype=torch.float32)
            yield xs, ts, counts


# -- evaluation -----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_counter(
    model: CrowdCounter,
    dataset: ShanghaiTech,
    *,
    device: str | torch.device = "cpu",
    progress: bool | None = False,
    desc: str = "eval",
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, Any]:
    """MAE and RMSE of the counts on full images, batch 1, with one row per image.

    RMSE is what the crowd-counting papers call "MSE": sqrt(mean((estimate - truth)^2)). With
    `amp` the forward pass runs in bf16 autocast and the density map is summed in float32.
    """
    from cnnzoo.train.progress import ProgressBar

    dev_type = torch.device(device).type
    was = model.training
    model.eval()
    rows = []
    bar = ProgressBar(len(dataset), desc=desc, enabled=progress)
    try:
        for i in range(len(dataset)):
            image, _ = load_rgb(dataset.image_path(i))
            x = _normalise(image)[None].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
                density = model(x)
            est = float(density.float().sum(dtype=torch.float64)) / model.density_scale
            true = len(dataset.points(i))
            rows.append(
                {"image": dataset.image_path(i).name, "true": true, "estimate": est, "error": est - true}
            )
            bar.update(1)
    finally:
        bar.close()
        model.train(was)
    err = np.array([r["error"] for r in rows], dtype=np.float64)
    return {
        "images": len(rows),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mean_true": float(np.mean([r["true"] for r in rows])),
        "rows": rows,
    }


def write_rows_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Per-image rows (image, true, estimate, error) as CSV, written atomically."""
    from cnnzoo.analysis.formats import csv_cell
    from cnnzoo.data.store import atomic_write_bytes

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "true", "estimate", "error"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        row = {**r, "estimate": f"{r['estimate']:.4f}", "error": f"{r['error']:.4f}"}
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return atomic_write_bytes(Path(path), buf.getvalue().encode())


def iter_counts(
    checkpoint: str | os.PathLike,
    images: list[str | os.PathLike],
    *,
    device: str = "cpu",
    skip_unreadable: bool = False,
) -> Iterator[dict[str, Any]]:
    """`predict_counts`, one image at a time: only the current image and its map are in memory.

    `images` may hold files, folders and globs (`cnnzoo.data.decode.expand_images`); they are
    expanded, and the model loaded, before the first result. With `skip_unreadable` a file that
    cannot be decoded gives ``{"image", "error"}`` instead of raising `ImageDecodeError`.
    """
    from cnnzoo.counting.models import load_counter
    from cnnzoo.data.decode import decode_image, expand_images

    files = expand_images(images)
    model, _ = load_counter(checkpoint, device=device)

    def generate() -> Iterator[dict[str, Any]]:
        for p in files:
            try:
                # Full size, no draft: a density model counts heads at the scale it was trained on.
                pixels, mode = decode_image(p, channels=3)
            except (ValueError, FileNotFoundError) as e:
                if not skip_unreadable:
                    raise
                yield {"image": p, "error": str(e)}
                continue
            image = pixels.permute(1, 2, 0).numpy()
            with torch.no_grad():
                density = model(_normalise(image)[None].to(device))[0, 0].cpu().numpy() / model.density_scale
            yield {
                "image": p,
                "count": float(density.sum(dtype=np.float64)),
                "density": density,
                "rgb": image,
                "mode": mode,
                "model": model.name,
            }

    return generate()


def predict_counts(
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], *, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Estimated count and density map (at the output stride, in heads per cell) of each image file."""
    return list(iter_counts(checkpoint, images, device=device))


# -- training -------------------------------------------------------------------------------------
class CountingTask(Task):
    """Density counting for the training engine: pixel MSE on the scaled density maps; the crop
    MAE in training; MAE and RMSE of whole-image counts on validation and test (selected on
    validation MAE, as C-3 Framework and CSRNet do)."""

    name = "counting"
    monitor = "mae"
    mode = "min"

    def __init__(
        self, *, density_scale: float, val: ShanghaiTech, test: ShanghaiTech, train: ShanghaiTech, part: str
    ) -> None:
        self.density_scale, self.part = density_scale, part
        self.datasets = {"train": train, "val": val, "test": test}
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def loss(self, output: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(output.float(), target[0])

    def train_sums(self, output: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        density = target[0]
        est = output.detach().float().flatten(1).sum(1) / self.density_scale
        # The crop's true count is its target's sum: heads whose kernels straddle the crop edge count in part.
        crop_true = density.flatten(1).sum(1) / self.density_scale
        return {"crop_mae": float((est - crop_true).abs().sum()), "n": float(density.shape[0])}

    def evaluate(self, trainer: Any, loader: ShanghaiTech, split: str) -> dict[str, float]:
        # Every process evaluates every image (batch 1, full size): no DDP reduction needed.
        c = trainer.config
        result = evaluate_counter(
            trainer.raw_model,
            loader,
            device=trainer.device,
            amp=c.amp,
            channels_last=c.channels_last,
            progress=trainer._progress() if split == "test" else False,
            desc=split,
        )
        self.rows[split] = result["rows"]
        return {"mae": result["mae"], "rmse": result["rmse"]}

    def format(self, metrics: dict[str, float]) -> str:
        parts = []
        if "loss" in metrics:
            parts.append(f"loss {metrics['loss']:.4f}")
        if "crop_mae" in metrics:
            parts.append(f"crop MAE {metrics['crop_mae']:.2f}")
        if "mae" in metrics:
            parts.append(f"MAE {metrics['mae']:.2f} RMSE {metrics['rmse']:.2f}")
        return " ".join(parts)

    def mean_baseline(self) -> dict[str, float]:
        """MAE and RMSE on test of predicting the training images' mean count for every image."""
        train, test = self.datasets["train"], self.datasets["test"]
        mean = float(np.mean([len(train.points(i)) for i in range(len(train))]))
        err = np.array([mean - len(test.points(i)) for i in range(len(test))], dtype=np.float64)
        return {
            "train_mean_count": mean,
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
        }

    def finish(self, trainer: Any, final: dict[str, Any]) -> None:
        baseline = self.mean_baseline()
        final["part"] = self.part
        final["test_images"] = len(self.datasets["test"])
        final["mean_baseline_test_mae"] = baseline["mae"]
        final["mean_baseline_test_rmse"] = baseline["rmse"]
        final["train_mean_count"] = baseline["train_mean_count"]
        rows = self.rows.get("test")
        if not trainer.dist.is_main or rows is None:
            return
        write_rows_csv(rows, trainer.out / "test_predictions.csv")
        from cnnzoo.train.plots import have_matplotlib

        if have_matplotlib():
            from cnnzoo.counting.plots import plot_scatter

            plot_scatter(
                rows,
                trainer.out / "test_scatter.png",
                title=f"test: MAE {final['test_mae']:.2f}, RMSE {final['test_rmse']:.2f} "
                f"(predicting the mean: MAE {baseline['mae']:.2f})",
            )


# Settings that fix the data a counting run trains on: a resume cannot change them.
_FIXED_DATA = (
    "root",
    "part",
    "model",
    "crop",
    "scale",
    "flip",
    "density",
    "sigma",
    "k",
    "beta",
    "density_scale",
    "val_fraction",
)


def _train_config(config: CountConfig) -> Any:
    """The engine's TrainConfig: the optimisation, speed and run fields of a counting run."""
    from cnnzoo.train.config import TrainConfig

    return TrainConfig(
        model=config.model,
        data=f"shanghaitech-{config.part}",
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer=config.optimizer,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        schedule=config.schedule,
        warmup=config.warmup,
        backbone_lr_mult=config.backbone_lr_mult,
        amp=config.amp,
        channels_last=config.channels_last,
        compile=config.compile,
        seed=config.seed,
        device=config.device,
        out=config.out,
        resume=config.resume,
        overwrite=config.overwrite,
        threads=config.threads,
        progress=config.progress,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
        val_fraction=config.val_fraction,
        summary=False,
        recipe=config.recipe,
    )


def _check_resume(config: CountConfig) -> None:
    from cnnzoo.train.trainer import refuse_changes

    saved_path = Path(config.out) / "config.json"
    if not saved_path.is_file():
        return  # the engine says that there is no run to resume
    saved = CountConfig.from_dict(json.loads(saved_path.read_text())).to_dict()
    now = config.to_dict()
    refuse_changes(saved, now, _FIXED_DATA, "it fixes the training data")


def counting_trainer(config: CountConfig, *, log: Callable[[str], None] | None = None) -> Any:
    """The engine set up for a counting run: data, counter, task and run folder (call `.fit()`)."""
    from cnnzoo.train import distributed
    from cnnzoo.train.trainer import Trainer

    config.validate()
    if config.resume:
        _check_resume(config)
    data = dict(root=config.root, part=config.part, val_fraction=config.val_fraction)
    train_ds = ShanghaiTech(split="train", **data)
    val_ds = ShanghaiTech(split="val", **data)
    test_ds = ShanghaiTech(split="test", **data)
    density = {"method": config.density_method, "sigma": config.sigma}
    if config.density_method == "adaptive":
        density |= {"k": config.k, "beta": config.beta}
    torch.manual_seed(config.seed)
    model = create_counter(
        config.model,
        pretrained=None if config.resume else config.pretrained,  # "imagenet": the trunk's torchvision file
        density_scale=config.density_scale,
    )
    dist = distributed.setup(config.device)  # the batches shard by rank, so join before building them
    batches = CountingBatches(
        train_ds,
        batch_size=config.batch_size // dist.world_size,
        stride=model.output_stride,
        crop=config.crop,
        scale=config.scale,
        flip=config.flip,
        density=density,
        density_scale=config.density_scale,
        cache=DensityCache(config.cache_dir),
        seed=config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    meta = {"cnnzoo_counter": {**model.metadata(), "part": config.part, "density": density}}
    say = log if log is not None else _print
    if dist.is_main and not config.resume:
        say(
            f"{config.model} on ShanghaiTech Part {config.part}: {len(train_ds)} train, {len(val_ds)} val, "
            f"{len(test_ds)} test images; {config.density_method} density maps; crop {config.crop}, "
            f"scale {config.scale}, flip {config.flip}; {config.optimizer} lr {config.lr:g}, weight decay "
            f"{config.weight_decay:g}, batch {config.batch_size}, {plural(config.epochs, 'epoch')}"
            + (f", recipe {config.recipe}" if config.recipe else "")
        )
    task = CountingTask(
        density_scale=config.density_scale, train=train_ds, val=val_ds, test=test_ds, part=config.part
    )
    trainer = Trainer(
        _train_config(config),
        model=model,
        task=task,
        data=(batches, val_ds, test_ds, {"name": f"shanghaitech-{config.part}"}),
        log=say,
        run_config=config.to_dict(),
        metadata=meta,
    )
    trainer.counting_dist = dist  # joined here (the batches shard by rank): left by train_counter
    return trainer


def train_counter(config: CountConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train `config` on the engine: the epoch with the lowest validation MAE is selected, and test
    MAE/RMSE are measured once on its weights, beside the predict-the-training-mean baseline."""
    from cnnzoo.train import distributed

    trainer = counting_trainer(config, log=log)
    try:
        return trainer.fit()
    finally:
        distributed.cleanup(trainer.counting_dist)


def _print(text: str) -> None:
    print(text, flush=True)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    from cnnzoo.data.store import atomic_write_bytes

    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
