"""Inference: the model protocol, model loading, and the scene pipeline."""

from rrsis_geo.inference.model import ModelMetadata, SegmentationModel, TilePrediction, load_model
from rrsis_geo.inference.pipeline import SegmentOptions, SegmentResult, predict_scene, segment

__all__ = [
    "ModelMetadata",
    "SegmentOptions",
    "SegmentResult",
    "SegmentationModel",
    "TilePrediction",
    "load_model",
    "predict_scene",
    "segment",
]
