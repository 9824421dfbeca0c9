"""The page's test server in its own process: `openkontext serve`'s app on the embedded model.

    python tests/web/server_main.py DATA_DIR [STEP_DELAY]

Prints `listening on http://127.0.0.1:PORT` once it accepts connections. STEP_DELAY (seconds,
default 0) pauses after every denoising step, so a test can cancel a turn while it runs.
"""

from __future__ import annotations

import sys
import time

import torch

from openkontext.pipeline import Kontext
from openkontext.serve.app import create_app, serve_on_free_port
from openkontext.serve.settings import ServeSettings


class Paced(Kontext):
    """The embedded model, `delay` seconds slower a step."""

    delay = 0.0

    def run_many(self, requests, on_step=None, cancelled=None):
        def paced(i: int, n: int) -> None:
            time.sleep(self.delay)
            if on_step is not None:
                on_step(i, n)

        return super().run_many(requests, on_step=paced, cancelled=cancelled)


def main() -> None:
    data_dir = sys.argv[1]
    Paced.delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    torch.set_num_threads(1)
    settings = ServeSettings(data_dir=data_dir, image_classifier="none")
    serve_on_free_port(create_app(settings, lambda: Paced(Kontext.load().model)))


if __name__ == "__main__":
    main()
