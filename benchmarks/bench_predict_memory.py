"""Peak memory of `cnnzoo predict` against the number of images: it should not grow.

Generates N JPEGs (224 x 224, smooth colour fields with noise, as photographs compress) in a
temporary folder and runs `cnnzoo predict CHECKPOINT FOLDER --format csv --threads 1` on them in
a fresh process per row, reading that process's peak resident set size from `os.wait4` (the
kernel's ru_maxrss of that child alone). The floor it is compared with is the same model's bare
forward of one batch of the same size in a fresh process: interpreter, torch, the model's
weights and one batch's activations, with no image decoded. A streaming predict should stay
within a constant of the floor whatever N is; the whole-batch predict it replaced grew by about
1.15 MB per 224-px image (4.9 GB at 3,000 images).

    python benchmarks/bench_predict_memory.py                    # N = 100, 1000, 10000; LeNet-5
    python benchmarks/bench_predict_memory.py --model resnet18 --sizes 100,1000

The model's weights are random (memory does not depend on their values). LeNet-5 is built for
224-px RGB input, so that the images travel through the pipeline at the size the issue measured
while the network itself costs little; --model resnet18 runs a real ImageNet-size network.

Two more columns: the same predict with --no-fast (eager PyTorch, no ONNX Runtime session), and
the whole-batch predict that streaming replaced (every image decoded,
resized and normalised into one tensor before the first forward pass), restated here, for the
sizes up to --naive-max images: the growth the issue reported, measured the same way.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cnnzoo

SIDE = 224
# (channels, height, width) per model. LeNet-5 built for 224-px RGB: the images go through the
# pipeline at the size the issue measured (224 px), for a few MFLOPs each instead of ResNet's 1.8 G.
INPUTS = {"lenet5": (3, 224, 224), "resnet18": (3, 224, 224)}
KWARGS = {"lenet5": {"img_size": 224}, "resnet18": {}}

FLOOR = """
import sys, torch
torch.set_num_threads(1)
from cnnzoo.train.evaluate import load_model
model = load_model(sys.argv[1]).model
c, h, w = (int(v) for v in sys.argv[2:5])
with torch.inference_mode():
    model(torch.randn(int(sys.argv[5]), c, h, w))
"""


NAIVE = """
import sys, torch
import torch.nn.functional as F
from PIL import Image
from cnnzoo.train.evaluate import load_model
from cnnzoo.data.decode import expand_images
torch.set_num_threads(1)
model = load_model(sys.argv[1]).model
c, h, w = (int(v) for v in sys.argv[2:5])
batch = []
for p in expand_images([sys.argv[5]]):
    with Image.open(p) as im:
        im = im.convert("RGB")
        img = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, 3)
    x = img.permute(2, 0, 1).float().div(255)
    x = F.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    batch.append((x - 0.5) / 0.5)
x = torch.stack(batch)
with torch.inference_mode():
    probs = torch.cat([model(x[i : i + 32]) for i in range(0, len(x), 32)]).softmax(1)
print(probs.argmax(1).tolist())
"""


def write_jpegs(folder: Path, n: int, *, seed: int = 0) -> int:
    """N different 224-px JPEGs; returns their total size in bytes.

    Sixteen noisy colour fields are drawn once; image i is field i % 16 rolled by i // 16 pixels,
    so every file differs and writing ten thousand costs seconds, not minutes.
    """
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(16, 3, 4, 4, generator=g) * 255
    fields = torch.nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    fields = fields + torch.randn(16, 3, SIDE, SIDE, generator=g) * 8
    bases = fields.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    total = 0
    for i in range(n):
        pixels = np.roll(bases[i % 16], i // 16, axis=1)
        path = folder / f"{i // 1000:02d}" / f"img{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        total += path.stat().st_size
    return total


def peak_rss(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(peak RSS in MiB, wall seconds, stderr's last line) of one command run to completion."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({proc.returncode}): {err.strip()[-500:]}")
    ran = next((line for line in err.splitlines() if "predict ran on" in line), "")
    return usage.ru_maxrss / 1024, seconds, ran.replace("cnnzoo: predict ran on ", "")  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(INPUTS), default="lenet5")
    parser.add_argument("--sizes", default="100,1000,10000", help="numbers of images, comma-separated")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--naive-max", type=int, default=1000, help="largest N for the whole-batch column")
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    c, h, w = INPUTS[args.model]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        model = cnnzoo.create_model(args.model, num_classes=10, in_chans=c, **KWARGS[args.model])
        run = {
            "model": args.model,
            "model_kwargs": KWARGS[args.model],
            "num_classes": 10,
            "in_chans": c,
            "input_size": [c, h, w],
            "classes": [f"class{i}" for i in range(10)],
        }
        ckpt = root / "model.safetensors"
        cnnzoo.save_weights(model, ckpt, metadata={"cnnzoo_run": run})

        floor, _, _ = peak_rss(
            [sys.executable, "-c", FLOOR, str(ckpt), str(c), str(h), str(w), str(args.batch_size)], env
        )
        rows = []
        for n in sizes:
            folder = root / f"n{n}"
            t0 = time.perf_counter()
            size = write_jpegs(folder, n)
            made = time.perf_counter() - t0
            argv = [sys.executable, "-m", "cnnzoo", "predict", str(ckpt), str(folder), "--format", "csv"]
            argv += ["--threads", "1", "--no-progress", "--batch-size", str(args.batch_size)]
            rss, seconds, ran = peak_rss(argv, env)
            eager, _, _ = peak_rss([*argv, "--no-fast"], env)
            naive = float("nan")
            if n <= args.naive_max:
                naive, _, _ = peak_rss(
                    [sys.executable, "-c", NAIVE, str(ckpt), str(c), str(h), str(w), str(folder)], env
                )
            rows.append((n, size / 2**20, rss, rss / floor, eager, naive, seconds, n / seconds, ran))
            print(f"  N={n}: {made:.0f}s to write the images, {seconds:.0f}s to predict", file=sys.stderr)

    load = os.getloadavg()[0]
    cpu = platform.processor() or platform.machine()
    print(f"cnnzoo predict peak RSS, {args.model} at {c}x{h}x{w}, batch {args.batch_size}, 1 thread")
    print(
        f"machine: {os.cpu_count()}-core {cpu}, torch {torch.__version__}, load average {load:.1f} at the end"
    )
    print(f"floor (same model, bare forward of one batch, fresh process): {floor:.0f} MiB")
    print()
    print(
        "| images | JPEGs on disk (MiB) | peak RSS (MiB) | vs floor | path | wall (s) | images/s "
        "| peak RSS, --no-fast (MiB) | whole-batch predict (MiB) |"
    )
    print("| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for n, disk, rss, ratio, eager, naive, seconds, rate, ran in rows:
        old = "not run" if naive != naive else f"{naive:.0f}"
        path = ran.split(" (")[0]
        print(
            f"| {n:,} | {disk:.0f} | {rss:.0f} | {ratio:.2f}x | {path} | {seconds:.1f} | {rate:.0f} "
            f"| {eager:.0f} | {old} |"
        )


if __name__ == "__main__":
    main()
