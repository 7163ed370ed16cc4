"""`cnnzoo visualize deconv` on a dataset split: time against one plain forward pass over it.

The anchor is what any visualisation of a dataset must pay at least: one eval-mode forward pass
over every image of the split, same model, same loader, same batch size, under
`torch.no_grad()`. The deconv contender is what the CLI does before drawing: the streaming top-k
pass (a forward hook keeps the k strongest images per channel) plus one deconvnet projection
batch per channel. Rounds alternate the two; the table gives medians and the machine's load.

    python benchmarks/bench_visualize.py runs/lenet5 runs/resnet20 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from cnnzoo.data.loader import TensorLoader
from cnnzoo.data.sources import load_arrays
from cnnzoo.visualize.maps import deconv_project, top_activations
from cnnzoo.visualize.subject import find_layer, load_subject, spatial_layers


def loader_for(subject, split: str, batch_size: int, limit: int | None) -> TensorLoader:
    x, y = load_arrays(subject.data, split)
    if limit:
        x, y = x[:limit], y[:limit]
    size = tuple(subject.input_size[1:])
    return TensorLoader(
        x,
        y,
        batch_size=batch_size,
        shuffle=False,
        mean=subject.mean,
        std=subject.std,
        resize_to=None if tuple(x.shape[-2:]) == size else size,
        pad_shards=False,
    )


@torch.no_grad()
def plain_forward(model, loader) -> float:
    start = time.perf_counter()
    for x, _ in loader:
        model(x)
    return time.perf_counter() - start


def deconv(model, layer, loader, channels, k) -> tuple[float, float]:
    start = time.perf_counter()
    top = top_activations(model, layer, loader, channels, k=k)
    middle = time.perf_counter()
    for j, ch in enumerate(channels):
        deconv_project(model, layer, top.images[j], ch)
    return middle - start, time.perf_counter() - middle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders written by `cnnzoo train`")
    ap.add_argument("--layer", help="default: the last conv layer, as the CLI")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, help="only the first N images")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--top", type=int, default=9)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s), load average before {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for run in args.runs:
        subject = load_subject(run)
        order = spatial_layers(subject.model, subject.input_size)
        convs = [n for n in order if isinstance(find_layer(subject.model, n), torch.nn.Conv2d)]
        name = args.layer or convs[-1]
        layer = find_layer(subject.model, name, model_name=subject.name)
        loader = loader_for(subject, args.split, args.batch_size, args.limit)
        channels = list(range(args.channels))
        n = loader.num_samples
        plain_forward(subject.model, loader_for(subject, args.split, args.batch_size, 512))  # warm-up
        plain, topk, proj = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                plain.append(plain_forward(subject.model, loader))
                a, b = deconv(subject.model, layer, loader, channels, args.top)
            else:
                a, b = deconv(subject.model, layer, loader, channels, args.top)
                plain.append(plain_forward(subject.model, loader))
            topk.append(a)
            proj.append(b)
        p, t, q = statistics.median(plain), statistics.median(topk), statistics.median(proj)
        rows.append((subject.name, name, n, p, t, q, (t + q) / p))
    print(f"# load average after {os.getloadavg()[0]:.2f}; medians of {args.rounds} rounds")
    print(
        "| model | layer | images | plain forward (s) | deconv top-k pass (s) | projections (s) "
        "| deconv total (s) | ratio to plain forward |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, layer, n, p, t, q, ratio in rows:
        print(f"| {model} | {layer} | {n:,} | {p:.2f} | {t:.2f} | {q:.3f} | {t + q:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
