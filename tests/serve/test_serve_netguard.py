"""Input images by URL: fetched with size and time limits, internal addresses refused unless
allow-listed. A local HTTP server on 127.0.0.1 plays the internal service."""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from openkontext.serve.netguard import Refused, check_url

from .conftest import png_bytes

PNG = png_bytes((48, 48))


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server API)
        if self.path == "/slow.png":
            time.sleep(2)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/image.png")
            self.end_headers()
            return
        body = PNG if self.path in ("/image.png", "/slow.png") else bytes(500_000)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # The server under test may give up first, as it should.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.png", "http://localhost:8080/x.png", "http://10.1.2.3/x.png",
    "http://192.168.0.1/x.png", "http://169.254.169.254/latest/meta-data",
    "http://[::1]/x.png", "http://[::ffff:127.0.0.1]/x.png", "http://0.0.0.0/x.png",
])
def test_internal_addresses_are_refused(url):
    with pytest.raises(Refused, match="loopback, private or link-local"):
        check_url(url, [])


def test_allow_list_by_name_and_network():
    check_url("http://localhost/x.png", ["localhost"])
    check_url("http://10.1.2.3/x.png", ["10.0.0.0/8"])
    with pytest.raises(Refused):
        check_url("http://10.1.2.3/x.png", ["192.168.0.0/16"])
    with pytest.raises(Refused, match="only http and https"):
        check_url("file:///etc/passwd", [])
    with pytest.raises(Refused, match="cannot resolve"):
        check_url("http://no-such-host.invalid/x.png", [])


def test_local_url_refused_by_default(serve, origin):
    live = serve()
    r = live.submit({"prompt": "x", "input_image": f"{origin}/image.png"})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == "input_image" and "127.0.0.1" in detail["msg"]


def test_local_url_accepted_when_allow_listed(serve, origin):
    live = serve(fetch_allow_hosts=["127.0.0.1"], max_input_bytes=100_000,
                 fetch_timeout_seconds=1.0)
    r = live.submit({"prompt": "x", "input_image": f"{origin}/redirect", "steps": 1})
    assert r.status_code == 200, r.text
    body = live.wait(r.json()["polling_url"])
    assert body["status"] == "Ready" and body["result"]["width"] == 64
    big = live.submit({"prompt": "x", "input_image": f"{origin}/big.png"})
    assert big.status_code == 422 and "100,000 byte limit" in big.json()["detail"][0]["msg"]
    slow = live.submit({"prompt": "x", "input_image_2": f"{origin}/slow.png",
                        "input_image": f"{origin}/image.png"})
    assert slow.status_code == 422
    assert slow.json()["detail"][0]["loc"][-1] == "input_image_2"
    assert "took over 1 s" in slow.json()["detail"][0]["msg"]
