"""A client of the hosted API that this project did not write completes an edit unchanged,
pointed at the server's base URL: `blackforest`, Black Forest Labs' own Python client (a
test-only dependency; skipped when it is not installed).

What it does, read from its source (0.1.3): POST {base_url}/v1/flux-kontext-pro with the key
in `X-Key` and a file path in input_image turned into base64; keep the returned polling_url
and GET it (absolute) until status is Ready; return `result`, whose `sample` the caller
downloads.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from .conftest import png_bytes

blackforest = pytest.importorskip("blackforest", reason="the blackforest client is not installed")
requests = pytest.importorskip("requests")


def test_blackforest_client_completes_an_edit(serve, tmp_path):
    from blackforest import BFLClient
    from blackforest.types.general.client_config import ClientConfig

    # The hosted client cannot send `steps`; the pro tier's default keeps the run short.
    live = serve(api_keys=["client-key"], tiers={"pro": {"steps": 2}})
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes((64, 48)))
    client = BFLClient(api_key="client-key", base_url=live.url)
    config = ClientConfig(sync=True, polling_interval=0.1, max_retries=600, timeout=60)
    response = client.generate(
        "flux-kontext-pro",
        {"prompt": "make the square green", "input_image": str(photo), "seed": 42},
        config,
    )
    result = response.result
    # It polled the polling_url we returned (its own record of it, in 0.1.3).
    polled, _ = client._task_polling_urls[response.id]
    assert polled == f"{live.url}/v1/get_result?id={response.id}"
    assert result["prompt"] == "make the square green" and result["seed"] == 42
    assert result["sample"].startswith(f"{live.url}/v1/results/{response.id}/0.png?")
    image = requests.get(result["sample"], timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (result["width"], result["height"])
    # The key it sent is the one the job belongs to.
    usage = live.client.get("/v1/usage", headers={"x-key": "client-key"}).json()
    assert usage["jobs"] == 1 and usage["images"] == 1


def test_blackforest_client_gets_the_servers_errors(serve):
    from blackforest import BFLClient, BFLError

    live = serve(api_keys=["client-key"])
    with pytest.raises(BFLError, match="403"):
        BFLClient(api_key="wrong", base_url=live.url).generate(
            "flux-kontext-pro", {"prompt": "x"})
