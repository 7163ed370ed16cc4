"""CLI start-up: seconds of `cnnzoo --help`, `list` and `info` against `python -c 'import torch'`.

Every verb imports torch, so the interpreter importing torch is the floor, and the column that
matters is each command's cost beyond it. Each command runs in a fresh process, the commands
interleaved round by round (alternating order) so that a change in the machine's load hits all
alike; the table gives the median of `--rounds` runs and the load average at the start and end.

    python benchmarks/bench_startup.py               # 10 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "cnnzoo --help": [sys.executable, "-m", "cnnzoo", "--help"],
    "cnnzoo list": [sys.executable, "-m", "cnnzoo", "list"],
    "cnnzoo info resnet50": [sys.executable, "-m", "cnnzoo", "info", "resnet50"],
}


def seconds(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    for argv in COMMANDS.values():
        seconds(argv)  # warm-up: the page cache holds torch's files from here on
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    order = list(COMMANDS)
    for r in range(args.rounds):
        for k in order if r % 2 == 0 else order[::-1]:
            times[k].append(seconds(COMMANDS[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["python -c 'import torch'"]
    print(f"| command | seconds (median of {args.rounds}) | beyond `import torch` |")
    print("| --- | ---: | ---: |")
    for k, v in med.items():
        print(f"| `{k}` | {v:.2f} | +{v - floor:.2f} |")
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
