"""`cnnzoo visualize KIND RUN_or_MODEL [IMAGE...] --out DIR`: pictures of what a network does.

KIND is filters, activations, deconv, gradcam, saliency or occlusion. Every PNG goes into --out,
written atomically; a file already there is refused unless --overwrite, before any is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cnnzoo.cli.main import UsageError, add_threads_flag

__all__ = ["add_parser"]

KINDS = ("filters", "activations", "deconv", "gradcam", "saliency", "occlusion")
_NEEDS_IMAGES = ("activations", "gradcam", "saliency", "occlusion")
_CAPTUM = ("gradcam", "saliency", "occlusion")


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
    return keep.strip("-.") or "x"


def _channels(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"--channels takes channel numbers, e.g. 0,1,5, not {text!r}")
    return values


def _class_index(subject: Any, text: str) -> int:
    names = [c.lower() for c in subject.classes]
    if text.lower() in names:
        return names.index(text.lower())
    if text.isdigit() and int(text) < len(subject.classes):
        return int(text)
    shown = ", ".join(subject.classes[:12]) + (", ..." if len(subject.classes) > 12 else "")
    raise UsageError(f"--class {text!r} is not one of the model's classes ({shown}) nor an index")


class _Writer:
    """Collects (path, figure-maker) pairs, refuses existing files, then writes them all."""

    def __init__(self, out: Path, overwrite: bool) -> None:
        self.out, self.overwrite = out, overwrite
        self.jobs: list[tuple[Path, Any]] = []

    def add(self, name: str, make: Any) -> None:
        self.jobs.append((self.out / name, make))

    def write(self) -> list[Path]:
        from cnnzoo.train.plots import save_png

        taken = [str(p) for p, _ in self.jobs if p.exists()]
        if taken and not self.overwrite:
            more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
            raise UsageError(f"{taken[0]}{more} already exist(s); pass --overwrite to replace")
        written = []
        for path, make in self.jobs:
            written.append(save_png(make(), path))
            print(path)
        return written


def cmd_visualize(args: argparse.Namespace) -> int:
    from cnnzoo.train.plots import have_matplotlib

    if not have_matplotlib():
        raise UsageError("cnnzoo visualize draws with matplotlib: pip install 'cnnzoo[plot]'")
    if args.kind in _CAPTUM:
        try:
            import captum  # noqa: F401
        except ImportError as e:
            raise UsageError(f"visualize {args.kind} uses Captum: pip install 'cnnzoo[viz]'") from e
    if args.kind in _NEEDS_IMAGES and not args.images:
        raise UsageError(
            f"visualize {args.kind} needs image files: cnnzoo visualize {args.kind} RUN IMAGE ..."
        )
    if args.kind in ("filters", "deconv") and args.images:
        what = "a dataset split (--data, --split)" if args.kind == "deconv" else "the weights alone"
        raise UsageError(f"visualize {args.kind} reads {what}, not image files")
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    from cnnzoo.visualize.subject import load_subject

    subject = load_subject(args.source, model=args.model, pretrained=args.pretrained, device=args.device)
    out = args.out
    if out is None:  # beside the run it looks into, or a folder named after the model here
        src = Path(args.source)
        out = src / "visualize" if src.is_dir() else Path(f"visualize-{src.stem}")
    writer = _Writer(Path(out), args.overwrite)
    {
        "filters": _filters,
        "activations": _activations,
        "deconv": _deconv,
    }.get(args.kind, _attribution)(args, subject, writer)
    writer.write()
    return 0


def _layers(args: argparse.Namespace, subject: Any, default: list[str]) -> list[tuple[str, Any]]:
    from cnnzoo.visualize.subject import find_layer

    names = args.layer or default
    return [(n, find_layer(subject.model, n, model_name=subject.name)) for n in names]


def _filters(args: argparse.Namespace, subject: Any, writer: _Writer) -> None:
    import torch

    from cnnzoo.visualize.figures import filters_figure
    from cnnzoo.visualize.maps import filter_images
    from cnnzoo.visualize.subject import first_conv

    first = first_conv(subject.model)
    for name, module in _layers(args, subject, [first]):
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Conv2d) or weight is None:
            raise UsageError(f"{name} is a {type(module).__name__}, not a Conv2d: it has no filters to show")
        deeper = name != first or weight.shape[1] not in (1, 3)
        images = filter_images(weight, mean_over_inputs=deeper)

        def make(name=name, images=images, deeper=deeper, cin=int(weight.shape[1])) -> Any:
            return filters_figure(subject, name, images, mean_over_inputs=deeper, in_chans=cin)

        writer.add(f"filters-{_slug(name)}.png", make)


def _images(args: argparse.Namespace, subject: Any) -> Any:
    from cnnzoo.visualize.subject import load_images

    return load_images(args.images, subject).to(args.device)


def _conv_layers(subject: Any) -> list[str]:
    """The Conv2d layers in execution order (every spatial layer for a net without one)."""
    import torch

    from cnnzoo.visualize.subject import spatial_layers

    order = spatial_layers(subject.model, subject.input_size)
    modules = dict(subject.model.named_modules())
    return [n for n in order if isinstance(modules[n], torch.nn.Conv2d)] or order


def _activations(args: argparse.Namespace, subject: Any, writer: _Writer) -> None:
    from cnnzoo.visualize.figures import activations_figure
    from cnnzoo.visualize.maps import feature_maps

    convs = _conv_layers(subject)
    picks = sorted({0, len(convs) // 2, len(convs) - 1}) if len(convs) > 2 else range(len(convs))
    layers = _layers(args, subject, [convs[i] for i in picks])
    x = _images(args, subject)
    maps = feature_maps(subject.model, [m for _, m in layers], x)
    for i, path in enumerate(args.images):
        stem = Path(path).stem

        def make(i=i, stem=stem) -> Any:
            return activations_figure(
                subject,
                stem,
                subject.pixels(x[i].cpu()),
                [n for n, _ in layers],
                [m[i : i + 1] for m in maps],
            )

        writer.add(f"activations-{_slug(stem)}.png", make)


def _deconv(args: argparse.Namespace, subject: Any, writer: _Writer) -> None:
    import torch

    from cnnzoo.visualize.figures import deconv_figure
    from cnnzoo.visualize.maps import deconv_project, feature_maps, support_box, top_activations

    layers = _layers(args, subject, [_conv_layers(subject)[-1]])
    data = args.data or subject.data
    if not data:
        raise UsageError("which images? pass --data NAME (a model name brings no dataset)")
    stream = _stream(args, subject, data)
    for name, module in layers:
        probe = torch.zeros(1, *subject.input_size, device=args.device)
        width = feature_maps(subject.model, [module], probe)[0].shape[1]
        channels = args.channels or list(range(min(8, width)))
        if max(channels) >= width:
            raise UsageError(f"--channels: {name} has {width} channels (0..{width - 1})")
        start = time.perf_counter()
        top = top_activations(subject.model, module, stream(), channels, k=args.top)
        projections, boxes = [], []
        for j, ch in enumerate(channels):
            proj = deconv_project(subject.model, module, top.images[j].to(args.device), ch).cpu()
            projections.append(proj)
            boxes.append([support_box(p) for p in proj])
        seconds = time.perf_counter() - start
        print(
            f"cnnzoo: deconv {name}: top {args.top} of {top.seen:,} images for {len(channels)} channels "
            f"in {seconds:.1f}s",
            file=sys.stderr,
        )

        def make(name=name, top=top, projections=projections, boxes=boxes) -> Any:
            return deconv_figure(subject, name, top, projections, boxes, f"{data} {args.split}")

        writer.add(f"deconv-{_slug(name)}.png", make)


def _stream(args: argparse.Namespace, subject: Any, data: str) -> Any:
    """A callable giving (x, y) batches of the split, normalised with the subject's statistics."""
    from cnnzoo.data.loader import TensorLoader
    from cnnzoo.data.sources import load_arrays

    images, labels = load_arrays(data, args.split, args.data_root)
    if args.limit is not None:
        if args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}")
        images, labels = images[: args.limit], labels[: args.limit]
    if images.shape[1] != subject.input_size[0]:
        raise UsageError(
            f"{data} has {images.shape[1]}-channel images but {subject.name} takes {subject.input_size[0]}"
        )
    size = tuple(subject.input_size[1:])
    resize = None if tuple(images.shape[-2:]) == size else size
    loader = TensorLoader(
        images,
        labels,
        batch_size=args.batch_size,
        shuffle=False,
        mean=subject.mean,
        std=subject.std,
        device=args.device,
        resize_to=resize,
        pad_shards=False,
    )
    return lambda: iter(loader)


def _attribution(args: argparse.Namespace, subject: Any, writer: _Writer) -> None:
    import torch

    from cnnzoo.visualize import maps
    from cnnzoo.visualize.figures import attribution_figure
    from cnnzoo.visualize.subject import default_layer

    x = _images(args, subject)
    with torch.no_grad():
        logits = subject.model(x)
        if isinstance(logits, tuple | list):
            logits = logits[0]
        probs = logits.float().softmax(1).cpu()
    layer_name, layer = "", None
    if args.kind == "gradcam":
        (layer_name, layer), *more = _layers(
            args, subject, [default_layer(subject.model, subject.input_size)]
        )
        if more:
            raise UsageError("Grad-CAM reads one layer; pass --layer once")
    elif args.layer:
        raise UsageError(f"visualize {args.kind} looks at the input, not at a layer; drop --layer")
    window, stride = maps.occlusion_window(subject.input_size[1:])
    window, stride = args.window or window, args.stride or stride
    if args.kind == "occlusion" and not (1 <= stride <= window <= min(subject.input_size[1:])):
        raise UsageError(
            f"occlusion needs 1 <= --stride <= --window <= the image side, got {stride}, {window}"
        )
    for i, path in enumerate(args.images):
        stem = Path(path).stem
        predicted = int(probs[i].argmax())
        targets = [_class_index(subject, c) for c in args.class_] if args.class_ else [predicted]
        xi = x[i : i + 1]
        for t in targets:
            if args.kind == "gradcam":
                heat = maps.gradcam(subject.model, layer, xi, t)
                detail = f"Grad-CAM at {layer_name}"
            elif args.kind == "saliency":
                heat = maps.saliency(subject.model, xi, t)
                detail = "saliency, the input gradient"
            else:
                fill = (
                    [0.0] * xi.shape[1]
                    if args.fill == "mean"
                    else [-m / s for m, s in zip(subject.mean, subject.std, strict=True)]
                )
                heat = maps.occlusion(subject.model, xi, t, window=window, stride=stride, fill=fill)
                colour = "mean-colour (grey)" if args.fill == "mean" else "black"
                detail = f"occlusion, {window}x{window} {colour} square every {stride} px"
            cls = subject.classes[t]

            def make(i=i, stem=stem, heat=heat, t=t, detail=detail, cls=cls, predicted=predicted) -> Any:
                return attribution_figure(
                    subject,
                    args.kind,
                    stem,
                    subject.pixels(x[i].cpu()),
                    heat.cpu(),
                    class_name=cls,
                    prob=float(probs[i, t]),
                    predicted=f"{subject.classes[predicted]} (p = {float(probs[i, predicted]):.3f})",
                    detail=detail,
                )

            tag = "-black" if args.kind == "occlusion" and args.fill == "black" else ""
            writer.add(f"{args.kind}-{_slug(stem)}-{_slug(cls)}{tag}.png", make)


def add_parser(subparsers: Any) -> None:
    """Register `visualize` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "visualize",
        help="pictures of a network: filters, feature maps, deconvnet, Grad-CAM, saliency, occlusion",
        description="KIND: filters (a conv layer's kernels; the first layer as RGB or grey, deeper "
        "ones as each filter's mean kernel), activations (feature maps of layers for IMAGEs), deconv "
        "(Zeiler & Fergus 2013: per channel, the top images of a dataset split projected back to "
        "pixels, beside their patches), gradcam, saliency and occlusion (for IMAGEs and --class; "
        "these need Captum: pip install 'cnnzoo[viz]'). RUN_or_MODEL is a run folder, a checkpoint file or "
        "a model name (random weights unless --pretrained imagenet). Layers are named as `cnnzoo "
        "summary MODEL` prints them. PNGs go into --out; their paths are printed.",
    )
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=", ".join(KINDS))
    p.add_argument("source", metavar="RUN_or_MODEL", help="run folder, checkpoint file or model name")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="PNG/JPEG files (activations, attributions)")
    p.add_argument(
        "--out", help="folder for the PNGs (default: RUN/visualize for a run folder, else ./visualize-NAME)"
    )
    p.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="layer as `cnnzoo summary` names it, e.g. conv2 or layer3.2 (repeatable; default: filters "
        "the first conv, activations three convs, deconv the last conv, gradcam the last feature map)",
    )
    p.add_argument(
        "--class",
        dest="class_",
        action="append",
        metavar="NAME_or_INDEX",
        help="class to explain (repeatable; default: the predicted one)",
    )
    p.add_argument(
        "--channels", type=_channels, metavar="C,C", help="deconv: channels (default: the first 8)"
    )
    p.add_argument("--top", type=int, default=9, help="deconv: images per channel (default 9, as the paper)")
    p.add_argument("--data", help="deconv: dataset (default: the run's)")
    p.add_argument("--split", choices=["train", "test"], default="test", help="deconv: split (default test)")
    p.add_argument("--limit", type=int, metavar="N", help="deconv: only the split's first N images")
    p.add_argument("--batch-size", type=int, default=256, help="deconv: images per forward pass")
    p.add_argument("--data-root", help="dataset cache root (default $CNNZOO_DATA or ~/.cache/cnnzoo)")
    p.add_argument(
        "--window", type=int, metavar="PX", help="occlusion: square side (default: a quarter of the image)"
    )
    p.add_argument(
        "--stride", type=int, metavar="PX", help="occlusion: step (default: a quarter of the window)"
    )
    p.add_argument(
        "--fill",
        choices=["mean", "black"],
        default="mean",
        help="occlusion: the square's colour, the dataset's mean (grey, as Zeiler & Fergus) or black",
    )
    p.add_argument("--model", help="architecture, for checkpoint files that do not name it")
    p.add_argument(
        "--pretrained", choices=["imagenet"], help="a model name with torchvision's ImageNet weights"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace PNGs already in --out")
    add_threads_flag(p)
    p.set_defaults(func=cmd_visualize)
