"""The complexity analyzer: the lectures' per-layer tables for any PyTorch model.

>>> import cnnzoo
>>> p = cnnzoo.profile("alexnet_paper")
>>> p.total_params, p.receptive_field
(62378344, 195)
"""

from cnnzoo.analysis.profile import Layer, Profile, profile
from cnnzoo.analysis.receptive_field import Field

__all__ = ["Field", "Layer", "Profile", "profile"]
