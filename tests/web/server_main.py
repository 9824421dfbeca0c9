"""The page's test server in its own process: `openkontext serve`'s app on the embedded model.

    python tests/web/server_main.py DATA_DIR [STEP_DELAY]

Prints `listening on http://127.0.0.1:PORT` once it accepts connections. STEP_DELAY (seconds,
default 0) pauses after every denoising step, so a test can cancel a turn while it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from openkontext.pipeline import Kontext
from openkontext.serve.app import create_app, serve_on_free_port
from openkontext.serve.settings import ServeSettings


def main() -> None:
    data_dir = sys.argv[1]
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
    from conftest import SlowKontext  # the serve tests' model with a pause per step

    settings = ServeSettings(data_dir=data_dir, image_classifier="none")
    serve_on_free_port(create_app(settings,
                                  lambda: SlowKontext(Kontext.load().model, step_delay=delay)))


if __name__ == "__main__":
    main()
