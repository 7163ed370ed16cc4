"""Local response normalisation (Krizhevsky et al. 2012, §3.3), used by AlexNet and ZFNet.

b_c = a_c / (k + alpha/n * sum_{c' in window(c)} a_c'^2)^beta with n=5, k=2, alpha=1e-4,
beta=0.75 in the paper. torch's `nn.LocalResponseNorm` divides alpha by n exactly as written
there, so the paper's constants carry over unchanged. Modern nets replaced LRN by BatchNorm.
"""

from __future__ import annotations

from torch import nn

__all__ = ["LocalResponseNorm", "alexnet_lrn"]

LocalResponseNorm = nn.LocalResponseNorm


def alexnet_lrn() -> nn.LocalResponseNorm:
    """LRN with AlexNet's constants: size 5, alpha 1e-4, beta 0.75, k 2."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
