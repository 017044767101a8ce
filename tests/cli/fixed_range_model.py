"""The per-pixel reference model declaring what the default model declares about its input.

An 8-bit fixed normalization (0-255) and a 0.3 m ground resolution, like crobim-lite-synth, so
that the value-range and resampling rules run through the real CLI in seconds, not after a
7-8 s model load. Load it with ``--model python:tests/cli/fixed_range_model.py:factory``.
"""

from rrsis_geo.geo.normalization import NormalizationSpec
from rrsis_geo.inference.model import ModelMetadata
from rrsis_geo.inference.reference_models import Brightness
from rrsis_geo.inference.torch_model import TorchSegmentationModel


def factory(device="cpu"):
    metadata = ModelMetadata(
        name="reference/brightness-8bit-0.3m",
        normalization=NormalizationSpec("fixed", low=(0.0,), high=(255.0,)),
        gsd=0.3,
        tile_size=256,
    )
    return TorchSegmentationModel(Brightness(), metadata, device)
