"""Bad input gets one line and exit 2, never a traceback, and touches nothing (first cases of the
fault-injection issue: values that slipped through, untrusted pointers and figure entries, pipes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cnnzoo.cli.main import main
from cnnzoo.train import TrainConfig
from cnnzoo.train.checkpoint import latest_checkpoint
from cnnzoo.weights import CheckpointError

BASE = ["train", "lenet5", "--data", "fashion-mnist", "--no-summary"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--warmup", "nan"], "--warmup must be a finite number"),
        (["--weight-decay", "-1"], "--weight-decay, --warmup and --momentum must be >= 0"),
        (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
        (["--gamma", "0"], "--gamma must be in (0, 1]"),
        (["--val-fraction", "1"], "val_fraction must be in [0, 1)"),
        (["--val-fraction", "nan"], "--val-fraction must be a finite number"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--device", "bogus"], "--device 'bogus' is not a device"),
        (["--model-arg", "bogus=1"], "lenet5 does not take that option"),
    ],
)
def test_bad_training_values_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    assert main([*BASE, "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnzoo: error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()  # nothing left behind


def test_cuda_without_a_gpu_is_named(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    assert main([*BASE, "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    assert "no CUDA GPU is available here" in capsys.readouterr().err


def test_config_refuses_non_finite_values_from_python():
    with pytest.raises(ValueError, match="--momentum must be a finite number"):
        TrainConfig(model="lenet5", data="x", momentum=float("nan")).validate()


@pytest.mark.parametrize("name", ["../../elsewhere", "/tmp", "..", "sub/epoch-0001", "link"])
def test_latest_may_name_only_a_checkpoint_folder_beside_it(tmp_path, name):
    ckpts = tmp_path / "run" / "checkpoints"
    outside = tmp_path / "elsewhere"
    (outside / "x").mkdir(parents=True)
    (outside / "state.json").write_text("{}")
    (ckpts / "sub" / "epoch-0001").mkdir(parents=True)
    (ckpts / "sub" / "epoch-0001" / "state.json").write_text("{}")
    (ckpts / "link").symlink_to(outside)
    (ckpts / "latest").write_text(json.dumps({"checkpoint": name}))
    with pytest.raises(CheckpointError, match="names"):
        latest_checkpoint(tmp_path / "run")


NOISY_LIST = """
import sys
import cnnzoo.cli.main as cli

def noisy(args):  # far more than a pipe holds, so the writer meets the closed pipe
    for i in range(200_000):
        print("row", i)
    return 0

cli.cmd_list = noisy
sys.exit(cli.main(["list"]))
"""


def test_a_closed_pipe_ends_quietly():
    # `cnnzoo list | head -1`: the reader leaves after one line; no BrokenPipeError traceback.
    script = f"{sys.executable} -c '{NOISY_LIST}' | head -1; echo status=${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines()[0] == "row 0"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert "status=141" in proc.stdout  # 128 + SIGPIPE, as a Unix tool's


# -- trusted headers, damaged training state, leftovers -------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-epoch LeNet-5 run on the fake images (tests/train_fakes.py)."""
    import train_fakes
    from cnnzoo.train import train

    tmp = tmp_path_factory.mktemp("trained")
    train(train_fakes.config(tmp, epochs=2), data=train_fakes.make_loaders)
    return tmp / "run"


def _with_header(src, dst, **changes):
    """A copy of a weights file whose cnnzoo_run header has `changes` ."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    if "_whole" in changes:  # the header replaced as a whole
        meta["cnnzoo_run"] = changes["_whole"]
    else:
        meta["cnnzoo_run"] = json.dumps({**json.loads(meta["cnnzoo_run"]), **changes})
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_classes": 10**10}, "'num_classes' is 10000000000"),
        ({"num_classes": 7}, "header says 7 classes but its"),
        ({"in_chans": 10**6}, "'in_chans'"),
        ({"input_size": [1, 10**6, 10**6]}, "'input_size'"),
        ({"model_kwargs": [1, 2]}, "'model_kwargs' is a list"),
        ({"classes": [{"x": 1}]}, "'classes' holds something other than names"),
        ({"_whole": "[1, 2, 3]"}, "cnnzoo_run header is a list"),
        ({"_whole": "{not json"}, "cnnzoo_run header is not JSON"),
    ],
)
def test_untrusted_headers_are_refused_before_anything_is_built(trained, tmp_path, capsys, changes, message):
    """Issue 16: a header claiming a 1e10-way head made `predict` try to allocate terabytes."""
    from PIL import Image

    bad = _with_header(trained / "model.safetensors", tmp_path / "bad.safetensors", **changes)
    Image.new("L", (12, 12)).save(tmp_path / "x.png")
    predict = ["predict", str(bad), str(tmp_path / "x.png"), "--format", "json"]
    export = ["export", str(bad), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]
    for argv in (predict, export):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not (tmp_path / "m.pt").exists()


def test_a_state_without_optimizer_is_named_on_resume(trained, tmp_path):
    import shutil

    import train_fakes
    from cnnzoo.train import train

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = sorted((run / "checkpoints").glob("epoch-*"))[-1]
    state = json.loads((ckpt / "state.json").read_text())
    del state["optimizer"]
    (ckpt / "state.json").write_text(json.dumps(state))
    # CheckpointError is one of the errors the CLI prints as one line with exit 2.
    with pytest.raises(CheckpointError, match=r"state.json lacks 'optimizer', so it cannot be resumed"):
        train(train_fakes.config(tmp_path, epochs=3, resume=True), data=train_fakes.make_loaders)


def test_a_crashed_pointer_write_leaves_nothing_behind(tmp_path):
    import train_fakes
    from cnnzoo.train import train

    train(train_fakes.config(tmp_path, epochs=1), data=train_fakes.make_loaders)
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / ".latest.abc123.tmp").write_text('{"checkpoint": "epoch-0')  # killed mid-write
    train(train_fakes.config(tmp_path, epochs=2, resume=True), data=train_fakes.make_loaders)
    assert not list(ckpts.glob(".latest.*.tmp"))
    assert json.loads((ckpts / "latest").read_text())["checkpoint"].startswith("epoch-0002")


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(tmp_path):
    """Issue 16: names starting with = + - @ were written raw into CSV (formula injection)."""
    import csv

    from cnnzoo.analysis.formats import csv_cell, render_rows
    from cnnzoo.counting.train import write_rows_csv

    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd"]
    assert [csv_cell(v) for v in hostile] == ["'" + v for v in hostile]
    assert [csv_cell(v) for v in ("-0.5", "plain", 3, -1.0, "1e3")] == ["-0.5", "plain", 3, -1.0, "1e3"]
    text = render_rows([{"name": v, "n": -1} for v in hostile], ["name", "n"], "csv")
    assert [row["name"] for row in csv.DictReader(text.splitlines())] == ["'" + v for v in hostile]
    rows = [{"image": "=cmd|' /C calc'!A0.jpg", "true": 3, "estimate": 2.5, "error": -0.5}]
    path = write_rows_csv(rows, tmp_path / "counts.csv")
    (row,) = csv.DictReader(path.read_text().splitlines())
    assert row["image"].startswith("'=") and row["error"] == "-0.5000"


def _tiny_disk(monkeypatch, free: int = 1 << 20):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(free * 2, free, free))


def test_export_on_a_full_disk_stops_before_writing(tmp_path, capsys, monkeypatch):
    """Issue 16: ONNX's writer aborted the process on a full disk (exit 134), leaving a temp folder."""
    _tiny_disk(monkeypatch)
    out = tmp_path / "lenet5.pt"
    assert main(["export", "lenet5", "--format", "torchscript", "--no-fold", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not enough free space" in err and "--out" in err and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []  # no file, no temporary folder


def test_training_on_a_full_disk_stops_before_the_first_epoch(tmp_path, monkeypatch):
    import train_fakes
    from cnnzoo.atomic import NotEnoughSpace
    from cnnzoo.train import train

    _tiny_disk(monkeypatch, free=1000)
    with pytest.raises(NotEnoughSpace, match="this run's checkpoints"):
        train(train_fakes.config(tmp_path), data=train_fakes.make_loaders)
    assert not (tmp_path / "run").exists()  # the folder it created is gone again


def test_a_failed_safetensors_write_is_one_line(capsys, monkeypatch):
    """safetensors reports I/O failures (a disk filling up mid-run) with its own exception type."""
    from safetensors.torch import save_file

    import cnnzoo.cli.main as cli

    def writes_where_it_cannot(args):
        save_file({"a": torch.zeros(4)}, "/sys/cnnzoo-weights.safetensors")  # sysfs refuses even root
        return 0

    monkeypatch.setattr(cli, "cmd_list", writes_where_it_cannot)
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnzoo: error: writing failed") and "\n" not in err, err


def test_an_empty_test_split_reports_no_figures_rather_than_zero(tmp_path):
    """Issue 16: an empty test split was reported as "top-1 0.00%"."""
    import train_fakes
    from cnnzoo.data import TensorLoader
    from cnnzoo.train import train

    train_l, val_l, test_l, info = train_fakes.make_loaders(batch_size=32)
    x, _ = next(iter(test_l))
    images = torch.zeros((0, *x.shape[1:]), dtype=torch.uint8)
    empty = TensorLoader(
        images, torch.zeros(0, dtype=torch.int64), batch_size=32, shuffle=False, pad_shards=False
    )
    lines: list[str] = []
    final = train(
        train_fakes.config(tmp_path, epochs=1), data=(train_l, val_l, empty, info), log=lines.append
    )
    assert "test_top1" not in final and "val_top1" in final
    assert any("the test split holds no images" in line for line in lines)
    from cnnzoo.cli.train_cmd import _final_line

    assert "test top-1" not in _final_line({**final, "out": "x"})


def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, monkeypatch):
    from PIL import Image

    from cnnzoo.counting.shanghaitech import load_rgb

    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels is over twice the limit
    with pytest.raises(ValueError, match=r"big.png' is larger than Pillow's safety limit of 1,000 pixels"):
        load_rgb(tmp_path / "big.png")


def test_nan_weights_are_named_not_printed_as_probabilities(trained, tmp_path, capsys):
    """Issue 16: NaN weights gave probability `nan` with exit 0."""
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    src = trained / "model.safetensors"
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(src))
    tensors["fc3.weight"][0, 0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    Image.new("L", (12, 12)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "nan.safetensors"), str(tmp_path / "x.png"), "--no-fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert "gives NaN or infinite outputs" in err and "\n" not in err, err


def test_eval_refuses_a_dataset_whose_classes_are_other_ones(trained):
    """Issue 19: `eval --data mnist` on a Fashion-MNIST run labelled digits "T-shirt/top"."""
    import train_fakes
    from cnnzoo.train.evaluate import evaluate

    def other_names(*args, **kwargs):
        train_l, val_l, test_l, info = train_fakes.make_loaders(*args, **kwargs)
        info.classes = tuple(f"other-{c}" for c in info.classes)
        return train_l, val_l, test_l, info

    assert evaluate(trained, data="fake", loaders=train_fakes.make_loaders)["samples"] > 0
    with pytest.raises(ValueError, match="evaluate on the run's own dataset"):
        evaluate(trained, data="fake", loaders=other_names)


def test_a_decompression_bomb_in_an_image_folder_is_refused_by_name(tmp_path, monkeypatch):
    from PIL import Image

    from cnnzoo.data import DataError
    from cnnzoo.data.imagefolder import scan_folder

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (8, 8)).save(tmp_path / cls / f"{i}.png")
    Image.new("L", (64, 64)).save(tmp_path / "b" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"big.png is larger than Pillow's safety limit"):
        scan_folder(tmp_path)
