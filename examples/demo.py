"""cnnzoo's demo: the zoo, a lecture table checked, and a torchvision checkpoint that just loads.

Run with `make tour`. Everything happens on the CPU in a few seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torchvision

import cnnzoo
from cnnzoo.cli.main import main as cli


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


section("The zoo")
cli(["list"])

section("Lecture tables, reproduced")
# Lecture numbers: LeNet-5 61,706 parameters; AlexNet 62,378,344 (the lecture's structural table,
# after Krizhevsky et al. 2012).
for name, lecture in (("lenet5", 61_706), ("alexnet_paper", 62_378_344)):
    if cnnzoo.is_model(name):
        n = params(cnnzoo.create_model(name))
        print(
            f"{name:15s} {n:>12,} parameters  (lecture: {lecture:,})  {'OK' if n == lecture else 'DIFFERS'}"
        )

section("A torchvision checkpoint file loads into cnnzoo")
torch.manual_seed(0)
reference = torchvision.models.resnet18().eval()
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    ours = cnnzoo.create_model("resnet18", pretrained=path).eval()
x = torch.randn(2, 3, 224, 224)
with torch.no_grad():
    a, b = reference(x), ours(x)
rel = ((a - b).abs().max() / a.abs().max()).item()
print(f"resnet18: max relative difference to torchvision = {rel:.2e} ({'OK' if rel <= 1e-5 else 'FAIL'})")

section("One interface on every model")
model = cnnzoo.create_model("resnet50", num_classes=10, act="mish", drop_path_rate=0.1)
feats = model.forward_features(torch.randn(1, 3, 64, 64))
print(
    f"resnet50(num_classes=10, act='mish'): features {tuple(feats.shape)}, logits {tuple(model.forward_head(feats).shape)}"
)
print("stages:", ", ".join(f"{f['module']}={f['num_chs']}ch/{f['reduction']}" for f in model.feature_info))
print("\nNext: `cnnzoo info NAME`, `cnnzoo list 'resnet*'`, and the README.")
