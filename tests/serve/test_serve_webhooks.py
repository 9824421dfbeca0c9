"""Webhooks: signed get_result bodies POSTed to a local receiver, retried after failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from openkontext.serve.webhooks import sign


class Receiver(ThreadingHTTPServer):
    """Answers the first `failures` POSTs with 500, then 200; keeps every delivery."""

    def __init__(self, failures: int):
        self.failures = failures
        self.deliveries: list[tuple[dict, bytes, float]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def wait_for(self, n: int, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < n:
            assert time.monotonic() < deadline, f"only {len(self.deliveries)} deliveries"
            time.sleep(0.02)
        return self.deliveries


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Receiver = self.server  # type: ignore[assignment]
        with server.lock:
            server.deliveries.append((dict(self.headers), body, time.monotonic()))
            fail = len(server.deliveries) <= server.failures
        self.send_response(500 if fail else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    servers = []

    def make(failures: int = 0) -> Receiver:
        server = Receiver(failures)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def test_delivery_is_signed_and_retried(serve, receiver):
    hook = receiver(failures=2)
    live = serve(fetch_allow_hosts=["127.0.0.1"], webhook_backoff_seconds=0.1)
    job = live.submit({"prompt": "x", "steps": 1, "webhook_url": hook.url,
                       "webhook_secret": "whsec"}).json()
    deliveries = hook.wait_for(3)
    headers, body, _ = deliveries[-1]
    assert headers["X-Webhook-Secret"] == "whsec"
    expected = hmac.new(b"whsec", headers["X-Webhook-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == f"sha256={expected}"
    assert sign("whsec", headers["X-Webhook-Timestamp"], body) == f"sha256={expected}"
    assert abs(int(headers["X-Webhook-Timestamp"]) - time.time()) < 60
    payload = json.loads(body)
    assert payload["id"] == job["id"] and payload["status"] == "Ready"
    assert payload["result"]["sample"].startswith(f"{live.url}/v1/results/{job['id']}/")
    assert live.client.get(payload["result"]["sample"]).status_code == 200
    gaps = [b[2] - a[2] for a, b in zip(deliveries, deliveries[1:], strict=False)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # backoff doubles
    deadline = time.monotonic() + 10
    while live.services.store.get(job["id"]).webhook_state != "delivered":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_gives_up_after_the_configured_attempts(serve, receiver):
    hook = receiver(failures=100)
    live = serve(fetch_allow_hosts=["127.0.0.1"], webhook_backoff_seconds=0.01,
                 webhook_attempts=3)
    job = live.submit({"prompt": "x", "steps": 1, "webhook_url": hook.url}).json()
    hook.wait_for(3)
    deadline = time.monotonic() + 10
    while live.services.store.get(job["id"]).webhook_state != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert len(hook.deliveries) == 3
    assert "X-Webhook-Signature" not in hook.deliveries[0][0]  # no secret, no signature


def test_internal_webhook_url_refused_unless_allow_listed(serve, receiver):
    hook = receiver()
    live = serve()
    r = live.submit({"prompt": "x", "webhook_url": hook.url})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "webhook_url"


def test_moderated_requests_are_delivered_too(serve, receiver):
    hook = receiver()
    live = serve(fetch_allow_hosts=["127.0.0.1"])
    job = live.submit({"prompt": "a gory scene", "webhook_url": hook.url}).json()
    payload = json.loads(hook.wait_for(1)[0][1])
    assert payload["id"] == job["id"] and payload["status"] == "Request Moderated"
