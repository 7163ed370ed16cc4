"""The one interface every cnnzoo model has (after timm's): features, head, classifier reset.

    model.forward_features(x)            -> last feature map, (N, num_features, h, w)
    model.forward_head(f, pre_logits=...) -> pooled features or logits
    model.reset_classifier(n)            -> new n-way head (0: no head, pre-logits out)
    model.feature_info                   -> [{"module", "num_chs", "reduction"}, ...] per stage

`forward` checks the input once, so a wrong channel count or a too-small image fails with a
ValueError naming the expected shape instead of a shape error deep inside a layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ZooModel", "he_init"]


def he_init(model: nn.Module, *, linear_std: float | None = 0.01) -> None:
    """The init most from-scratch families share (torchvision's for ResNet, VGG, MobileNet).

    Convolutions: He et al. 2015's normal on the fan-out (gain sqrt(2), for ReLU-like units),
    zero bias; BatchNorm: weight 1, bias 0; Linear: N(0, linear_std) and zero bias, or PyTorch's
    default when `linear_std` is None.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


class ZooModel(nn.Module):
    in_chans: int
    num_classes: int
    num_features: int  # width of the vector the classifier reads
    min_input_size: int = 1  # smallest H = W the layers accept
    fixed_input_size: int | None = None  # set when a flatten ties the head to one input size
    head_name: str = "fc"  # dotted path of the final Linear inside the model
    # The classifier is a 1x1 convolution before the global pooling (Network in Network,
    # SqueezeNet), not a Linear after it.
    conv_head: bool = False
    # Final Linears of auxiliary classifiers, refitted like the head when a checkpoint is loaded.
    extra_head_names: tuple[str, ...] = ()
    # Submodule prefixes a checkpoint may hold that some configurations leave out.
    optional_prefixes: tuple[str, ...] = ()
    optional_option: str = ""  # the builder option that leaves them out, named in loading messages
    feature_info: list[dict[str, Any]]

    # -- input validation -------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        name = getattr(self, "model_name", type(self).__name__)
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{name} expects input of shape (N, {self.in_chans}, H, W){self._size_hint()}, "
                f"got {tuple(x.shape)}; pass in_chans={x.shape[1] if x.dim() == 4 else '?'} "
                "to create_model for other channel counts"
            )
        h, w = x.shape[-2:]
        if self.fixed_input_size is not None and (h, w) != (self.fixed_input_size,) * 2:
            # The flatten ties the head to one size; the builder's img_size picks it (square only).
            how = (
                f"build it with img_size={h} for {h}x{h} inputs"
                if h == w
                else "it takes square inputs only; img_size=N builds it for NxN"
            )
            raise ValueError(
                f"{name} expects input of shape (N, {self.in_chans}, {self.fixed_input_size}, "
                f"{self.fixed_input_size}), got {tuple(x.shape)}; {how} (create_model(..., img_size=N); "
                "`--model-arg img_size=N` on `cnnzoo train`, `--input CxNxN` on `cnnzoo summary`)"
            )
        if min(h, w) < self.min_input_size:
            raise ValueError(
                f"{name} expects input of shape (N, {self.in_chans}, H, W){self._size_hint()}, "
                f"got {tuple(x.shape)}: the image is too small for its downsampling"
            )

    def _size_hint(self) -> str:
        if self.fixed_input_size is not None:
            return f" with H = W = {self.fixed_input_size}"
        return f" with H, W >= {self.min_input_size}" if self.min_input_size > 1 else ""

    # -- the interface ------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.head_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final Linear (or 1x1 conv) by a fresh `num_classes`-way one (0: identity, pre-logits)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        old = next(self.get_classifier().parameters(), None)
        head: nn.Module = nn.Identity()
        if num_classes > 0:
            head = (
                nn.Conv2d(self.num_features, num_classes, 1)
                if self.conv_head
                else nn.Linear(self.num_features, num_classes)
            )
            if old is not None:
                head = head.to(device=old.device, dtype=old.dtype)
        parent_name, _, attr = self.head_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, attr, head)
