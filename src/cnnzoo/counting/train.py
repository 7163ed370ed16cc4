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
import time
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

__all__ = [
    "COUNT_RECIPES",
    "CountConfig",
    "CountingBatches",
    "evaluate_counter",
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
    workers: int = 0  # torch threads; 0 leaves torch's default
    progress: bool | None = None
    cache_dir: str | None = None  # keep the pooled density maps on disk here
    eval_every: int = 1
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
        for name in ("epochs", "batch_size", "eval_every", "k"):
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
            raise ValueError(f"scale must be LO,HI with 0 < LO <= HI, got {self.scale}")
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
    samples of a batch to the largest of them. The same `seed` and epoch give the same batches.
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
    ) -> None:
        self.dataset, self.batch_size, self.stride = dataset, batch_size, stride
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
        key = DensityCache.key(
            ds.annotation_path(index), size=ds.image_size(index), stride=self.stride, **self.density
        )
        return self.cache.get(
            key,
            lambda: sum_pool(
                density_map(ds.points(index), ds.image_size(index), **self.density), self.stride
            ),
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

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.dataset))
        for start in range(0, len(order), self.batch_size):
            samples = [self.sample(int(i), rng) for i in order[start : start + self.batch_size]]
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
) -> dict[str, Any]:
    """MAE and RMSE of the counts on full images, batch 1, with one row per image.

    RMSE is what the crowd-counting papers call "MSE": sqrt(mean((estimate - truth)^2)).
    """
    from cnnzoo.train.progress import ProgressBar

    was = model.training
    model.eval()
    rows = []
    bar = ProgressBar(len(dataset), desc=desc, enabled=progress)
    try:
        for i in range(len(dataset)):
            image, _ = load_rgb(dataset.image_path(i))
            x = _normalise(image)[None].to(device)
            est = float(model.count(x).item())
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
    from cnnzoo.data.store import atomic_write_bytes

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "true", "estimate", "error"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "estimate": f"{r['estimate']:.4f}", "error": f"{r['error']:.4f}"})
    return atomic_write_bytes(Path(path), buf.getvalue().encode())


@torch.no_grad()
def predict_counts(
    checkpoint: str | os.PathLike, images: list[str | os.PathLike], *, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Estimated count and density map (at the output stride, in heads per cell) of each image file."""
    from cnnzoo.counting.models import load_counter

    model, _ = load_counter(checkpoint, device=device)
    out = []
    for p in images:
        image, mode = load_rgb(p)
        density = model(_normalise(image)[None].to(device))[0, 0].cpu().numpy() / model.density_scale
        out.append(
            {
                "image": os.fspath(p),
                "count": float(density.sum(dtype=np.float64)),
                "density": density,
                "rgb": image,
                "mode": mode,
                "model": model.name,
            }
        )
    return out


# -- training -------------------------------------------------------------------------------------
def _train_config(config: CountConfig) -> Any:
    """The zoo trainer's TrainConfig with the fields its optimizer and schedule read."""
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
    )


def _resolve_pretrained(config: CountConfig) -> str | None:
    if config.pretrained != "imagenet":
        return config.pretrained
    from cnnzoo.train.pretrained import imagenet_weights

    return str(imagenet_weights(COUNTER_SPECS[config.model].trunk))


def train_counter(config: CountConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train `config`, select the epoch with the lowest validation MAE, report test MAE/RMSE."""
    from cnnzoo.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, write_json_atomic
    from cnnzoo.train.optim import LRSchedule, build_optimizer
    from cnnzoo.train.progress import ProgressBar
    from cnnzoo.train.trainer import default_out, resolve_device
    from cnnzoo.weights import read_state_dict, save_weights

    config.validate()
    say = log if log is not None else print
    if config.workers > 0:
        torch.set_num_threads(config.workers)
    device = resolve_device(config.device)
    out = Path(config.out) if config.out else default_out(_train_config(config))  # runs/MODEL-shanghaitech-B
    config.out = str(out)
    ckpt = latest_checkpoint(out) if config.resume else None
    if config.resume and ckpt is None:
        raise FileNotFoundError(f"--resume: {str(out)!r} holds no checkpoint to continue from")

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
        pretrained=None if ckpt is not None else _resolve_pretrained(config),
        density_scale=config.density_scale,
    ).to(device)
    batches = CountingBatches(
        train_ds,
        batch_size=config.batch_size,
        stride=model.output_stride,
        crop=config.crop,
        scale=config.scale,
        flip=config.flip,
        density=density,
        density_scale=config.density_scale,
        cache=DensityCache(config.cache_dir),
        seed=config.seed,
    )
    tc = _train_config(config)
    optimizer = build_optimizer(model, tc)
    schedule = LRSchedule(optimizer, tc, len(batches))
    meta = {"cnnzoo_counter": {**model.metadata(), "part": config.part, "density": density}}
    history: list[dict[str, Any]] = []
    best = {"val_mae": math.inf, "epoch": 0}
    start = 0
    if ckpt is not None:
        weights, optim_state, state = load_checkpoint(ckpt)
        model.load_state_dict(weights)
        optimizer.load_state_dict(optim_state)
        schedule.load_state_dict(state["schedule"])
        start, history, best = int(state["epoch"]), list(state["history"]), dict(state["best"])
        best["val_mae"] = math.inf if best.get("val_mae") is None else best["val_mae"]
        say(f"resumed from {ckpt} at epoch {start}")
    else:
        write_json_atomic(out / "config.json", {**config.to_dict(), **meta})
    say(
        f"{config.model} on ShanghaiTech Part {config.part}: {len(train_ds)} train, {len(val_ds)} val, "
        f"{len(test_ds)} test images; {config.density_method} density maps; run in {out}"
    )

    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        model.train()
        bar = ProgressBar(len(batches), desc=f"epoch {epoch + 1}/{config.epochs}", enabled=config.progress)
        loss_sum, abs_err, n = 0.0, 0.0, 0
        for x, target, _ in batches.epoch(epoch):
            x, target = x.to(device), target.to(device)
            pred = model(x)
            loss = F.mse_loss(pred, target)
            value = loss.item()
            if not math.isfinite(value):
                bar.close()
                raise FloatingPointError(
                    f"the training loss became {value} at epoch {epoch + 1}; lower the learning rate "
                    f"(e.g. --lr {config.lr / 10:g})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            est = pred.detach().flatten(1).sum(1).cpu() / config.density_scale
            # The crop's true count is its target's sum: heads whose kernels straddle the crop edge count in part.
            crop_true = target.flatten(1).sum(1).cpu() / config.density_scale
            loss_sum += value * len(x)
            abs_err += float((est - crop_true).abs().sum())
            n += len(x)
            bar.update(1, loss=value)
        bar.close()
        train_seconds = time.perf_counter() - t0
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(n, 1),
            "train_crop_mae": abs_err / max(n, 1),
            "lr": schedule.lr,
            "train_seconds": train_seconds,
        }
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            val = evaluate_counter(model, val_ds, device=device)
            row |= {"val_mae": val["mae"], "val_rmse": val["rmse"]}
            if val["mae"] < best["val_mae"]:
                best = {"val_mae": val["mae"], "val_rmse": val["rmse"], "epoch": epoch + 1}
                save_weights(model, out / "model.safetensors", metadata={**meta, "cnnzoo_best": best})
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        _write_jsonl(out / "metrics.jsonl", history)
        state = {
            "epoch": epoch + 1,
            "step": schedule.step_count,
            "schedule": schedule.state_dict(),
            "history": history,
            "best": {**best, "val_mae": None if not math.isfinite(best["val_mae"]) else best["val_mae"]},
            "config": config.to_dict(),
        }
        save_checkpoint(out, model=model, optimizer=optimizer, state=state, metadata=meta)
        val_text = f"val MAE {row['val_mae']:.2f} RMSE {row['val_rmse']:.2f}  " if "val_mae" in row else ""
        say(
            f"epoch {epoch + 1}/{config.epochs}  loss {row['train_loss']:.4f}  crop MAE "
            f"{row['train_crop_mae']:.2f}  {val_text}lr {row['lr']:.3g}  {train_seconds:.1f}s"
        )

    save_weights(model, out / "last.safetensors", metadata=meta)
    if not (out / "model.safetensors").is_file():  # validation never gave a finite MAE
        save_weights(model, out / "model.safetensors", metadata=meta)
    # The model we report is the one chosen on validation, never on test.
    model.load_state_dict(read_state_dict(out / "model.safetensors"))
    test = evaluate_counter(model, test_ds, device=device, progress=config.progress, desc="test")
    write_rows_csv(test["rows"], out / "test_predictions.csv")
    final = {
        "model": config.model,
        "part": config.part,
        "out": str(out),
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "val_mae": best["val_mae"],
        "val_rmse": best.get("val_rmse"),
        "test_mae": test["mae"],
        "test_rmse": test["rmse"],
        "test_images": test["images"],
        "train_seconds": sum(r["train_seconds"] for r in history),
        "params": sum(p.numel() for p in model.parameters()),
    }
    write_json_atomic(out / "final.json", final)
    from cnnzoo.train.plots import have_matplotlib

    if have_matplotlib():
        from cnnzoo.counting.plots import plot_count_curves, plot_scatter

        plot_count_curves(
            history, out / "curves.png", title=f"{config.model} on ShanghaiTech Part {config.part}"
        )
        plot_scatter(
            test["rows"],
            out / "test_scatter.png",
            title=f"test: MAE {test['mae']:.2f}, RMSE {test['rmse']:.2f}",
        )
    return final


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    from cnnzoo.data.store import atomic_write_bytes

    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
