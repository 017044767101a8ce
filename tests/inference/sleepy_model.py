"""The per-pixel reference model, sleeping a little in every batch so that a kill lands mid-run.

``RRSIS_TEST_SLEEP`` sets the seconds per batch (default 0.05). Its pixels are those of
``reference_models:brightness`` (the same name, so a run may be resumed with either). With
``RRSIS_TEST_FORWARD_LOG`` set, each batch appends ``PID TILES`` to that file, so a test can
tell which process predicted how many tiles.
"""

import os
import time

from rrsis_geo.inference.reference_models import brightness


def factory(device="cpu"):
    model = brightness(device)
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
