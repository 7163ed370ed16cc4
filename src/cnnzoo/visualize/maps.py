"""The pictures' numbers: filter mosaics, feature maps, deconvnet projections, attribution maps.

Everything here returns tensors (figures.py draws them). Grad-CAM, saliency and occlusion are
Captum's (the `viz` extra); cnnzoo adds the layer by name, the class and the upsampling. The
deconvnet is written here because Captum's `Deconvolution` rectifies only at `nn.ReLU` modules
and LeNet-5's default units are sigmoids.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.layers.activations import Maxout

__all__ = [
    "TopActivations",
    "deconv_project",
    "feature_maps",
    "filter_images",
    "gradcam",
    "need_captum",
    "occlusion",
    "saliency",
    "support_box",
    "tile",
    "top_activations",
]

# The deconvnet rectifies its signal wherever the forward pass had a non-linearity.
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.SiLU,
    nn.Mish,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    Maxout,
)


def need_captum() -> None:
    """Raise an ImportError naming the extra when Captum is missing."""
    try:
        import captum  # noqa: F401
    except ImportError as e:
        raise ImportError("this picture needs Captum: pip install 'cnnzoo[viz]'") from e


# -- filters and mosaics --------------------------------------------------------------------------
def filter_images(weight: torch.Tensor, *, mean_over_inputs: bool = False) -> torch.Tensor:
    """Conv kernels (out, in, k, k) as images in [0, 1], each filter normalised on its own.

    A first layer's filters are shown as they are (RGB for 3 inputs, grey for 1), scaled per
    filter from its minimum (0) to its maximum (1), as Krizhevsky et al. 2012 (Fig. 3) and
    Zeiler & Fergus 2013 show them. A deeper layer's filters have one kernel per input channel;
    `mean_over_inputs` shows each filter's mean kernel over its inputs, in grey.
    """
    w = weight.detach().float().cpu()
    if w.dim() != 4:
        raise ValueError(f"filters are (out, in, kH, kW) kernels, got a tensor of shape {tuple(w.shape)}")
    if mean_over_inputs or w.shape[1] not in (1, 3):
        w = w.mean(1, keepdim=True)
    flat = w.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    return (w - lo) / (hi - lo).clamp(min=1e-12)


def tile(
    images: torch.Tensor, *, ncols: int | None = None, pad: int = 1, fill: float = float("nan")
) -> torch.Tensor:
    """(N, C, h, w) images as one (C, H, W) mosaic, row by row, `pad` pixels of `fill` between.

    Image i sits at row i // ncols, column i % ncols, its top-left corner at
    (pad + row * (h + pad), pad + col * (w + pad)). ncols defaults to ceil(sqrt(N)).
    """
    n, c, h, w = images.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    out = torch.full((c, pad + nrows * (h + pad), pad + ncols * (w + pad)), fill, dtype=torch.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        out[:, top : top + h, left : left + w] = images[i].float()
    return out


# -- feature maps ---------------------------------------------------------------------------------
def _capture(layer: nn.Module, store: list[torch.Tensor]):
    def hook(module: nn.Module, args: tuple, output: object) -> None:
        store.append(output[0] if isinstance(output, tuple | list) else output)  # type: ignore[arg-type]

    return layer.register_forward_hook(hook)


@torch.no_grad()
def feature_maps(model: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of `layers` for input `x` (one forward pass), in the order given."""
    stores: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = [_capture(m, s) for m, s in zip(layers, stores, strict=True)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    for s in stores:
        if not s:
            raise ValueError("a chosen layer did not run in the forward pass")
    return [s[0].detach().clone() for s in stores]  # a module called twice: its first call


# -- the deconvnet (Zeiler & Fergus 2013, arXiv:1311.2901, Sec. 2.1) -------------------------------
class _Rectify(torch.autograd.Function):
    """Forward: the activation's output unchanged. Backward: ReLU of the incoming signal.

    The deconvnet does not multiply by the unit's derivative (which would be backpropagation);
    it rectifies the reconstruction, "ensuring the feature maps are always positive".
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.clamp(min=0), None


def _channel_max(out: torch.Tensor, channel: int) -> torch.Tensor:
    # gather at the argmax, not amax: amax's gradient is shared among tied maxima (a channel that
    # a ReLU zeroed everywhere), and the deconvnet projects one unit.
    flat = out[:, channel].reshape(out.shape[0], -1)
    return flat.gather(1, flat.argmax(1, keepdim=True)).squeeze(1)


def deconv_project(model: nn.Module, layer: nn.Module, x: torch.Tensor, channel: int) -> torch.Tensor:
    """Each image's strongest activation of `channel` in `layer`, projected back to pixel space.

    As Zeiler & Fergus 2013 (Sec. 2.1): all other activations of the layer are set to zero and
    the one kept is passed down a deconvnet attached to the convnet, which reverses each layer:
    max pooling is undone with the forward pass's switches (the argmax positions), the signal is
    rectified where the convnet had a non-linearity (of whatever kind), and a convolution is
    undone with its transposed filters (conv_transpose2d with the same weights, biases left
    out). The first and third steps are exactly the backward pass of pooling and convolution, so
    the projection is the gradient of the kept activation with respect to the input, with every
    non-linearity's backward replaced by a ReLU of the signal (Springenberg et al. 2014,
    arXiv:1412.6806, Sec. 3.4). Other linear steps (average pooling, BatchNorm in eval mode,
    residual sums, padding) pass back as their transposes likewise.
    """
    was_training = model.training
    model.eval()
    inplace = [
        (m, m.inplace) for m in model.modules() if isinstance(m, ACTIVATIONS) and hasattr(m, "inplace")
    ]
    for m, _ in inplace:  # an in-place unit would overwrite the input the rectifier passes back to
        m.inplace = False

    def rectify(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return _Rectify.apply(args[0], output.detach())

    handles = [m.register_forward_hook(rectify) for m in model.modules() if isinstance(m, ACTIVATIONS)]
    store: list[torch.Tensor] = []
    handles.append(_capture(layer, store))  # after the rectifiers: a chosen unit's output is seen
    try:
        with torch.enable_grad():
            xi = x.detach().clone().requires_grad_(True)
            model(xi)
            if not store:
                raise ValueError("the chosen layer did not run in the forward pass")
            out = store[0]
            if not 0 <= channel < out.shape[1]:
                raise ValueError(f"channel {channel} is out of range: the layer has {out.shape[1]} channels")
            kept = _channel_max(out, channel).sum()  # d(sum of maxima) = one unit per image
            (projection,) = torch.autograd.grad(kept, xi)
    finally:
        for h in handles:
            h.remove()
        for m, flag in inplace:
            m.inplace = flag
        model.train(was_training)
    return projection.detach()


@dataclass
class TopActivations:
    """For each channel: the k strongest images of a stream (strongest first) and their maxima."""

    channels: list[int]
    values: torch.Tensor  # (channels, k)
    images: torch.Tensor  # (channels, k, C, H, W), the model's input
    labels: torch.Tensor  # (channels, k)
    index: torch.Tensor  # (channels, k), position in the stream
    seen: int  # images streamed


@torch.no_grad()
def top_activations(
    model: nn.Module,
    layer: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    channels: Sequence[int],
    *,
    k: int = 9,
) -> TopActivations:
    """Stream (x, y) batches and keep, per channel, the k images with the largest activation.

    An image's score for a channel is its strongest activation anywhere in that feature map
    (Zeiler & Fergus 2013, Fig. 2: "the top 9 activations in a random subset of feature maps
    across the validation data"). Only k images per channel are kept, so memory does not grow
    with the stream.
    """
    chans = torch.as_tensor(list(channels), dtype=torch.long)
    nch = len(chans)
    values = torch.empty(nch, 0)
    images: torch.Tensor | None = None
    labels = torch.empty(nch, 0, dtype=torch.long)
    index = torch.empty(nch, 0, dtype=torch.long)
    seen = 0
    store: list[torch.Tensor] = []
    handle = _capture(layer, store)
    try:
        for x, y in batches:
            store.clear()
            model(x)
            out = store[0]
            if int(chans.max()) >= out.shape[1]:
                raise ValueError(f"channel {int(chans.max())} is out of range: the layer has {out.shape[1]}")
            n = x.shape[0]
            scores = out[:, chans].reshape(n, nch, -1).amax(2).T.float().cpu()  # (nch, n)
            x_cpu = x.detach().float().cpu()
            if images is None:
                images = torch.empty(nch, 0, *x_cpu.shape[1:])
            kept = values.shape[1]
            cand = torch.cat([values, scores], 1)
            top = cand.topk(min(k, cand.shape[1]), dim=1)
            # Gather the winners from the kept images and this batch in one pool.
            pool = torch.cat([images.reshape(-1, *x_cpu.shape[1:]), x_cpu])
            pool_labels = torch.cat([labels.reshape(-1), y.cpu()])
            pool_index = torch.cat([index.reshape(-1), torch.arange(seen, seen + n)])
            rows = torch.arange(nch).view(-1, 1)
            where = torch.where(
                top.indices < kept, rows * kept + top.indices, nch * kept + top.indices - kept
            )
            values = top.values
            images = pool[where.reshape(-1)].reshape(nch, -1, *x_cpu.shape[1:])
            labels = pool_labels[where]
            index = pool_index[where]
            seen += n
    finally:
        handle.remove()
    if images is None:
        raise ValueError("the data stream held no images")
    return TopActivations([int(c) for c in chans], values, images, labels, index, seen)


def support_box(projection: torch.Tensor, *, rel: float = 1e-6) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive: where a (C, H, W) projection is not zero.

    The projection of one unit reaches only that unit's receptive field (cut at the border), so
    this box is the image patch the unit sees.
    """
    mag = projection.abs().sum(0)
    mask = mag > rel * float(mag.max()) if float(mag.max()) > 0 else torch.ones_like(mag, dtype=torch.bool)
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


# -- attributions (Captum) ------------------------------------------------------------------------
def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int | Sequence[int]) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391, Eq. 1-2) at `layer`, upsampled to `x`.

    ReLU(sum_k alpha_k A^k) with alpha_k the spatial mean of d y_c / d A^k, by Captum's
    `LayerGradCam`; bilinear upsampling to the input size. Returns (N, 1, H, W).
    """
    need_captum()
    from captum.attr import LayerGradCam

    x = x.detach().clone().requires_grad_(True)
    cam = LayerGradCam(model, layer).attribute(x, target=_targets(target, x), relu_attributions=True)
    if cam.dim() != 4:
        raise ValueError("Grad-CAM needs a layer with a spatial (N, C, H, W) output; pick a conv layer")
    return _upsample(cam.detach(), x.shape[-2:])


def saliency(model: nn.Module, x: torch.Tensor, target: int | Sequence[int]) -> torch.Tensor:
    """|d y_c / d x|, the maximum over colour channels (Simonyan et al. 2013, arXiv:1312.6034, Sec. 3.1).

    Captum's `Saliency`. Returns (N, 1, H, W).
    """
    need_captum()
    from captum.attr import Saliency

    x = x.detach().clone().requires_grad_(True)
    grad = Saliency(model).attribute(x, target=_targets(target, x), abs=True)
    return grad.detach().amax(1, keepdim=True)


class _Probabilities(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, tuple | list):
            out = out[0]
        return out.softmax(1)


def occlusion_window(size: Sequence[int]) -> tuple[int, int]:
    """(window, stride) for an image of (H, W): a quarter of the side, moved a quarter of that."""
    side = min(size)
    window = max(3, side // 4)
    return window, max(1, window // 4)


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int],
    *,
    window: int,
    stride: int,
    fill: float | Sequence[float] = 0.0,
    batch: int = 64,
) -> torch.Tensor:
    """Zeiler & Fergus 2013's occlusion sensitivity (Sec. 4.2, Fig. 7): the drop in the class's
    probability when a grey square hides each place, by Captum's `Occlusion`.

    The square is `fill` in the normalised input (per channel, or one value; 0 is the dataset's
    mean colour, Z&F's grey), `window` pixels wide, slid by `stride`; a pixel's value is the
    mean drop over the squares that cover it (Captum's convention; Z&F plot one value per
    square position). Positive: hiding it lowers the class's probability. Returns (N, 1, H, W).
    """
    need_captum()
    from captum.attr import Occlusion

    c = x.shape[1]
    attr = Occlusion(_Probabilities(model)).attribute(
        x,
        sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride),
        baselines=torch.as_tensor(fill, dtype=x.dtype).reshape(1, -1, 1, 1).expand_as(x).contiguous(),
        target=_targets(target, x),
        perturbations_per_eval=batch,
    )
    return attr.detach()[:, :1]  # the window spans all channels: they hold the same value


def _targets(target: int | Sequence[int], x: torch.Tensor) -> int | list[int]:
    return int(target) if isinstance(target, int) else [int(t) for t in target]
