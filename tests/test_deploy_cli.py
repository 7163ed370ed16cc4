"""`cnnzoo export`, `cnnzoo bench` and the fast path of `cnnzoo predict`, from checkpoints and names."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.cli.main import main
from cnnzoo.deploy import fastest
from cnnzoo.deploy.bench import bench, warm_batchnorm
from cnnzoo.deploy.fastest import choose_fastest
from cnnzoo.train.evaluate import predict

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@torch.no_grad()
def with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics as after training, so that folding changes the weights."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model.eval()


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


# -- export -----------------------------------------------------------------------------------------
def test_export_by_name_writes_one_checked_file(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "export", "lenet5")  # default name and format: ./lenet5.onnx
    assert code == 0 and out.startswith("wrote lenet5.onnx (onnx, input 1x28x28, batch 1)")
    assert "max abs" in out and "of the output's scale" in out
    assert [p.name for p in tmp_path.iterdir()] == ["lenet5.onnx"]


def test_export_refuses_an_existing_file_without_overwrite(tmp_path, capsys) -> None:
    dest = tmp_path / "l.pt"
    dest.write_bytes(b"an earlier export")
    code, out, err = cli(capsys, "export", "lenet5", "--format", "torchscript", "--out", str(dest))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{str(dest)!r} already exists; pass --overwrite to replace it" in err
    assert dest.read_bytes() == b"an earlier export"
    code, out, _ = cli(
        capsys, "export", "lenet5", "--format", "torchscript", "--out", str(dest), "--overwrite"
    )
    assert code == 0 and out.startswith(f"wrote {dest}")
    assert torch.jit.load(str(dest))(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_export_a_trained_run_at_its_own_input_size(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = with_statistics(cnnzoo.create_model("resnet20", num_classes=3))
    run = {"model": "resnet20", "num_classes": 3, "in_chans": 3, "input_size": [3, 16, 16]}
    cnnzoo.save_weights(model, tmp_path / "run" / "model.safetensors", metadata={"cnnzoo_run": run})
    dest = tmp_path / "r20.pt2"
    code, out, _ = cli(
        capsys, "export", str(tmp_path / "run"), "--format", "exported-program", "--out", str(dest), "--json"
    )
    result = json.loads(out)
    assert code == 0 and result["input_shape"] == [1, 3, 16, 16]
    assert "folded 19 BatchNorm" in result["folding"] and result["max_rel_error"] <= 1e-4
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert rel_error(torch.export.load(str(dest)).module()(x), model(x)) <= 1e-4


def test_export_a_torchvision_style_pth_named_or_not(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = with_statistics(cnnzoo.create_model("resnet20", num_classes=10))
    named = tmp_path / "resnet20-0123abcd.pth"  # torchvision's ARCH-HASH.pth naming
    torch.save(model.state_dict(), named)
    dest = tmp_path / "a.pt"
    code, out, _ = cli(capsys, "export", str(named), "--format", "torchscript", "--out", str(dest))
    assert code == 0 and "wrote" in out
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_error(torch.jit.load(str(dest))(x), model(x)) <= 1e-4

    anonymous = tmp_path / "weights.pth"
    anonymous.write_bytes(named.read_bytes())
    code, _, err = cli(capsys, "export", str(anonymous), "--format", "torchscript")
    assert code == 2 and err.count("\n") == 1
    assert "cannot tell which architecture" in err and "conv1.weight (16, 3, 3, 3)" in err
    assert "pass --model NAME" in err
    out_pt = tmp_path / "b.pt"
    code, _, _ = cli(
        capsys,
        "export",
        str(anonymous),
        "--model",
        "resnet20",
        "--format",
        "torchscript",
        "--out",
        str(out_pt),
    )
    assert code == 0 and out_pt.is_file()
    # The wrong architecture is named with the keys that do not fit.
    code, _, err = cli(capsys, "export", str(anonymous), "--model", "resnet18", "--format", "torchscript")
    assert code == 2 and "does not fit resnet18" in err and err.count("\n") == 1


def test_a_checkpoint_naming_an_unknown_architecture_says_what_it_found(tmp_path, capsys) -> None:
    model = cnnzoo.create_model("lenet5")
    model.model_name = "mystery_net"
    path = cnnzoo.save_weights(model, tmp_path / "m.safetensors")
    code, _, err = cli(capsys, "export", str(path))
    assert code == 2 and "its header names 'mystery_net', which is not a registered model" in err
    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import save_file

    save_file({"stem.weight": torch.zeros(8, 3, 3, 3)}, str(bare))
    code, _, err = cli(capsys, "export", str(bare))
    assert code == 2 and "no architecture in its header" in err and "stem.weight (8, 3, 3, 3)" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["resnet20", "--input", "3x32"], "--input takes CxHxW"),
        (["resnet20", "--input", "1x32x32"], "takes 3 channels, not 1"),
        (["resnet19"], "did you mean"),
        (["missing/x.pth"], "does not exist"),
        (["resnet20", "--batch", "0"], "--batch must be >= 1"),
        (["lenet5", "--input", "1x32x32"], "expects input of shape (N, 1, 28, 28)"),
    ],
)
def test_export_bad_input_is_one_line(argv, message, capsys, tmp_path) -> None:
    code, _, err = cli(capsys, "export", *argv, "--out", str(tmp_path / "x.onnx"))
    assert code == 2 and message in err and err.startswith("cnnzoo: error:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_without_the_onnx_extra_the_cli_says_what_to_install(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = cli(capsys, "export", "lenet5", "--out", str(tmp_path / "l.onnx"))
    assert code == 2 and "pip install 'cnnzoo[onnx]'" in err
    code, out, _ = cli(
        capsys, "bench", "lenet5", "--batch", "2", "--rounds", "1", "--paths", "eager,onnxruntime"
    )
    assert code == 0 and "onnxruntime" in out and "pip install 'cnnzoo[onnx]'" in out


# -- bench ------------------------------------------------------------------------------------------
def test_bench_cli_table_and_json(capsys) -> None:
    args = ["bench", "resnet20", "--batch", "2", "--input", "3x16x16", "--rounds", "3"]
    code, out, _ = cli(capsys, *args, "--paths", "eager,channels_last,folded,onnxruntime")
    assert code == 0
    lines = out.splitlines()
    assert "BatchNorm statistics warmed" in lines[0]
    for path in ("eager", "channels_last", "folded", "onnxruntime"):
        assert any(line.startswith(path) for line in lines), path
    assert lines[-1].startswith("fastest exact path: ")
    code, out, _ = cli(capsys, *args, "--paths", "folded", "--format", "json")
    rows = json.loads(out)
    assert [r["path"] for r in rows] == ["eager", "folded"]  # eager is always the anchor
    assert rows[0]["speedup"] == 1.0 and rows[1]["max_rel_error"] <= 1e-4 and rows[1]["images_per_s"] > 0


def test_bench_cli_errors(capsys) -> None:
    code, _, err = cli(capsys, "bench", "lenet5", "--paths", "eager,turbo")
    assert code == 2 and "unknown turbo" in err
    code, _, err = cli(capsys, "bench", "lenet5", "--threads", "0")
    assert code == 2 and "--threads must be >= 1" in err
    if not torch.cuda.is_available():
        code, _, err = cli(capsys, "bench", "lenet5", "--device", "cuda")
        assert code == 2 and "no CUDA GPU" in err
    else:  # the GPU paths: bf16 autocast is not exact at fp32 tolerance and says so
        code, out, _ = cli(capsys, "bench", "lenet5", "--device", "cuda", "--rounds", "2", "--batch", "4")
        assert code == 0 and "cuda-graph" in out


def test_warm_batchnorm_replaces_fresh_statistics_and_restores_momentum() -> None:
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet20").eval()
    warm_batchnorm(model, torch.randn(4, 3, 16, 16))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not model.training and all(m.momentum == 0.1 for m in bns)
    assert all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in bns)
    assert all(int(m.num_batches_tracked) == 3 for m in bns)


def test_bench_reports_a_path_that_fails_or_is_wrong_without_stopping(monkeypatch) -> None:
    def broken(model, example):
        raise RuntimeError("no kernel for this")

    def wrong(model, example):
        return lambda x: torch.zeros(x.shape[0], 10) + 1.0

    monkeypatch.setitem(fastest._BUILDERS, "compiled", broken)
    monkeypatch.setitem(fastest._BUILDERS, "channels_last", wrong)
    rows = bench(
        cnnzoo.create_model("resnet20"), (3, 16, 16), batch=2, rounds=2, paths=["compiled", "channels_last"]
    )
    by = {r.path: r for r in rows}
    assert "RuntimeError: no kernel for this" in by["compiled"].note
    assert by["channels_last"].note.startswith("not exact") and by["eager"].speedup == 1.0


# -- choosing the fastest exact path, and predict ----------------------------------------------------
def test_the_fastest_path_is_chosen_only_among_exact_ones(monkeypatch) -> None:
    torch.manual_seed(0)
    model = with_statistics(cnnzoo.create_model("resnet20", num_classes=4))
    x = torch.randn(4, 3, 16, 16)

    # Instant but wrong: never chosen. Instant and right to 1e-7: chosen.
    def wrong(m, example):
        return lambda inp: torch.zeros(inp.shape[0], 4)

    with torch.no_grad():
        ref = model(x)

    def exact(m, example):
        return lambda inp: ref + 1e-7 * ref.abs().max()

    monkeypatch.setitem(fastest._BUILDERS, "cuda-bf16", wrong)
    monkeypatch.setattr(fastest, "build_path", lambda n, m, e: (fastest._BUILDERS[n](m, e), 0.0))
    choice = choose_fastest(model, x, paths=["eager", "folded", "cuda-bf16"])
    by = {c.name: c for c in choice.candidates}
    assert "differs from eager" in by["cuda-bf16"].error and choice.best.name != "cuda-bf16"
    assert by["folded"].max_rel_error <= 1e-5
    monkeypatch.setitem(fastest._BUILDERS, "cuda-graph", exact)
    choice = choose_fastest(model, x, paths=["eager", "cuda-bf16", "cuda-graph"])
    assert choice.best.name == "cuda-graph" and "cuda-graph (" in choice.describe()


def test_real_paths_agree_with_eager_including_onnxruntime() -> None:
    torch.manual_seed(0)
    model = with_statistics(cnnzoo.create_model("resnet20", num_classes=4))
    x = torch.randn(3, 3, 16, 16)
    choice = choose_fastest(model, x, paths=["eager", "channels_last", "folded", "onnxruntime"], repeats=2)
    assert [c.name for c in choice.candidates] == ["eager", "channels_last", "folded", "onnxruntime"]
    assert all(c.exact and c.max_rel_error <= 1e-5 for c in choice.candidates)
    assert choice.best.seconds == min(c.seconds for c in choice.candidates)
    # A batch of another size runs on the chosen path too (the ONNX graph has a dynamic batch).
    y = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert rel_error(choice.best.run(y), model(y)) <= 1e-5


def make_run(tmp_path, n_images: int):
    from PIL import Image

    torch.manual_seed(0)
    model = with_statistics(cnnzoo.create_model("resnet20", num_classes=3))
    run = {
        "model": "resnet20",
        "num_classes": 3,
        "in_chans": 3,
        "input_size": [3, 32, 32],
        "classes": ["cat", "dog", "owl"],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    cnnzoo.save_weights(model, tmp_path / "run" / "model.safetensors", metadata={"cnnzoo_run": run})
    gen = torch.Generator().manual_seed(1)
    paths = []
    for i in range(n_images):
        pixels = torch.randint(0, 256, (40, 40, 3), generator=gen, dtype=torch.uint8).numpy()
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(pixels).save(paths[-1])
    return tmp_path / "run", paths


def test_predict_runs_the_fastest_exact_path_and_says_which(tmp_path, capsys) -> None:
    run, images = make_run(tmp_path, 9)
    fast = predict(run, images, top_k=3)
    slow = predict(run, images, top_k=3, fast=False)
    assert fast.runtime["path"] in ("eager", "folded") and slow.runtime["path"] == "eager"
    for a, b in zip(fast, slow, strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert [t["prob"] for t in a["top"]] == pytest.approx([t["prob"] for t in b["top"]], abs=1e-5)
    code, out, err = cli(capsys, "predict", str(run), *images, "--format", "json")
    assert code == 0 and len([json.loads(line) for line in out.splitlines()]) == 9  # JSON lines
    lines = err.splitlines()
    assert lines[0].startswith("note: each image is read as RGB and resized to 32x32")
    assert lines[1].startswith("cnnzoo: predict ran on ") and len(lines) == 2

    # With no more images than the check needs, eager's own outputs are the answer.
    few = predict(run, images[:2])
    assert few.runtime["path"] == "eager" and "too few" in few.runtime["description"]


@pytest.mark.slow  # inductor compiles C++: ~10 s of CPU even for LeNet-5; run with -m slow
def test_compiled_path_agrees_with_eager() -> None:
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5").eval()
    x = torch.randn(2, 1, 28, 28)
    choice = choose_fastest(model, x, paths=["eager", "compiled"], repeats=2)
    compiled = choice.candidates[1]
    assert compiled.name == "compiled" and compiled.exact and compiled.max_rel_error <= 1e-5
    assert compiled.setup_s > 0


# -- bf16 on the CPU: opt-in, never chosen at the fp32 tolerance ---------------------------------------
def test_bf16_path_is_close_but_not_exact_and_never_chosen_by_default() -> None:
    torch.manual_seed(0)
    model = with_statistics(cnnzoo.create_model("resnet20", num_classes=4))
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    run, _ = fastest.build_path("bf16", model, x)
    out = run(x)
    # bf16 keeps 8 bits of mantissa: each rounding is ~4e-3 relative; through 20 layers the
    # output drifts by more than the fp32 tolerance but keeps its shape and scale.
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert 1e-4 < rel_error(out, ref) < 0.1
    choice = choose_fastest(model, x, paths=["eager", "folded", "bf16"], repeats=1)
    by = {c.name: c for c in choice.candidates}
    assert "differs from eager" in by["bf16"].error and choice.best.name != "bf16"
    loose = choose_fastest(model, x, paths=["bf16"], rtol=0.1, repeats=1)
    assert {c.name for c in loose.candidates} == {"eager", "bf16"} and loose.candidates[1].exact
    # Opt-in: neither bench's nor predict's default candidates hold a bf16 path.
    from cnnzoo.deploy.bench import default_paths

    assert not set(fastest.CPU_BF16_PATHS) & set(default_paths(torch.device("cpu")))


def test_bench_cli_shows_a_bf16_path_with_its_error(capsys) -> None:
    args = ["bench", "resnet20", "--batch", "2", "--input", "3x16x16", "--rounds", "2"]
    code, out, _ = cli(capsys, *args, "--paths", "folded,bf16", "--format", "json")
    rows = {r["path"]: r for r in json.loads(out)}
    assert code == 0 and rows["bf16"]["max_rel_error"] > 1e-4 and rows["bf16"]["note"].startswith("not exact")
    code, out, _ = cli(capsys, *args, "--paths", "folded,bf16")
    assert code == 0 and out.splitlines()[-1].startswith("fastest exact path: ")
    assert "fastest exact path: bf16" not in out


@pytest.mark.slow  # inductor compiles C++: ~10 s of CPU even for LeNet-5; run with -m slow
def test_compiled_bf16_path_runs_in_bf16() -> None:
    torch.manual_seed(0)
    model = with_statistics(cnnzoo.create_model("resnet20", num_classes=4))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    run, setup = fastest.build_path("compiled-bf16", model, x)
    out = run(x)
    assert out.dtype == torch.float32 and setup > 0 and 1e-4 < rel_error(out, ref) < 0.1
