"""`cnnzoo list` and `cnnzoo info`: human tables, JSON and CSV for scripts, one-line errors."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torchvision

from cnnzoo import list_models, model_info
from cnnzoo.cli.main import main

# torchvision's published parameter counts (weights metadata "num_params"; also the torchvision
# model docs): ResNet-50 25,557,032 and ResNet-18 11,689,512.
RESNET50_PARAMS = 25_557_032
RESNET18_PARAMS = 11_689_512


def test_published_counts_are_torchvision_s():
    assert torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["num_params"] == RESNET50_PARAMS
    assert torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["num_params"] == RESNET18_PARAMS


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_table(capsys):
    code, out, err = run(capsys, "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "family", "params"]
    assert set(lines[1]) <= {"-", " "}
    row = next(line for line in lines if line.split()[0] == "resnet50")
    assert f"{RESNET50_PARAMS:,}" in row.split()
    assert len(lines) == 2 + len(list_models())


def test_list_pattern_json(capsys):
    code, out, _ = run(capsys, "list", "resnet*", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list_models("resnet*")
    assert all(fnmatch.fnmatchcase(r["name"], "resnet*") for r in rows)
    assert all(isinstance(r["params"], int) for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet50"]["params"] == RESNET50_PARAMS
    assert by_name["resnet18"]["params"] == RESNET18_PARAMS
    assert by_name["resnet50"]["family"] == "resnet"
    assert by_name["resnet50"]["torchvision"] == "resnet50"


def test_list_csv(capsys):
    code, out, _ = run(capsys, "list", "resnet*", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows] == list_models("resnet*")
    resnet50 = next(r for r in rows if r["name"] == "resnet50")
    assert int(resnet50["params"]) == RESNET50_PARAMS
    assert resnet50["input"] == "3x224x224"
    assert resnet50["paper"] == model_info("resnet50").paper  # commas in the paper survive quoting


def test_list_family(capsys):
    code, out, _ = run(capsys, "list", "--family", "resnet", "--format", "json")
    assert code == 0
    assert [r["name"] for r in json.loads(out)] == list_models(family="resnet")


def test_info_text(capsys):
    code, out, err = run(capsys, "info", "resnet50")
    assert code == 0 and err == ""
    assert model_info("resnet50").paper in out
    assert "arXiv:1512.03385" in out
    assert f"{RESNET50_PARAMS:,}" in out
    assert "3x224x224" in out


def test_info_json(capsys):
    code, out, _ = run(capsys, "info", "resnet50", "--format", "json")
    assert code == 0
    info = json.loads(out)
    assert info["name"] == "resnet50"
    assert info["params"] == RESNET50_PARAMS
    assert info["input_size"] == [3, 224, 224]
    assert info["num_classes"] == 1000
    assert info["year"] == 2015
    assert info["num_features"] == 2048
    # He et al. 2015 Table 1: conv5_x ends at 2048 channels, 32x below the input.
    assert info["feature_info"][-1]["num_chs"] == 2048
    assert info["feature_info"][-1]["reduction"] == 32


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cnnzoo: error:")
    return lines[0]


def test_unknown_model_is_one_line_exit_2(capsys):
    code, out, err = run(capsys, "info", "resnt50")
    assert code == 2
    assert out == ""
    assert "resnet50" in _one_error_line(err)


@pytest.mark.parametrize("argv", [["list", "no_such_model*"], ["list", "--family", "no_such_family"]])
def test_pattern_matching_nothing_is_one_line_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    _one_error_line(err)


def test_help_on_every_verb(capsys):
    for verb in ("list", "info"):
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0
        assert "--format" in capsys.readouterr().out


# -- the installed command ----------------------------------------------------------------------------
def _python_m(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnzoo", *argv], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_python_m_cnnzoo(tmp_path):
    done = _python_m("list", "resnet18", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resnet18" in done.stdout
    assert f"{RESNET18_PARAMS:,}" in done.stdout
    # The exit status reaches the shell, and the error stays one line (no traceback).
    done = _python_m("info", "resnt50", cwd=tmp_path)
    assert done.returncode == 2
    assert "resnet50" in _one_error_line(done.stderr)


def test_console_script_is_installed(tmp_path):
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("cnnzoo") == "cnnzoo.cli.main:main"
    exe = Path(sys.executable).parent / ("cnnzoo.exe" if sys.platform == "win32" else "cnnzoo")
    assert exe.is_file()
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("cnnzoo ")
