"""The architecture explorer for the whole zoo: time to build it, page size, load time in chromium.

Part 1 builds the page of every registered model the way `cnnzoo explore` does (each model
profiled on the meta device at its default input size) and reports seconds in all, the slowest
models, and the page's bytes (how much of them is the embedded JSON).

Part 2 opens the page in headless chromium (the tests' WebDriver client, tests/browser.py) and
times, from navigation start, when the first model is drawn. The baseline, timed in the same
run and interleaved with it, is the least any page carrying this data can do: the same bytes
of JSON in the same kind of page, parsed and nothing drawn. The ratio says what drawing the
table and the charts costs on top of carrying the data. It also times switching to the largest
model (resnet1202's 1,200 rows) and to two models side by side.

    python benchmarks/bench_explorer.py                     # whole zoo, 7 rounds
    python benchmarks/bench_explorer.py --screenshot docs/img/explorer.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import Browser, find_tool
from cnnzoo.analysis.explorer import explorer_data, render_explorer

BASELINE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'">
</head><body><script type="application/json" id="d">{data}</script><script>
const d = JSON.parse(document.getElementById("d").textContent);
document.body.setAttribute("data-ready-ms", performance.now().toFixed(1));
document.body.setAttribute("data-models", d.models.length);
</script></body></html>"""

CHOOSE = """
const [a, b] = arguments;
document.getElementById("pick-a").value = a;
document.getElementById("pick-b").value = b;
document.getElementById("pick-b").dispatchEvent(new Event("change"));
return Number(document.body.dataset.renderMs);
"""


def build(threads: int) -> tuple[dict, float, list[tuple[float, str]]]:
    torch.set_num_threads(threads)
    times: list[tuple[float, str]] = []
    last = [time.perf_counter()]

    def progress(done: int, total: int, name: str) -> None:
        now = time.perf_counter()
        times.append((now - last[0], name))
        last[0] = now
        print(f"\r  profiled {done}/{total} {name:<24}", end="", file=sys.stderr, flush=True)

    start = time.perf_counter()
    data = explorer_data(progress=progress)
    print(file=sys.stderr)
    return data, time.perf_counter() - start, sorted(times, reverse=True)


def ready_ms(browser: Browser, page: Path, fragment: str = "") -> float:
    browser.open(page.resolve().as_uri() + fragment)
    deadline = time.monotonic() + 30
    while (value := browser.js("return document.body && document.body.dataset.readyMs")) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{page} never got ready")
        time.sleep(0.02)
    return float(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--screenshot", metavar="PNG", help="also save a screenshot (vgg16 vs resnet50)")
    args = parser.parse_args()
    chromium, chromedriver = find_tool("chromium", "chromium-browser"), find_tool("chromedriver")
    if chromium is None or chromedriver is None:
        print(
            "needs chromium and chromedriver (apt-get install -y chromium chromium-driver)", file=sys.stderr
        )
        return 2
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {args.threads} thread(s)"
    )

    data, build_s, slowest = build(args.threads)
    html = render_explorer(data)
    payload = json.dumps(data, separators=(",", ":"))
    rows = sum(len(m["rows"]) for m in data["models"])
    print(f"\n## Building the page: {len(data['models'])} models, {rows:,} table rows")
    print(
        f"profiling + rendering: {build_s:.1f} s; slowest: "
        + ", ".join(f"{n} {s:.1f} s" for s, n in slowest[:3])
    )
    print(f"page: {len(html.encode()):,} bytes, of which JSON {len(payload.encode()):,}")

    with tempfile.TemporaryDirectory() as tmp:
        page, base = Path(tmp) / "explorer.html", Path(tmp) / "baseline.html"
        page.write_text(html, encoding="utf-8")
        base.write_text(BASELINE.replace("{data}", payload.replace("</", "<\\/")), encoding="utf-8")
        browser = Browser(chromium, chromedriver)
        try:
            explorer, baseline, big, pair = [], [], [], []
            ready_ms(browser, page)  # warm-up: the first load also starts the renderer
            for _ in range(args.rounds):  # interleaved, so load drift hits both alike
                baseline.append(ready_ms(browser, base))
                explorer.append(ready_ms(browser, page))
                big.append(browser.js(CHOOSE, "resnet1202", ""))
                pair.append(browser.js(CHOOSE, "vgg16", "resnet50"))
            errors = [e for e in browser.console() if e.get("level") == "SEVERE"]
            if args.screenshot:
                browser.set_window(1400, 1250)
                browser.open("about:blank")  # a fresh load at the new width, not a fragment change
                ready_ms(browser, page, "#a=vgg16&b=resnet50")
                Path(args.screenshot).write_bytes(browser.screenshot())
                print(f"wrote {args.screenshot}", file=sys.stderr)
        finally:
            browser.close()
    med = statistics.median
    print(f"\n## Loading it in headless chromium (median of {args.rounds}, ms from navigation start)")
    print(f"{'page':<52} {'ms':>8} {'ratio':>7}")
    print(f"{'baseline: same JSON parsed, nothing drawn':<52} {med(baseline):>8.0f} {1.0:>7.2f}")
    print(
        f"{'explorer: first model drawn (table + 4 charts)':<52} {med(explorer):>8.0f} {med(explorer) / med(baseline):>7.2f}"
    )
    print(f"{'switch to resnet1202 (render only)':<52} {med(big):>8.0f}")
    print(f"{'switch to vgg16 vs resnet50 (render only)':<52} {med(pair):>8.0f}")
    print(f"console errors: {len(errors)}; load average now {os.getloadavg()[0]:.2f}")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
