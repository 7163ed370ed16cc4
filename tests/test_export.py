"""Export round trips: every model file's representative through ONNX Runtime, TorchScript and
torch.export, compared with the eager model by an independent loader; and the refusals."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.deploy.export import FORMATS, ExportError, MissingDependency, export, require_onnx
from cnnzoo.registry import get_builder

# One model per model file (family), at a small input (H = W), chosen for the operators it
# adds: LRN, true 5x5s and ceil-mode pools (googlenet_paper), inception branches and
# concatenation (googlenet), basic blocks (resnet18), option-A shortcuts (resnet20), depthwise
# convolutions and ReLU6 (mobilenet_v2), channel shuffle (shufflenet_v2_x0_5), SiLU, SE and
# stochastic depth (efficientnet_b0). A model file not listed is covered by its first model.
REPRESENTATIVES: dict[str, int] = {
    "lenet5": 28,
    "alexnet_paper": 67,
    "vgg11_bn": 32,
    "googlenet": 32,
    "googlenet_paper": 32,
    "resnet18": 32,
    "resnet20": 32,
    "densenet_bc_l22": 32,
    "mobilenet_v2": 32,
    "shufflenet_v2_x0_5": 32,
    "efficientnet_b0": 32,
}
# 60-130M parameters in their MLPs make 250-500 MB files and ~10 s of CPU per format: they run
# with `-m slow` (measured passing in all three formats). Their layers (LRN, ceil-mode pools,
# adaptive pooling, linear, dropout) are exported by default through googlenet_paper and lenet5.
HEAVY = {"alexnet_paper", "vgg11_bn"}


def densenet_bc_l22(*, num_classes: int) -> nn.Module:
    """DenseNet-BC (Huang et al. 2016) built from the family's own spec type, 3 blocks of 3 layers.

    densenet_bc_100_12 repeats the same bottleneck layer 48 times: 15 s of CPU to export it three
    ways and nothing new tested. Every layer kind of the family is here: the CIFAR stem,
    BN-ReLU-conv bottlenecks, concatenation, transitions with average pooling.
    """
    from cnnzoo.models.densenet import DenseNet, DenseNetSpec

    model = DenseNet(DenseNetSpec(12, (3, 3, 3), 24, stem="cifar"), num_classes=num_classes)
    model.model_name = "densenet_bc_l22"
    return model


CUSTOM = {"densenet_bc_l22": densenet_bc_l22}


def build(name: str, num_classes: int) -> nn.Module:
    if name in CUSTOM:
        return CUSTOM[name](num_classes=num_classes)
    return cnnzoo.create_model(name, num_classes=num_classes)


def representatives() -> list[tuple[str, int]]:
    chosen = dict(REPRESENTATIVES)
    covered = {get_builder(n).__module__ for n in chosen if n not in CUSTOM}
    covered.add("cnnzoo.models.densenet")  # densenet_bc_l22 is built in this file from densenet.py
    for name in cnnzoo.list_models():
        module = get_builder(name).__module__
        if module not in covered:
            covered.add(module)
            chosen[name] = max(32, cnnzoo.model_info(name).min_input_size)
    return sorted(chosen.items())


def cases() -> list:
    out = []
    for name, size in representatives():
        for fmt in FORMATS:
            marks = [pytest.mark.slow] if name in HEAVY else []
            out.append(pytest.param(name, size, fmt, marks=marks, id=f"{name}-{fmt}"))
    return out


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@torch.no_grad()
def trained_like(name: str) -> nn.Module:
    """The model with BatchNorm statistics of a trained net (not 0/1), so folding changes weights."""
    torch.manual_seed(0)
    model = build(name, num_classes=5)
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model.eval()


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def run_file(path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Each format's own runtime, without cnnzoo's loader: an independent round trip."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        return torch.from_numpy(np.asarray(out))
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    return torch.export.load(str(path)).module()(x)


@pytest.mark.parametrize("name,size,fmt", cases())
def test_round_trip_matches_eager(name: str, size: int, fmt: str, tmp_path) -> None:
    model = trained_like(name)
    n_bn = count_bn(model)
    c = model.in_chans
    dest = tmp_path / f"{name}{FORMATS[fmt]}"
    result = export(model, dest, format=fmt, input_size=(c, size, size), batch=2)
    assert result.path == dest and dest.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]  # no temporary files left behind
    assert result.max_rel_error <= 1e-4 and result.input_shape == (2, c, size, size)

    x = torch.randn(2, c, size, size)  # new data, not the input the export was checked on
    with torch.no_grad():
        ref = model(x)
        out = run_file(dest, fmt, x)
    assert out.shape == ref.shape == (2, 5)
    err = float((out - ref).abs().max() / ref.abs().max())
    assert err <= 1e-4, f"{name} via {fmt}: {err:.2e}"
    assert count_bn(model) == n_bn  # the caller's model is left as it was, unfolded


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_dynamic_batch_files_take_any_batch_size(fmt: str, tmp_path) -> None:
    model = trained_like("resnet20")
    dest = tmp_path / f"r{FORMATS[fmt]}"
    result = export(model, dest, format=fmt, input_size=(3, 16, 16), dynamic_batch=True)
    assert result.dynamic_batch and "folded 19 BatchNorm" in result.folding
    for n in (1, 5):  # the export was traced at 2 and checked at 3
        x = torch.randn(n, 3, 16, 16)
        with torch.no_grad():
            ref = model(x)
            out = run_file(dest, fmt, x)
        assert out.shape == (n, 5)
        assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-4


class CumMax(nn.Module):
    """An operator ONNX has no function for (aten.cummax), in an otherwise plain network."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cummax(self.conv(x), dim=1).values


def test_a_pair_that_cannot_export_names_a_format_that_can(tmp_path) -> None:
    dest = tmp_path / "cummax.onnx"
    with pytest.raises(
        ExportError, match=r"cannot be exported to onnx \(.*cummax.*\); use --format exported-program"
    ):
        export(CumMax(), dest, format="onnx", input_size=(3, 8, 8))
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left
    # The suggestion was tried, not guessed: it does export.
    assert export(
        CumMax(), tmp_path / "cummax.pt2", format="exported-program", input_size=(3, 8, 8)
    ).path.is_file()


def test_an_export_outside_tolerance_is_refused_and_not_written(tmp_path) -> None:
    # Folding changes float rounding by ~1e-7 of the output's scale: a zero tolerance refuses it.
    dest = tmp_path / "r.pt2"
    with pytest.raises(ExportError, match=r"differs from eager PyTorch by .* nothing was written"):
        export(trained_like("resnet20"), dest, format="exported-program", input_size=(3, 32, 32), rtol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_wrong_input_size_fails_before_exporting(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\)"):
        export(cnnzoo.create_model("resnet20"), tmp_path / "r.onnx", input_size=(1, 32, 32))
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export(cnnzoo.create_model("resnet20"), tmp_path / "r.tflite", format="tflite")


def test_missing_onnx_packages_give_the_install_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(MissingDependency, match=r"onnxruntime: pip install 'cnnzoo\[onnx\]'"):
        require_onnx()
    with pytest.raises(MissingDependency, match=r"pip install 'cnnzoo\[onnx\]'"):
        export(cnnzoo.create_model("lenet5"), tmp_path / "l.onnx")
    # The other formats need nothing extra.
    assert export(cnnzoo.create_model("lenet5"), tmp_path / "l.pt", format="torchscript").path.is_file()


def test_onnx_workers_sleep_instead_of_spinning_on_a_busy_machine(monkeypatch, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    export_module = sys.modules["cnnzoo.deploy.export"]  # the package re-exports the function

    key = "session.intra_op.allow_spinning"

    def spinning(options) -> str:
        try:
            return options.get_session_config_entry(key)
        except Exception:  # not set: onnxruntime's default, spinning on
            return "default"

    path = tmp_path / "lenet5.onnx"
    export(cnnzoo.create_model("lenet5"), path, format="onnx")
    monkeypatch.setattr(export_module.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(export_module.os, "cpu_count", lambda: 4)
    assert spinning(export_module.onnx_session(path, threads=2).get_session_options()) == "default"
    busy = (3.5, 3.0, 3.0)  # 0.5 free cores for 2 threads
    monkeypatch.setattr(export_module.os, "getloadavg", lambda: busy)
    assert spinning(export_module.onnx_session(path, threads=2).get_session_options()) == "0"
