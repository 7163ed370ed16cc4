"""Local response normalisation (Krizhevsky et al. 2012, §3.3), used by AlexNet and ZFNet.

b_c = a_c / (k + alpha * sum_{c' in window(c)} a_c'^2)^beta with n=5, k=2, alpha=1e-4,
beta=0.75 in the paper. torch's `nn.LocalResponseNorm` (like Caffe) divides its alpha by the
window size n, so the paper's alpha is passed as n * 1e-4. Modern nets replaced LRN by BatchNorm.
"""

from __future__ import annotations

from torch import nn

__all__ = ["LocalResponseNorm", "alexnet_lrn"]

LocalResponseNorm = nn.LocalResponseNorm


def alexnet_lrn() -> nn.LocalResponseNorm:
    """LRN with AlexNet's constants: n = 5, alpha = 1e-4 (paper's form), beta = 0.75, k = 2."""
    n = 5
    return nn.LocalResponseNorm(size=n, alpha=n * 1e-4, beta=0.75, k=2.0)
