"""The complexity analyzer: the lectures' per-layer tables for any PyTorch model.

>>> import cnnzoo
>>> p = cnnzoo.profile("alexnet_paper")
>>> p.total_params, p.receptive_field
(62378344, 195)
>>> cnnzoo.profile("efficientnet_b0").receptive_field  # after its first SE gate
'whole input'
"""

from cnnzoo.analysis.profile import Layer, Profile, profile
from cnnzoo.analysis.receptive_field import WHOLE_INPUT, Field

__all__ = ["WHOLE_INPUT", "Field", "Layer", "Profile", "profile"]
