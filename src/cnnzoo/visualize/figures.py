"""Matplotlib figures of `maps`' tensors: every picture titled, every axis and colour bar labelled.

Each function returns a figure; `cnnzoo.train.plots.save_png` writes it atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from cnnzoo.train.plots import pyplot
from cnnzoo.visualize.maps import TopActivations, tile
from cnnzoo.visualize.subject import Subject

__all__ = ["activations_figure", "attribution_figure", "deconv_figure", "filters_figure"]


def _show(ax: Any, img: torch.Tensor, **kw: Any) -> Any:
    """A (C, H, W) image: grey maps through a colour map (NaN = white gaps), RGB as it is."""
    if img.shape[0] == 3:
        return ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    cmap = pyplot().get_cmap(kw.pop("cmap", "gray")).with_extremes(bad="white")
    return ax.imshow(img[0].numpy(), cmap=cmap, interpolation="nearest", **kw)


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def filters_figure(
    subject: Subject, layer: str, images: torch.Tensor, *, mean_over_inputs: bool, in_chans: int
) -> Any:
    """The mosaic of a layer's filters; the axes' ticks give each tile's filter index."""
    plt = pyplot()
    n, c, k, _ = images.shape
    ncols = max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    mosaic = tile(images, ncols=ncols, pad=1, fill=1.0 if c == 3 else float("nan"))
    side = min(9.0, max(4.2, 0.5 * ncols * max(1.0, k / 5)))
    fig, ax = plt.subplots(figsize=(side + 2.2, side + 1.0), layout="constrained")
    im = _show(ax, mosaic, vmin=0, vmax=1)
    centre = 1 + (k - 1) / 2
    ax.set_xticks([centre + i * (k + 1) for i in range(ncols)], [f"+{i}" for i in range(ncols)])
    ax.set_yticks([centre + r * (k + 1) for r in range(nrows)], [str(r * ncols) for r in range(nrows)])
    ax.tick_params(length=0, labelsize=8 if ncols <= 8 else 6)
    what = (
        f"each filter's mean kernel over its {in_chans} input channels"
        if mean_over_inputs
        else ("RGB" if c == 3 else "grey") + " kernels as they are"
    )
    ax.set_title(f"{subject.label}\n{layer}: {n} filters of {k}x{k}\n({what})", fontsize=10)
    ax.set_xlabel("filter index = row label + column label")
    ax.set_ylabel("first filter of the row")
    if c == 1:
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("weight, scaled per filter\n(0 = its min, 1 = its max)")
    else:
        ax.set_xlabel(
            "filter index = row label + column label\neach filter scaled from its min (black) to its max (white)"
        )
    return fig


def activations_figure(
    subject: Subject,
    image_name: str,
    pixels: torch.Tensor,
    layers: Sequence[str],
    maps: Sequence[torch.Tensor],
) -> Any:
    """The input, then each layer's feature maps as a mosaic with one colour scale per layer."""
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(layers) + 1, figsize=(3.2 + 4.6 * len(layers), 4.4), squeeze=False, layout="constrained"
    )
    ax = axes[0, 0]
    _show(ax, pixels, vmin=0, vmax=1)
    ax.set_title(f"input: {image_name}", fontsize=9)
    ax.set_xlabel(f"{pixels.shape[-1]} px")
    ax.set_ylabel(f"{pixels.shape[-2]} px")
    _bare(ax)
    for ax, name, fmap in zip(axes[0, 1:], layers, maps, strict=True):
        if fmap.dim() == 2:  # a fully connected layer's units, as a strip
            fmap = fmap.view(fmap.shape[0], fmap.shape[1], 1, 1)
        c, h, w = fmap.shape[1:]
        mosaic = tile(fmap[0].unsqueeze(1).cpu(), pad=1)
        lim = float(fmap.abs().max()) or 1.0
        low = 0.0 if float(fmap.min()) >= 0 else -lim
        im = _show(ax, mosaic, cmap="viridis" if low == 0 else "RdBu_r", vmin=low, vmax=lim)
        ax.set_title(f"{name}: {c} maps of {h}x{w}", fontsize=9)
        ax.set_xlabel("channel 0 at top left, row by row")
        _bare(ax)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("activation (one scale for the layer)")
    fig.suptitle(f"{subject.label}: feature maps", fontsize=10)
    return fig


def _signed(p: torch.Tensor) -> torch.Tensor:
    """A projection in [0, 1] with 0 at mid grey, scaled by its own largest |value|."""
    return 0.5 + p / (2 * float(p.abs().max()) if float(p.abs().max()) > 0 else 1.0)


def deconv_figure(
    subject: Subject,
    layer: str,
    top: TopActivations,
    projections: Sequence[torch.Tensor],
    boxes: Sequence[Sequence[tuple[int, int, int, int]]],
    data: str,
) -> Any:
    """Per channel: the top-k projections (3x3) beside the image patches they come from (3x3)."""
    plt = pyplot()
    nch = len(top.channels)
    ncols = 2 if nch > 1 else 1
    nrows = math.ceil(nch / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.6 * ncols + 1, 3.1 * nrows + 0.9), squeeze=False, layout="constrained"
    )
    im = None
    for j, ch in enumerate(top.channels):
        ax = axes[j // ncols, j % ncols]
        proj, patch = [], []
        hb = max(b[1] - b[0] for b in boxes[j])
        wb = max(b[3] - b[2] for b in boxes[j])
        for i, (t, b, l_, r) in enumerate(boxes[j]):
            p = _signed(projections[j][i][:, t:b, l_:r])
            q = subject.pixels(top.images[j, i])[:, t:b, l_:r]
            c = p.shape[0]
            # Patches cut at the border are smaller: pad them (white) to the largest box.
            canvas_p = torch.full((c, hb, wb), float("nan") if c == 1 else 1.0)
            canvas_q = canvas_p.clone()
            canvas_p[:, : p.shape[1], : p.shape[2]] = p
            canvas_q[:, : q.shape[1], : q.shape[2]] = q
            proj.append(canvas_p)
            patch.append(canvas_q)
        k = len(proj)
        side = max(1, math.ceil(math.sqrt(k)))
        fill = float("nan") if proj[0].shape[0] == 1 else 1.0
        left = tile(torch.stack(proj), ncols=side, pad=1, fill=fill)
        right = tile(torch.stack(patch), ncols=side, pad=1, fill=fill)
        gap = torch.full((left.shape[0], left.shape[1], 3), fill)
        im = _show(ax, torch.cat([left, gap, right], 2), vmin=0, vmax=1)
        ax.set_title(
            f"channel {ch}: strongest activations {float(top.values[j, 0]):.2f} .. {float(top.values[j, -1]):.2f}",
            fontsize=8,
        )
        names = ", ".join(subject.classes[int(y)] for y in top.labels[j][:3]) if subject.classes else ""
        ax.set_xlabel(f"projections (left) | image patches (right)\nfirst three: {names}", fontsize=7)
        _bare(ax)
    for j in range(nch, nrows * ncols):
        axes[j // ncols, j % ncols].axis("off")
    fig.suptitle(
        f"{subject.label}\ndeconvnet (Zeiler & Fergus 2013): {layer}, top {top.values.shape[1]} of "
        f"{top.seen:,} {data} images per channel, strongest at top left",
        fontsize=10,
    )
    if im is not None and top.images.shape[2] == 1:
        bar = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        bar.set_label("projection: grey = 0, each scaled by its max |value|; patch: pixel value")
    return fig


_ATTRIBUTION = {
    "gradcam": (
        "Grad-CAM (Selvaraju et al. 2017)",
        "class evidence: ReLU of weighted feature maps",
        "inferno",
    ),
    "saliency": ("saliency (Simonyan et al. 2013)", "|d score / d pixel|, max over channels", "inferno"),
    "occlusion": (
        "occlusion (Zeiler & Fergus 2013)",
        "drop in the class's probability when the square hides the place",
        "RdBu_r",
    ),
}


def attribution_figure(
    subject: Subject,
    kind: str,
    image_name: str,
    pixels: torch.Tensor,
    heat: torch.Tensor,
    *,
    class_name: str,
    prob: float,
    predicted: str,
    detail: str,
) -> Any:
    """Input | map with its colour bar | map over the input."""
    plt = pyplot()
    title, bar_label, cmap = _ATTRIBUTION[kind]
    h = heat.reshape(heat.shape[-2:]).float().cpu()
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 4.3), layout="constrained")
    grey = pixels.mean(0, keepdim=True) if pixels.shape[0] == 3 else pixels
    _show(axes[0], pixels, vmin=0, vmax=1)
    axes[0].set_title(f"input: {image_name}\npredicted: {predicted}", fontsize=9)
    if cmap == "RdBu_r":  # signed: white = no change
        lim = float(h.abs().max()) or 1.0
        vmin, vmax = -lim, lim
    else:
        vmin, vmax = 0.0, float(h.max()) or 1.0
    im = axes[1].imshow(h.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    axes[1].set_title(f"{title}\nclass {class_name!r} (p = {prob:.3f})", fontsize=9)
    bar = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    bar.set_label(bar_label, fontsize=8)
    axes[2].imshow(grey[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    # Only where the map says something, so that the input stays readable under it.
    shown = h.masked_fill(h.abs() < 0.1 * float(h.abs().max()), float("nan"))
    axes[2].imshow(shown.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.6, interpolation="nearest")
    axes[2].set_title("over the input (grey), where |map| >= 10% of its max", fontsize=9)
    for ax in axes:
        ax.set_xlabel(f"x (px), {pixels.shape[-1]} wide", fontsize=8)
        ax.set_ylabel(f"y (px), {pixels.shape[-2]} high", fontsize=8)
    fig.suptitle(f"{subject.label}: {detail}", fontsize=10)
    return fig
