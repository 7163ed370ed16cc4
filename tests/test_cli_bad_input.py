"""Bad invocations of every verb: exit 2, one line on stderr, no traceback, nothing changed.

Each case runs `cnnzoo` in-process against a small workspace (an image folder, a trained run, an
image, damaged files, an existing output) whose files are hashed before and after: a refused
command must leave everything the user had as it was. The cases are the fault-injection pass's
bad flags, hostile and corrupt files and unwritable outputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnzoo.cli.main import main

UNWRITABLE = "/sys/cnnzoo-out"  # sysfs refuses new files, even to root (tests may run as root)


def _draw(kind: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 40, (16, 16)).astype(np.uint8)
    if kind == 0:
        img[4:12, 4:12] = 220
    else:
        img[::3] = 220
    return img


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The workspace: folder/ (two classes), run/ (a trained LeNet-5), files good and bad."""
    root = tmp_path_factory.mktemp("ws")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c, cls in enumerate(("square", "stripes")):
            (root / "folder" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_draw(c, rng), mode="L").save(root / "folder" / split / cls / f"{i}.png")
    Image.fromarray(_draw(0, rng), mode="L").save(root / "image.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("a file the user keeps\n")
    (root / "exists.onnx").write_bytes(b"an export the user keeps")
    (root / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    (root / "pickle.pth").write_bytes(b"\x80\x04\x95not really a pickle")
    (root / "reports" / "claim").mkdir(parents=True)
    (root / "reports" / "claim" / "result.json").write_text("{not json")
    (root / "emptydir").mkdir()
    code = main(
        [
            "train",
            "lenet5",
            "--data",
            f"imagefolder:{root / 'folder'}",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--model-arg",
            "img_size=16",
            "--out",
            str(root / "run"),
            "--no-summary",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# (argv with {ws} for the workspace, a fragment the one line must contain)
CASES = [
    # -- the model zoo: list, info, summary, compare
    (["list", "--format", "bogus"], "invalid choice"),
    (["list", "no_such_model*"], "no model matches"),
    (["list", "--family", "nope"], "nope"),
    (["info", "resnet5O"], "resnet50"),
    (["info"], "the following arguments are required"),
    (["summary", "vgg16", "--input", "3x2x2"], "too small"),
    (["summary", "vgg16", "--input", "banana"], "CxHxW"),
    (["summary", "vgg16", "--input", "3x0x224"], "3x0x224"),
    (["summary", "vgg16", "--depth", "-1"], "--depth"),
    (["summary", "no_such"], "no_such"),
    (["compare", "vgg16", "bogus"], "bogus"),
    (["compare", "vgg16", "resnet18", "--plot", f"{UNWRITABLE}/p.png"], "cnnzoo-out"),
    (["compare", "vgg16", "--plot", "{ws}/notes.txt"], "--overwrite"),
    (["--no-such-flag"], "VERB"),
    (["list", "--no-such-flag"], "unrecognized arguments"),
    (["no-such-verb"], "invalid choice"),
    # -- data
    (["data", "fetch", "imagenet21k"], "imagenet21k"),
    (["data", "fetch", "imagefolder:{ws}/missing"], "not a directory"),
    (["data", "fetch", "imagefolder:{ws}/emptydir"], "no images"),
    (["data", "fetch", "fashion-mnist", "--source", "ftp"], "invalid choice"),
    (["data", "list", "--format", "xml"], "invalid choice"),
    (["data", "shard", "mnist", "--out", "{ws}/shards"], "imagefolder:PATH"),
    (["data", "shard", "imagefolder:{ws}/folder", "--out", "{ws}/notes.txt"], "notes.txt"),
    (["data", "shard", "imagefolder:{ws}/folder", "--out", "{ws}/s", "--shard-size", "0"], "--shard-size"),
    # -- train
    (["train", "lenet5"], "which dataset"),
    (["train", "--data", "mnist"], "which model"),
    (["train", "nosuchnet", "--data", "mnist"], "nosuchnet"),
    (["train", "lenet5", "--data", "nosuchdata"], "nosuchdata"),
    (["train", "lenet5", "--data", "fashion-mnist", "--out", "{ws}/r1"], "cnnzoo data fetch"),
    (["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--out", "{ws}/run"], "--resume"),
    (["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--out", "{ws}/notes.txt"], "notes.txt"),
    (["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--out", UNWRITABLE], "cnnzoo-out"),
    (["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--epochs", "0", "--out", "{ws}/r2"], "epochs"),
    (
        ["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--batch-size", "0", "--out", "{ws}/r3"],
        "batch",
    ),
    (["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--lr", "-1", "--out", "{ws}/r4"], "--lr"),
    (["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--lr", "nan", "--out", "{ws}/r4"], "--lr"),
    (["train", "lenet5", "--data", "mnist", "--recipe", "nope"], "nope"),
    (["train", "resnet18", "--data", "mnist", "--recipe", "fast"], "imagenet-sgd"),
    (["train", "lenet5", "--data", "mnist", "--model-arg", "noequals"], "KEY=VALUE"),
    (
        ["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--model-arg", "act=leaky_relu:2"],
        "slope '2' in 'leaky_relu:2': it must be a number in [0, 1), e.g. leaky_relu:0.1",
    ),
    (["summary", "lenet5", "--model-arg", "act=relu:0.1"], "'relu' takes no parameter"),
    (["train", "lenet5", "--data", "mnist", "--optimizer", "lion"], "invalid choice"),
    (["train", "lenet5", "--data", "mnist", "--milestones", "x,y"], "--milestones"),
    (["train", "--resume", "{ws}/emptydir"], "holds no run"),
    (["train", "--resume", "{ws}/run", "--batch-size", "4"], "batch_size"),
    (["train", "--resume", "{ws}/run", "--overwrite"], "--overwrite"),
    (
        ["train", "resnet18", "--data", "imagefolder:{ws}/folder", "--pretrained", "{ws}/pickle.pth"],
        "pickle.pth",
    ),
    (
        ["train", "lenet5", "--data", "imagefolder:{ws}/folder", "--pretrained", "{ws}/missing.pth"],
        "missing.pth",
    ),
    # -- eval and predict
    (["eval", "{ws}/missing"], "missing"),
    (["eval", "{ws}/emptydir"], "emptydir"),
    (["eval", "{ws}/bad.safetensors", "--model", "lenet5"], "bad.safetensors"),
    (["eval", "{ws}/run", "--data", "nosuchdata"], "nosuchdata"),
    (["eval", "{ws}/run", "--batch-size", "0"], "--batch-size"),
    (["eval", "{ws}/run", "--confusion", f"{UNWRITABLE}/c.png"], "cnnzoo-out"),
    (["predict", "{ws}/run", "{ws}/missing.png"], "missing.png"),
    (["predict", "{ws}/run", "{ws}/corrupt.png"], "corrupt.png"),
    (["predict", "{ws}/run", "{ws}/empty.png"], "empty.png"),
    (["predict", "{ws}/run", "{ws}/image.png", "--top-k", "0"], "--top-k"),
    (["predict", "{ws}/pickle.pth", "{ws}/image.png", "--model", "lenet5"], "pickle.pth"),
    (["predict", "{ws}/notes.txt", "{ws}/image.png"], "notes.txt"),
    # -- export and bench
    (["export", "lenet5", "--out", "{ws}/exists.onnx"], "--overwrite"),
    (["export", "lenet5", "--format", "torchscript", "--out", f"{UNWRITABLE}/m.pt"], "cnnzoo-out"),
    (
        ["export", "lenet5", "--input", "1x2x2", "--format", "torchscript", "--out", "{ws}/x.pt"],
        "expects input",
    ),
    (["export", "nosuchnet"], "nosuchnet"),
    (["export", "{ws}/bad.safetensors", "--model", "lenet5", "--out", "{ws}/x.pt"], "bad.safetensors"),
    (["export", "lenet5", "--batch", "0", "--out", "{ws}/x.pt", "--format", "torchscript"], "--batch"),
    (["bench", "lenet5", "--batch", "0"], "--batch"),
    (["bench", "lenet5", "--paths", "warp"], "warp"),
    (["bench", "lenet5", "--device", "tpu"], "tpu"),
    (["bench", "lenet5", "--rounds", "0"], "--rounds"),
    # -- counting
    (["count", "train", "--root", "{ws}/missing", "--out", "{ws}/c1"], "missing"),
    (["count", "train", "--root", "{ws}/emptydir", "--out", "{ws}/c1"], "emptydir"),
    (["count", "train", "--root", "{ws}/emptydir", "--crop", "big", "--out", "{ws}/c1"], "--crop"),
    (["count", "train", "--root", "{ws}/emptydir", "--scale", "2,1", "--out", "{ws}/c1"], "--scale"),
    (["count", "eval", "{ws}/missing", "--root", "{ws}/emptydir"], "missing"),
    (["count", "predict", "{ws}/missing", "{ws}/image.png"], "missing"),
    (["count", "predict", "{ws}/run", "{ws}/image.png", "--out", UNWRITABLE], "cnnzoo-out"),
    (["count", "predict", "{ws}/run", "{ws}/image.png", "--out", "{ws}/notes.txt"], "notes.txt"),
    (["eval", "{ws}/run", "--confusion", "{ws}/notes.txt"], "--overwrite"),
    (["eval", "{ws}/run", "--data", "mnist"], "cnnzoo data fetch"),
    (["predict", "{ws}/run", "{ws}/emptydir"], "emptydir"),
    (["predict", "{ws}/run", "{ws}/image.png", "--out", "{ws}/notes.txt"], "--overwrite"),
    (["count", "synth", "{ws}/notes.txt"], "notes.txt"),
    (["count", "synth", "{ws}/sy", "--size", "0x0"], "--size"),
    (["count", "synth", "{ws}/sy", "--parts", "C"], "C"),
    # -- looking inside: visualize and explore
    (["visualize", "filters", "nosuchnet", "--out", "{ws}/v"], "nosuchnet"),
    (["visualize", "filters", "{ws}/run", "--layer", "nolayer", "--out", "{ws}/v"], "nolayer"),
    (["visualize", "activations", "{ws}/run", "{ws}/corrupt.png", "--out", "{ws}/v"], "corrupt.png"),
    (["visualize", "gradcam", "{ws}/run", "{ws}/missing.png", "--out", "{ws}/v"], "missing.png"),
    (["visualize", "filters", "{ws}/run", "--out", "{ws}/notes.txt"], "notes.txt"),
    (["visualize", "warp", "{ws}/run"], "invalid choice"),
    (["explore", "nosuchnet", "--out", "{ws}/e.html"], "nosuchnet"),
    (["explore", "lenet5", "--out", "{ws}/notes.txt"], "--overwrite"),
    (["explore", "lenet5", "--out", "{ws}/emptydir"], "folder"),
    # -- experiments and reports
    (["experiment", "nosuchclaim"], "nosuchclaim"),
    (["experiment", "degradation", "--set", "epochs=two"], "epochs is int"),
    (["experiment", "degradation", "--set", "epoch=2"], "has no setting epoch"),
    (["experiment", "degradation", "--set", "epochs"], "key=value"),
    (["experiment", "degradation", "--budget", "huge"], "invalid choice"),
    # No CIFAR-10 in the workspace's cache (and, here, no ImageNet weights): the file to put where.
    (["experiment", "finetune", "--budget", "tiny", "--out", "{ws}/ft"], "--set"),
    (["report", "--reports", "{ws}/missing"], "missing"),
    (["report", "--reports", "{ws}/reports", "--out", "{ws}/page.html"], "result.json"),
    (["report", "--reports", "{ws}/emptydir", "--out", "{ws}/notes.txt"], "notes.txt"),
    (["report", "--reports", "{ws}/emptydir", "--out", f"{UNWRITABLE}/index.html"], "cnnzoo-out"),
    (["report", "{ws}/emptydir"], "holds no run"),
    (["report", "{ws}/missing"], "missing"),
    (["report", "{ws}/reports"], "--reports"),
    (["report", "{ws}/run", "{ws}/run"], "--out DIR"),
    (["report", "{ws}/run", "{ws}/run", "--out", "{ws}/both"], "named twice"),
    (["report", "{ws}/run", "--out", "{ws}/notes.txt"], "notes.txt"),
    (["report", "{ws}/run", "--out", f"{UNWRITABLE}/r"], "cnnzoo-out"),
    (["report", "{ws}/run", "--batch-size", "0"], "--batch-size"),
    (["eval", "--ensemble", "{ws}/run"], "two runs"),
    (["eval", "{ws}/run", "{ws}/run"], "--ensemble"),
    (["eval", "--ensemble", "{ws}/run", "{ws}/missing"], "missing"),
]


@pytest.mark.parametrize(("argv", "fragment"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_invocation(ws, capsys, monkeypatch, argv, fragment):
    monkeypatch.setenv("CNNZOO_DATA", str(ws / "cache"))
    monkeypatch.chdir(ws)
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    before = _hashes(ws)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    _out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}; stderr:\n{err}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"stderr has {len(lines)} lines:\n{err}"
    assert "error" in lines[0] and fragment in lines[0], lines[0]
    after = _hashes(ws)
    assert {k: v for k, v in after.items() if k in before} == before, "a refused command changed a file"
    new = sorted(set(after) - set(before))
    assert not new, f"a refused command left files behind: {new}"


def test_there_are_enough_cases():
    assert len(CASES) >= 60
    verbs = {argv[0] for argv, _ in CASES}
    assert verbs >= {
        "list",
        "info",
        "summary",
        "compare",
        "data",
        "train",
        "eval",
        "predict",
        "export",
        "bench",
        "count",
        "experiment",
        "report",
    }


def test_json_of_a_refused_run_is_not_written(ws):
    # The trained run of the workspace is intact and readable after all the refusals above.
    final = json.loads((ws / "run" / "final.json").read_text())
    assert "test_top1" in final
