"""A test server in its own process: the random mini model with an optional pause per step.

    python tests/serve/server_main.py DATA_DIR STEP_DELAY

Prints `listening on http://127.0.0.1:PORT` once it accepts connections.
"""

from __future__ import annotations

import sys
import threading
import time

import torch
import uvicorn

from openkontext.pipeline import LoadedModel
from openkontext.serve.app import create_app
from openkontext.serve.settings import ServeSettings


def main() -> None:
    data_dir, delay = sys.argv[1], float(sys.argv[2])
    torch.set_num_threads(1)
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from conftest import SlowKontext

    app = create_app(ServeSettings(data_dir=data_dir),
                     lambda: SlowKontext(LoadedModel.random("mini"), step_delay=delay))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


if __name__ == "__main__":
    main()
