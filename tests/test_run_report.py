"""`cnnzoo report RUN [RUN...]`: a classification run (on an image folder, read through the real
data path), a counting run (tiny synthetic ShanghaiTech), a pair compared, and the parts that
need no data when the data is gone. The HTML page is checked to be self-contained: every image
an inlined PNG that decodes, no address outside the page."""

from __future__ import annotations

import base64
import csv
import io
import json
import shlex
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from browser import browser_session
from cnnzoo.cli.main import build_parser, main
from cnnzoo.counting import CountConfig, train_counter, write_synthetic
from cnnzoo.train.run_report import read_run, repeat_command
from cnnzoo.train.rundir import _remove_run

QUIET = lambda *_: None  # noqa: E731

PAGE_STATE = """
const imgs = Array.from(document.querySelectorAll("img.plot"));
const box = document.getElementById("image-check");
return {
  images: imgs.map(i => [i.dataset.file, i.complete, i.naturalWidth]),
  check: [box.dataset.loaded, box.dataset.total, box.className],
  external: performance.getEntriesByType("resource").map(r => r.name).filter(n => !n.startsWith("data:")),
};
"""


def _draw(kind: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 40, (16, 16)).astype(np.uint8)
    if kind == 0:
        img[4:12, 4:12] = 220
    else:
        img[::3] = 220
    return img


@pytest.fixture(scope="module")
def classified(tmp_path_factory) -> Path:
    """An image folder of two classes and two LeNet-5 runs on it: from scratch (seed 0), and started
    from the first run's weights (the "pretrained" arm of the assignment's comparison)."""
    root = tmp_path_factory.mktemp("classified")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 6)):
        for c, cls in enumerate(("square", "stripes")):
            (root / "folder" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_draw(c, rng), mode="L").save(root / "folder" / split / cls / f"{i}.png")
    common = ["--data", f"imagefolder:{root / 'folder'}", "--batch-size", "8", "--model-arg", "img_size=16"]
    common += ["--no-summary", "--no-progress", "--threads", "1", "--val-fraction", "0.25"]
    before = torch.get_num_threads()
    try:
        assert main(["train", "lenet5", *common, "--epochs", "2", "--out", str(root / "scratch")]) == 0
        pretrained = str(root / "scratch" / "model.safetensors")
        argv = ["train", "lenet5", *common, "--epochs", "1", "--lr", "0.003", "--pretrained", pretrained]
        assert main([*argv, "--seed", "1", "--out", str(root / "tuned")]) == 0
    finally:
        torch.set_num_threads(before)
    return root


@pytest.fixture(scope="module")
def counted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("counted")
    write_synthetic(root / "crowds", parts=("B",), train=12, test=5, size=(64, 64), max_people=30, seed=1)
    before = torch.get_num_threads()
    try:
        config = CountConfig(
            root=str(root / "crowds"),
            part="B",
            model="resnet18_counter",
            epochs=2,
            batch_size=4,
            lr=1e-3,
            crop=None,
            out=str(root / "run"),
            threads=1,
            progress=False,
        )
        train_counter(config, log=QUIET)
    finally:
        torch.set_num_threads(before)
    return root


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.addresses: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if tag == "img" and name == "src":
                self.images.append(value or "")
            elif name in ("src", "href"):
                self.addresses.append(value or "")


def check_self_contained(page: Path) -> list[Image.Image]:
    """The page's images, decoded; fails if any is not an inlined PNG or anything is fetched."""
    text = page.read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(text)
    assert "link" not in parser.tags and not parser.addresses, (
        parser.addresses
    )  # no style sheet, no script file
    assert "http://" not in text and "https://" not in text
    images = []
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        images.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
        images[-1].load()  # decodes the whole image: a truncated PNG fails here
    return images


def _markdown_images(md: Path) -> list[str]:
    return [line[line.index("](") + 2 : -1] for line in md.read_text().splitlines() if line.startswith("![")]


def test_report_of_a_classification_run(classified, capsys, monkeypatch):
    monkeypatch.setenv("CNNZOO_DATA", str(classified / "cache"))
    run = classified / "scratch"
    assert main(["report", str(run)]) == 0
    assert "wrote" in capsys.readouterr().out
    out = run / "report"
    data = json.loads((out / "report.json").read_text())
    final = json.loads((run / "final.json").read_text())
    (entry,) = data["runs"]
    # Recomputed on the test split with the selected weights: the run's own test score.
    assert entry["test_top1"] == pytest.approx(final["test_top1"])
    assert sum(map(sum, entry["confusion"])) == entry["samples"] == 12
    assert entry["classes"] == ["square", "stripes"] and not data["missing"]
    md = (out / "report.md").read_text()
    assert "Confusion matrix" in md and "Per-class test accuracy" in md and "cnnzoo train lenet5" in md
    assert f"{100 * final['test_top1']:.2f}%" in md
    files = _markdown_images(out / "report.md")
    assert files == ["curves.png", "confusion.png"] and all((out / f).is_file() for f in files)
    images = check_self_contained(out / "report.html")
    assert len(images) == 2 and all(im.width > 100 for im in images)
    # Never silently replaced; --overwrite replaces it.
    assert main(["report", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["report", str(run), "--overwrite"]) == 0


def test_the_rebuilt_command_resolves_to_the_run_s_settings(classified, counted):
    from cnnzoo.cli.count_cmd import _count_config
    from cnnzoo.cli.train_cmd import _config_from_args

    parser = build_parser()
    for run in (classified / "scratch", classified / "tuned"):
        record = read_run(run)
        argv = shlex.split(repeat_command(record))
        assert argv[:3] == ["cnnzoo", "train", "lenet5"]
        resolved = _config_from_args(parser.parse_args(argv[1:])).to_dict()
        for key, value in record.config.items():
            if key in resolved and key not in ("threads", "progress", "summary", "overwrite", "resume"):
                assert resolved[key] == value, key
    assert "--pretrained" in repeat_command(read_run(classified / "tuned"))
    record = read_run(counted / "run")
    argv = shlex.split(repeat_command(record))
    assert argv[:3] == ["cnnzoo", "count", "train"]
    resolved = _count_config(parser.parse_args(argv[1:])).to_dict()
    for key, value in record.config.items():
        if key in resolved and key not in ("threads", "progress", "overwrite", "resume", "device"):
            assert resolved[key] == value, key


def test_report_of_a_counting_run(counted, capsys):
    run = counted / "run"
    assert main(["report", str(run), "--out", str(counted / "page")]) == 0
    out = counted / "page"
    data = json.loads((out / "report.json").read_text())
    (entry,) = data["runs"]
    assert entry["test_images"] == 5 and not data["missing"]
    # The density maps drawn now give the counts the run measured on the same images in training.
    with (run / "test_predictions.csv").open() as f:
        recorded = {r["image"]: float(r["estimate"]) for r in csv.DictReader(f)}
    drawn = entry["density_images"]
    assert len(drawn) == 3 and len({d["image"] for d in drawn}) == 3
    trues = [d["true"] for d in drawn]
    assert trues == sorted(trues)  # the fewest heads, the median, the most
    for d in drawn:
        assert d["estimate"] == pytest.approx(recorded[d["image"]], abs=1e-3)
    md = (out / "report.md").read_text()
    assert "test MAE of predicting the training mean" in md and "cnnzoo count train --root" in md
    assert _markdown_images(out / "report.md") == [
        "curves.png",
        "scatter.png",
        "density-1.png",
        "density-2.png",
        "density-3.png",
    ]
    assert len(check_self_contained(out / "report.html")) == 5


def test_without_its_data_a_report_keeps_what_needs_none(classified, counted, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path / "cache"))
    out = tmp_path / "counting"
    assert (
        main(["report", str(counted / "run"), "--out", str(out), "--data-root", str(tmp_path / "none")]) == 0
    )
    printed = capsys.readouterr().out
    assert "not shown: density maps over test images need ShanghaiTech Part B" in printed
    assert _markdown_images(out / "report.md") == ["curves.png", "scatter.png"]
    assert "Not shown:" in (out / "report.md").read_text()
    check_self_contained(out / "report.html")
    # A classification run whose image folder is gone: everything but the test-set parts.
    moved = tmp_path / "moved"
    (classified / "folder").rename(moved)
    try:
        assert main(["report", str(classified / "tuned"), "--out", str(tmp_path / "cls")]) == 0
    finally:
        moved.rename(classified / "folder")
    data = json.loads((tmp_path / "cls" / "report.json").read_text())
    assert len(data["missing"]) == 1 and "confusion matrix" in data["missing"][0]
    assert data["files"] == ["curves.png"]


@pytest.fixture(scope="module")
def browser():
    yield from browser_session("the run report's page")


def test_comparison_of_two_runs(classified, capsys, monkeypatch, tmp_path, browser):
    monkeypatch.setenv("CNNZOO_DATA", str(classified / "cache"))
    runs = [str(classified / "scratch"), str(classified / "tuned")]
    assert main(["report", *runs]) == 2
    assert "--out DIR" in capsys.readouterr().err
    out = tmp_path / "compare"
    assert main(["report", *runs, "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    columns, rows = data["comparison"]["columns"], data["comparison"]["rows"]
    assert columns[:3] == ["run", "model", "start"] and "test top-1 (last)" in columns
    assert [r[0] for r in rows] == ["scratch", "tuned"]
    assert rows[0][2] == "from scratch" and rows[1][2] == "pretrained (model.safetensors)"
    for row, run in zip(rows, runs, strict=True):
        final = json.loads((Path(run) / "final.json").read_text())
        assert row[columns.index("test top-1")] == f"{100 * final['test_top1']:.2f}%"
        assert row[columns.index("epochs")] == final["epochs"]
        assert row[columns.index("params")] == final["params"]
    assert [r["test_top1"] for r in data["runs"]] == pytest.approx(
        [json.loads((Path(r) / "final.json").read_text())["test_top1"] for r in runs]
    )
    files = _markdown_images(out / "report.md")
    assert files[0] == "compare-curves.png" and "run2-confusion.png" in files
    assert len(check_self_contained(out / "report.html")) == len(files) == 5
    # In a real browser: every plot decoded, the page's own check agrees, nothing fetched.
    browser.open(out / "report.html")
    state = browser.js(PAGE_STATE)
    assert [f for f, *_ in state["images"]] == files
    assert all(complete and width > 0 for _, complete, width in state["images"]), state["images"]
    assert state["check"] == ["5", "5", ""] and state["external"] == []
    assert not [e for e in browser.console() if e.get("level") == "SEVERE"]


def test_mixed_runs_and_non_runs_are_refused_in_one_line(classified, counted, capsys, tmp_path):
    assert (
        main(["report", str(classified / "scratch"), str(counted / "run"), "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "cannot compare classification with counting runs" in err and "\n" not in err
    (tmp_path / "reports" / "claim").mkdir(parents=True)
    (tmp_path / "reports" / "claim" / "result.json").write_text("{}")
    assert main(["report", str(tmp_path / "reports")]) == 2
    assert "--reports" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_overwriting_a_run_removes_its_report(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("# old\n")
    (tmp_path / "notes.txt").write_text("kept")
    _remove_run(tmp_path)
    assert not (tmp_path / "report").exists() and (tmp_path / "notes.txt").exists()
