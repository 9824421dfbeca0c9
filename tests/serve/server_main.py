"""A test server in its own process: the random mini model with an optional pause per step.

    python tests/serve/server_main.py DATA_DIR STEP_DELAY

Prints `listening on http://127.0.0.1:PORT` once it accepts connections.
"""

from __future__ import annotations

import sys

import torch

from openkontext.model import LoadedModel
from openkontext.serve.app import create_app, serve_on_free_port
from openkontext.serve.settings import ServeSettings


def main() -> None:
    data_dir, delay = sys.argv[1], float(sys.argv[2])
    torch.set_num_threads(1)
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from conftest import SlowKontext

    app = create_app(ServeSettings(data_dir=data_dir),
                     lambda: SlowKontext(LoadedModel.random("mini"), step_delay=delay))
    serve_on_free_port(app)


if __name__ == "__main__":
    main()
