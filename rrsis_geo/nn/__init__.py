"""Models: CroBIM (CAPM, LGFA, MID, heads) on timm and transformers encoders, and its losses."""

from rrsis_geo.nn.config import NAMED_CONFIGS, CroBIMConfig, named_config
from rrsis_geo.nn.crobim import CroBIM, CroBIMOutput, TextState

__all__ = [
    "NAMED_CONFIGS",
    "CroBIM",
    "CroBIMConfig",
    "CroBIMOutput",
    "TextState",
    "named_config",
]
