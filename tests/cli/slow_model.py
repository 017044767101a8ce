"""A per-pixel model that sleeps in every batch, so a test can interrupt or cancel a run midway."""

import time

from rrsis_geo.inference.reference_models import brightness


def factory(device="cpu"):
    model = brightness(device)
    predict = model.predict

    def slow_predict(tiles, encoded):
        time.sleep(0.3)
        return predict(tiles, encoded)

    model.predict = slow_predict
    return model
