"""Reference models sleeping a little in every batch, so that a kill lands mid-run.

``RRSIS_TEST_SLEEP`` sets the seconds per batch (default 0.05). ``factory``'s pixels are those
of ``reference_models:brightness`` (the same name, so a run may be resumed with either);
``contrast`` reads its sentence (dark or bright things), for runs of several sentences. With
``RRSIS_TEST_FORWARD_LOG`` set, each batch appends ``PID TILES`` to that file, so a test can
tell which process predicted how many tiles.
"""

import os
import time

import torch
from torch import nn

from rrsis_geo.inference.model import ModelMetadata
from rrsis_geo.inference.reference_models import brightness
from rrsis_geo.inference.torch_model import TorchSegmentationModel


class Contrast(nn.Module):
    """Per-pixel: the dark pixels when the sentence says "dark", else the bright ones."""

    def forward(self, tiles, encoded=None):
        mean = tiles.mean(dim=1)
        if "dark" in str(encoded).lower():
            return torch.sigmoid(16 * (0.25 - mean))
        return torch.sigmoid(16 * (mean - 0.75))


def _sleepy(model):
    predict = model.predict
    pause = float(os.environ.get("RRSIS_TEST_SLEEP", "0.05"))
    log = os.environ.get("RRSIS_TEST_FORWARD_LOG")

    def sleepy_predict(tiles, encoded):
        if log:
            with open(log, "a") as file:
                file.write(f"{os.getpid()} {len(tiles)}\n")
        time.sleep(pause)
        return predict(tiles, encoded)

    model.predict = sleepy_predict
    return model


def factory(device="cpu"):
    return _sleepy(brightness(device))


def contrast(device="cpu"):
    metadata = ModelMetadata(name="test/contrast")
    return _sleepy(TorchSegmentationModel(Contrast(), metadata, device))
