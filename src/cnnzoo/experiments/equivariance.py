"""Equivariance and invariance, measured: translations, rotations, and a p4 group convolution.

The lecture ("Math properties"): a representation phi is *equivariant* to a
transformation g when phi(g x) = M_g phi(x) for some map M_g, *invariant* when phi(g x) =
phi(x). "Convolutions are equivariant to translation", "convolution + pooling + FC" is
(nearly) invariant to it, and "convolutions are not equivariant to ... rotation" - unless, as
Cohen & Welling 2016 do, every filter comes with its rotated copies (`cnnzoo.layers.group_conv`).

Measured on Fashion-MNIST test images, with four classifiers trained by one recipe:
ResNet-20 (conv + strided conv + global average pooling), LeNet-5 (conv + pool + flatten + FC),
a plain CNN (3x3 conv-BN-ReLU, max-pooling, GAP) and its p4 twin (the same layout with p4
convolutions and rotation pooling, at half the channels so that their convs have the same weights):

- layers under integer shifts: relative error ||f(shift x) - shift f(x)|| / ||f(x)|| of a
  trained 3x3 convolution with circular padding and circular shifts (exact), with zero padding
  and zero-filled shifts (exact away from the border), and followed by a stride-2 max-pool
  (exact only for even shifts, which move the pooled map by whole pixels);
- classifiers under growing shifts: how many predictions stay the same, and the accuracy;
- rotations by 90, 180 and 270 degrees: the same errors for ordinary and p4 layers (M_g rotates
  the maps, and for p4 also cycles the rotation planes), and each classifier's predictions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment
from cnnzoo.layers.group_conv import P4Conv2d, P4LiftConv2d, rotate_p4, rotation_pool

__all__ = ["EXPERIMENT", "P4CNN", "PlainCNN", "Settings", "relative_error", "shift"]

FLOAT_PRECISION = 1e-5  # relative error of float32 arithmetic over a few hundred terms
RANDOM_CONV_SEED = 12345  # the random-weight conv of the rotation table (He-normal weights)


@dataclass(frozen=True)
class Settings:
    data: str = "fashion-mnist"
    train_size: int = 6000
    test_size: int = 1000
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.05
    max_shift: int = 6
    p4_widths: tuple[int, int, int] = (8, 16, 32)  # fields; the plain twin has twice the channels
    invariance_shifts: int = 2  # "nearly invariant": predictions kept for shifts up to this many px
    agreement: float = 0.9  # ... in at least this fraction of the test images


BUDGETS = {
    "tiny": Settings(train_size=64, test_size=32, epochs=1, batch_size=32, max_shift=3, p4_widths=(2, 4, 4)),
    "small": Settings(train_size=6000, test_size=1000, epochs=1),
    "full": Settings(train_size=15000, test_size=2000, epochs=2),
    # Cohen & Welling 2016 (arXiv:1602.07576), sec. 8.1, train their P4CNN on rotated MNIST's
    # 10,000 training images and test on its 50,000; the measured equivariance errors depend on
    # the layers, not on how long they trained, so the length (20 epochs) is this module's choice
    # to train the small nets to convergence rather than the paper's.
    "paper": Settings(train_size=10000, test_size=0, epochs=20),
}


# -- the two twins ---------------------------------------------------------------------------------
def _pool5d(x: torch.Tensor) -> torch.Tensor:
    # 2x2 max-pool of each rotation plane; on even sizes the pooling grid rotates onto itself.
    n, c, r, h, w = x.shape
    return F.max_pool2d(x.reshape(n, c * r, h, w), 2).reshape(n, c, r, h // 2, w // 2)


class P4CNN(nn.Module):
    """Lifting conv, four p4 convs (BN over each field's four planes, ReLU), two 2x2 max-pools on
    even maps, rotation pooling, global average pooling, linear: invariant to 90-degree rotations."""

    def __init__(self, widths: tuple[int, int, int] = (8, 16, 32), in_chans: int = 1, num_classes: int = 10):
        super().__init__()
        w1, w2, w3 = widths
        self.lift = P4LiftConv2d(in_chans, w1, 3, bias=False)
        convs = [(w1, w1), (w1, w2), (w2, w2), (w2, w3)]
        self.convs = nn.ModuleList(P4Conv2d(a, b, 3, bias=False) for a, b in convs)
        self.bns = nn.ModuleList(nn.BatchNorm3d(c) for c in (w1, *(b for _, b in convs)))
        self.fc = nn.Linear(w3, num_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The p4 feature map (N, C, 4, h, w) before rotation pooling."""
        x = F.relu(self.bns[0](self.lift(x)))
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns[1:], strict=True)):
            x = F.relu(bn(conv(x)))
            if i in (0, 2):  # 28 -> 14 -> 7
                x = _pool5d(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(rotation_pool(self.trunk(x)).mean((-2, -1)))


class PlainCNN(nn.Module):
    """The P4CNN's layout with ordinary 3x3 convolutions and twice the channels, so that every
    conv after the first has exactly the weights of its p4 twin (a p4 conv from C to C' fields has
    C' * C * 4 * 9; an ordinary one from 2C to 2C' channels the same)."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), in_chans: int = 1, num_classes: int = 10):
        super().__init__()
        w1, w2, w3 = widths
        chans = [(in_chans, w1), (w1, w1), (w1, w2), (w2, w2), (w2, w3)]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in chans)
        self.bns = nn.ModuleList(nn.BatchNorm2d(b) for _, b in chans)
        self.fc = nn.Linear(w3, num_classes)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            x = F.relu(bn(conv(x)))
            if i in (1, 3):
                x = F.max_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x).mean((-2, -1)))


# -- transformations and errors --------------------------------------------------------------------
def shift(x: torch.Tensor, dy: int, dx: int, mode: str = "zero") -> torch.Tensor:
    """Translate the last two dims by (dy, dx) pixels: "circular" wraps around, "zero" fills with 0."""
    if mode == "circular":
        return torch.roll(x, (dy, dx), dims=(-2, -1))
    if mode != "zero":
        raise ValueError(f"shift mode must be 'circular' or 'zero', got {mode!r}")
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src = x[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[..., max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] = src
    return out


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


DIRECTIONS = ((0, 1), (1, 0), (0, -1), (-1, 0))  # right, down, left, up


def _rot(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.rot90(x, k, dims=(-2, -1))


def _circular_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    p = conv.kernel_size[0] // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), conv.weight, conv.bias)


@torch.inference_mode()
def layer_translation_errors(conv: nn.Conv2d, x: torch.Tensor, max_shift: int) -> dict[str, list[float]]:
    """Relative equivariance error of one trained conv, per shift 1..max_shift (4 directions averaged)."""
    p = conv.kernel_size[0] // 2
    rows: dict[str, list[float]] = {k: [] for k in ("circular", "zero", "zero_interior", "pool")}

    def pooled(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(_circular_conv(conv, t)), 2)

    y_circ, y_zero, y_pool = _circular_conv(conv, x), conv(x), pooled(x)
    h, w = y_zero.shape[-2:]
    for s in range(1, max_shift + 1):
        errs = {k: 0.0 for k in rows}
        for dy, dx in DIRECTIONS:
            sy, sx = dy * s, dx * s
            errs["circular"] += relative_error(
                _circular_conv(conv, shift(x, sy, sx, "circular")), shift(y_circ, sy, sx, "circular")
            )
            a, b = conv(shift(x, sy, sx, "zero")), shift(y_zero, sy, sx, "zero")
            errs["zero"] += relative_error(a, b)
            m = s + p  # pixels whose window met the border or the zero-filled band
            errs["zero_interior"] += relative_error(
                a[..., m : h - m, m : w - m], b[..., m : h - m, m : w - m]
            )
            # The pooled map can only move by whole pooled pixels: s // 2 or (s + 1) // 2.
            a = pooled(shift(x, sy, sx, "circular"))
            errs["pool"] += min(
                relative_error(a, shift(y_pool, dy * q, dx * q, "circular")) for q in {s // 2, (s + 1) // 2}
            )
        for k in rows:
            rows[k].append(errs[k] / len(DIRECTIONS))
    return rows


@torch.inference_mode()
def classifier_shift_curve(
    model: nn.Module, images: torch.Tensor, y: torch.Tensor, info: object, max_shift: int
) -> dict[str, list[float]]:
    """Per shift 0..max_shift of the uint8 `images` (black-filled, 4 directions averaged): the
    fraction of predictions equal to the unshifted ones, and the accuracy."""
    from cnnzoo.experiments.training import normalize, predict

    base = predict(model, normalize(images, info)).argmax(1)
    agree, acc = [], []
    for s in range(max_shift + 1):
        a = c = 0.0
        for dy, dx in DIRECTIONS:
            # Shifted before normalising, so the uncovered band is the images' black background.
            pred = predict(model, normalize(shift(images, dy * s, dx * s, "zero"), info)).argmax(1)
            a += float((pred == base).float().mean())
            c += float((pred == y).float().mean())
        agree.append(a / len(DIRECTIONS))
        acc.append(c / len(DIRECTIONS))
    return {"agreement": agree, "accuracy": acc}


@torch.inference_mode()
def rotation_errors(
    plain: PlainCNN, p4: P4CNN, x: torch.Tensor, seed: int = RANDOM_CONV_SEED
) -> dict[str, list[float]]:
    """Relative error under rotation by 90, 180, 270 degrees: ordinary vs p4 layers and trunks."""
    random_conv = nn.Conv2d(x.shape[1], plain.convs[0].out_channels, 3, padding=1, bias=False)
    g = torch.Generator().manual_seed(seed)
    fan_in = x.shape[1] * 9
    random_conv.weight.copy_(torch.randn(random_conv.weight.shape, generator=g) * (2 / fan_in) ** 0.5)
    lifted = F.relu(p4.bns[0](p4.lift(x)))
    rows: dict[str, list[float]] = {}
    for k in (1, 2, 3):
        xr = _rot(x, k)
        got = {
            "3x3 conv, trained (plain CNN, layer 1)": relative_error(
                plain.convs[0](xr), _rot(plain.convs[0](x), k)
            ),
            "3x3 conv, random weights": relative_error(random_conv(xr), _rot(random_conv(x), k)),
            "p4 lifting conv, trained": relative_error(p4.lift(xr), rotate_p4(p4.lift(x), k)),
            "p4 group conv, trained (layer 2)": relative_error(
                p4.convs[0](rotate_p4(lifted, k)), rotate_p4(p4.convs[0](lifted), k)
            ),
            "p4 trunk + rotation pool + GAP (invariant)": relative_error(
                rotation_pool(p4.trunk(xr)).mean((-2, -1)), rotation_pool(p4.trunk(x)).mean((-2, -1))
            ),
            "plain trunk + GAP (invariant?)": relative_error(
                plain.trunk(xr).mean((-2, -1)), plain.trunk(x).mean((-2, -1))
            ),
        }
        for name, e in got.items():
            rows.setdefault(name, []).append(e)
    return rows


@torch.inference_mode()
def classifier_rotation(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    from cnnzoo.experiments.training import predict

    base = predict(model, x).argmax(1)
    agree, acc = [], []
    for k in range(4):
        pred = predict(model, _rot(x, k)).argmax(1)
        agree.append(float((pred == base).float().mean()))
        acc.append(float((pred == y).float().mean()))
    return {"agreement": agree, "accuracy": acc}


# -- the experiment ------------------------------------------------------------------------------
def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.training import (
        PRECISE_BN_NOTE,
        experiment_subsets,
        load_dataset,
        normalize,
        train_run,
    )
    from cnnzoo.registry import create_model

    data = load_dataset(s.data, ctx.data_root)
    c, (h, w) = data.info.in_chans, data.info.image_size
    if h != w or h % 4:
        raise ValueError(
            f"the equivariance experiment needs square images with sides divisible by 4 (two exact 2x2 "
            f"poolings), {s.data} has {h}x{w}; use fashion-mnist or mnist"
        )
    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    ctx.seeds += [
        f"{ctx.seed}: training subset, initialisations and data order",
        f"{ctx.seed + 1}: test subset",
        f"{RANDOM_CONV_SEED}: the random-weight conv of the rotation table",
    ]
    k = data.info.num_classes
    nets: dict[str, nn.Module] = {}
    torch.manual_seed(ctx.seed)
    nets["ResNet-20 (GAP)"] = create_model("resnet20", num_classes=k, in_chans=c)
    torch.manual_seed(ctx.seed)
    nets["LeNet-5 (flatten + FC)"] = create_model("lenet5", num_classes=k, in_chans=c, act="relu", img_size=h)
    torch.manual_seed(ctx.seed)
    nets["plain CNN (GAP)"] = PlainCNN(tuple(2 * v for v in s.p4_widths), c, k)  # type: ignore[arg-type]
    torch.manual_seed(ctx.seed)
    nets["p4 CNN (rotation pool + GAP)"] = P4CNN(s.p4_widths, c, k)
    seconds = {}
    slugs = {name: re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") for name in nets}
    for name, net in nets.items():
        ctx.log(f"training {name} on {len(train_idx):,} {s.data} images")
        # SGD with momentum 0.9, weight decay 5e-4 and a cosine schedule; the epoch is selected on
        # validation images outside the training subset, and `net` holds the selected weights.
        r = train_run(
            ctx,
            slugs[name],
            net,
            data=data,
            train_idx=train_idx,
            test_idx=test_idx,
            epochs=s.epochs,
            batch_size=s.batch_size,
            lr=s.lr,
            seed=ctx.seed,
        )
        seconds[name] = r.seconds
    x = normalize(data.test[0][test_idx], data.info)
    y = data.test[1][test_idx]
    plain, p4 = nets["plain CNN (GAP)"], nets["p4 CNN (rotation pool + GAP)"]
    ctx.log("measuring translation and rotation equivariance")
    layer = layer_translation_errors(plain.convs[0], x[:256], s.max_shift)
    raw = data.test[0][test_idx]
    shifts = {name: classifier_shift_curve(net, raw, y, data.info, s.max_shift) for name, net in nets.items()}
    rot_layers = rotation_errors(plain, p4, x[:256])
    rot_nets = {name: classifier_rotation(net, x, y) for name, net in nets.items()}

    result = ExperimentResult(
        name="equivariance", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    labels = {
        "circular": "3x3 conv, circular padding, circular shift",
        "zero": "3x3 conv, zero padding, zero-filled shift (whole map)",
        "zero_interior": "... the same away from the border",
        "pool": "3x3 conv + ReLU + 2x2 max-pool, circular (map moved by s/2)",
    }
    cols = [f"{v} px" for v in range(1, s.max_shift + 1)]
    result.tables.append(
        Table(
            "Translation: relative equivariance error of a trained conv layer, by shift",
            ["layer", *cols],
            [[labels[k_], *(f"{e:.1e}" for e in errs)] for k_, errs in layer.items()],
            "||f(shift x) - shift f(x)|| / ||f(x)||, averaged over shifts right, down, left and up, "
            f"on {min(256, len(y))} test images; the layer is the plain CNN's first conv.",
        )
    )
    cols0 = [f"{v} px" for v in range(s.max_shift + 1)]
    rows = []
    for name, curve in shifts.items():
        rows.append([f"{name}: same prediction", *(f"{100 * a:.1f}%" for a in curve["agreement"])])
        rows.append([f"{name}: accuracy", *(f"{100 * a:.1f}%" for a in curve["accuracy"])])
    result.tables.append(
        Table(
            "Translation: classifiers on shifted test images",
            ["classifier", *cols0],
            rows,
            f"Zero-filled shifts, averaged over 4 directions, {len(y):,} test images. Training: "
            + ", ".join(f"{n} {t:.0f} s" for n, t in seconds.items())
            + ".",
        )
    )
    result.tables.append(
        Table(
            "Rotation: relative equivariance error",
            ["layer", "90°", "180°", "270°"],
            [[name, *(f"{e:.1e}" for e in errs)] for name, errs in rot_layers.items()],
            "M_g rotates the output maps (ordinary convs) or rotates them and cycles the four rotation "
            "planes (p4); the last two rows compare pooled feature vectors with the unrotated ones.",
        )
    )
    result.tables.append(
        Table(
            "Rotation: classifiers on rotated test images",
            ["classifier", "accuracy 0°", "90°", "180°", "270°", "same prediction 90°", "180°", "270°"],
            [
                [
                    name,
                    *(f"{100 * a:.1f}%" for a in r["accuracy"]),
                    *(f"{100 * a:.1f}%" for a in r["agreement"][1:]),
                ]
                for name, r in rot_nets.items()
            ],
        )
    )

    conv_exact = max(layer["circular"] + layer["zero_interior"])
    result.findings.append(
        Finding(
            "Convolution is equivariant to translation (exactly, up to float precision, where the border does not interfere)",
            conv_exact < FLOAT_PRECISION,
            f"largest relative error {conv_exact:.1e} for circular shifts and for zero padding away from the "
            f"border (whole zero-padded map: up to {max(layer['zero']):.1e}); after a 2x2 max-pool "
            f"{max(layer['pool'][0::2]):.1e} for odd shifts vs {max(layer['pool'][1::2] or [0.0]):.1e} for even ones",
        )
    )
    gap = shifts["ResNet-20 (GAP)"]["agreement"][1 : s.invariance_shifts + 1]
    lenet = shifts["LeNet-5 (flatten + FC)"]["agreement"]
    result.findings.append(
        Finding(
            f"Convolution + pooling + global average pooling is nearly invariant to translation: ResNet-20 keeps "
            f"at least {100 * s.agreement:.0f}% of its predictions for shifts up to {s.invariance_shifts} px",
            min(gap) >= s.agreement,
            f"ResNet-20 keeps {', '.join(f'{100 * a:.1f}%' for a in gap)} at 1..{s.invariance_shifts} px and "
            f"{100 * shifts['ResNet-20 (GAP)']['agreement'][-1]:.1f}% at {s.max_shift} px "
            f"(LeNet-5: {100 * lenet[1]:.1f}% at 1 px, {100 * lenet[-1]:.1f}% at {s.max_shift} px)",
        )
    )
    conv_rot = min(rot_layers["3x3 conv, trained (plain CNN, layer 1)"])
    result.findings.append(
        Finding(
            "An ordinary convolution is not equivariant to rotation",
            conv_rot > 100 * FLOAT_PRECISION,
            f"relative error of the trained 3x3 conv at least {conv_rot:.2f} for 90/180/270 degrees "
            f"(random weights: {min(rot_layers['3x3 conv, random weights']):.2f})",
        )
    )
    p4_err = max(e for name, errs in rot_layers.items() if name.startswith("p4") for e in errs)
    p4_agree = min(rot_nets["p4 CNN (rotation pool + GAP)"]["agreement"])
    plain_agree = min(rot_nets["plain CNN (GAP)"]["agreement"][1:])
    result.findings.append(
        Finding(
            "The p4 group convolution is equivariant to 90-degree rotations to float precision, and the p4 "
            "classifier's predictions do not change under them",
            p4_err < FLOAT_PRECISION and p4_agree == 1.0,
            f"largest p4 error {p4_err:.1e}; p4 CNN keeps {100 * p4_agree:.1f}% of its predictions under "
            f"rotation (plain twin: as few as {100 * plain_agree:.1f}%)",
        )
    )
    if min(gap) < s.agreement:
        result.notes.append(
            "ResNet-20 is less shift-invariant than its global average pooling suggests: it downsamples with "
            "stride-2 convolutions, which are equivariant only to even shifts and alias the rest (Zhang 2019, "
            "Making Convolutional Networks Shift-Invariant Again, arXiv:1904.11486; Azulay & Weiss 2019, "
            "arXiv:1805.12177), and Fashion-MNIST's items are always centred, so no training image taught "
            "it otherwise (no crop augmentation here)."
        )
    result.notes.append(PRECISE_BN_NOTE)
    result.notes.append(
        "Exact equivariance is a property of the layers; a whole classifier loses it wherever the grid "
        "does not map onto itself: strided convs and pools for odd shifts, borders for zero-filled shifts. "
        "The p4 net downsamples only with 2x2 pools on even maps (28 -> 14 -> 7 px), which rotations "
        "preserve; the same care is needed in any p4 design."
    )
    result.data = {
        "layer_translation": layer,
        "classifier_shift": shifts,
        "rotation_layers": rot_layers,
        "rotation_classifiers": rot_nets,
        "train_seconds": seconds,
    }
    result.figures += _plots(layer, shifts, rot_layers, rot_nets, s, ctx)
    return result


def _plots(layer, shifts, rot_layers, rot_nets, s: Settings, ctx: Context) -> list[Figure]:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    xs = list(range(1, s.max_shift + 1))
    names = {
        "circular": "conv, circular",
        "zero": "conv, zero padding (whole map)",
        "zero_interior": "conv, zero padding (interior)",
        "pool": "conv + 2x2 max-pool",
    }
    for key, label in names.items():
        a1.semilogy(xs, [max(e, 1e-9) for e in layer[key]], "o-", label=label)
    a1.axhline(FLOAT_PRECISION, color="gray", ls=":", label="float precision")
    a1.set_xlabel("shift (px)")
    a1.set_ylabel("relative equivariance error")
    a1.set_title("a trained conv layer under translation")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    xs0 = list(range(s.max_shift + 1))
    for i, (name, curve) in enumerate(shifts.items()):
        a2.plot(
            xs0, [100 * a for a in curve["agreement"]], "o-", color=f"C{i}", label=f"{name}: same prediction"
        )
        a2.plot(xs0, [100 * a for a in curve["accuracy"]], "--", color=f"C{i}", label=f"{name}: accuracy")
    a2.set_xlabel("shift (px)")
    a2.set_ylabel("%")
    a2.set_title("classifiers on shifted test images")
    # Under the panel: inside, eight entries would hide the curves.
    a2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, ctx.out / "translation.png")

    fig, (b1, b2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    names_r = list(rot_layers)
    b1.barh(
        names_r,
        [max(max(rot_layers[n]), 1e-9) for n in names_r],
        color=["C3" if "p4" not in n else "C2" for n in names_r],
    )
    b1.set_xscale("log")
    b1.axvline(FLOAT_PRECISION, color="gray", ls=":")
    b1.set_xlabel("largest relative error over 90/180/270° (log)")
    b1.set_ylabel("layer")
    b1.set_title("rotation: ordinary vs p4 layers")
    b1.invert_yaxis()
    b1.tick_params(axis="y", labelsize=8)
    for i, (name, r) in enumerate(rot_nets.items()):
        b2.plot([0, 90, 180, 270], [100 * a for a in r["accuracy"]], "o-", color=f"C{i}", label=name)
    b2.set_xticks([0, 90, 180, 270])
    b2.set_xlabel("rotation of the test images (degrees)")
    b2.set_ylabel("test accuracy (%)")
    b2.set_title("classifiers on rotated images")
    b2.legend(fontsize=7)
    b2.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, ctx.out / "rotation.png")
    return [
        Figure(
            "translation.png",
            "Left: equivariance error of a trained conv layer as the shift grows (log scale). Right: the "
            "classifiers' predictions and accuracy as the test images shift.",
        ),
        Figure(
            "rotation.png",
            "Left: rotation equivariance error of ordinary (red) and p4 (green) layers. Right: accuracy on "
            "test images rotated by 0-270 degrees (trained on upright images only).",
        ),
    ]


EXPERIMENT = Experiment(
    name="equivariance",
    title="Equivariance: convolution under translation and rotation, and a p4 group convolution",
    claim="Convolutions are equivariant to translation; convolution + pooling + FC is invariant to it. "
    "Convolutions are not equivariant to other isometries of the sampling lattice, e.g. rotation; ordinary "
    "CNNs can be generalized to group equivariant networks (Cohen and Welling ICML'16).",
    source="The course's lecture on equivariance and invariance; Cohen & Welling 2016, arXiv:1602.07576",
    budgets=BUDGETS,
    run=run,
    summary="equivariance errors under shifts and rotations; classifiers' invariance; p4 vs ordinary convs",
)
