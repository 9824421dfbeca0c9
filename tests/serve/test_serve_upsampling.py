"""The built-in OpenAI-compatible prompt upsampler, against a real tiny chat-completions server
on 127.0.0.1 that records what it is sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from openkontext.serve.settings import ServeSettings
from openkontext.serve.upsampling import SYSTEM_PROMPT, OpenAIChatUpsampler, UpsamplingError


@dataclass
class FakeChat:
    """What the fake endpoint answers (`mode`: ok, error, slow, bad-json) and what it saw."""

    base_url: str = ""
    mode: str = "ok"
    answer: str = "  a detailed prompt  "
    requests: list[dict] = field(default_factory=list)


@pytest.fixture
def chat() -> Iterator[FakeChat]:
    state = FakeChat()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            state.requests.append({"path": self.path, "headers": dict(self.headers),
                                   "body": json.loads(self.rfile.read(length))})
            if state.mode == "slow":
                time.sleep(1.0)
            if state.mode == "error":
                status, payload = 500, b'{"error": "model exploded"}'
            elif state.mode == "bad-json":
                status, payload = 200, b"<html>not json</html>"
            else:
                status, payload = 200, json.dumps({
                    "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": state.answer}}],
                }).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (the timeout case)
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_request_shape_and_answer(chat):
    up = OpenAIChatUpsampler(chat.base_url + "/", "tiny-llm", api_key="sk-test")
    assert up("make it blue", []) == "a detailed prompt"
    [req] = chat.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["body"] == {
        "model": "tiny-llm",
        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": "make it blue"}],
        "temperature": 0,
    }


def test_no_api_key_no_authorization_header(chat):
    OpenAIChatUpsampler(chat.base_url, "m", system_prompt="be brief")("x", [])
    [req] = chat.requests
    assert "Authorization" not in req["headers"]
    assert req["body"]["messages"][0] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize(("mode", "words"), [
    ("error", "HTTP 500"), ("slow", "timed out"), ("bad-json", "malformed"),
])
def test_failures_raise_upsampling_error(chat, mode, words):
    chat.mode = mode
    with pytest.raises(UpsamplingError) as info:
        OpenAIChatUpsampler(chat.base_url, "m", timeout=0.3)("x", [])
    assert chat.base_url + "/chat/completions" in str(info.value)
    assert words in str(info.value)


def test_unreachable_raises_upsampling_error():
    with pytest.raises(UpsamplingError, match="127.0.0.1:9/v1/chat/completions"):
        OpenAIChatUpsampler("http://127.0.0.1:9/v1", "m", timeout=2)("x", [])


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENKONTEXT_UPSAMPLER_URL", "http://llm:8080/v1")
    monkeypatch.setenv("OPENKONTEXT_UPSAMPLER_MODEL", "qwen")
    monkeypatch.setenv("OPENKONTEXT_UPSAMPLER_API_KEY", "sk-1")
    s = ServeSettings(data_dir=tmp_path)
    assert (s.upsampler_url, s.upsampler_model, s.upsampler_api_key) == (
        "http://llm:8080/v1", "qwen", "sk-1")


def test_service_uses_configured_upsampler(serve, chat):
    live = serve(upsampler_url=chat.base_url, upsampler_model="tiny-llm")
    assert isinstance(live.services.prompt_upsampler, OpenAIChatUpsampler)
    body = live.wait(live.submit({"prompt": "a cat", "steps": 1,
                                  "prompt_upsampling": True}).json()["polling_url"])
    assert body["status"] == "Ready"
    assert body["result"]["prompt"] == "a detailed prompt"
    assert chat.requests[0]["body"]["messages"][1]["content"] == "a cat"


def test_service_upsampler_failure_ends_job_as_error(serve, chat):
    chat.mode = "error"
    live = serve(upsampler_url=chat.base_url, upsampler_model="tiny-llm")
    body = live.wait(live.submit({"prompt": "a cat", "steps": 1,
                                  "prompt_upsampling": True}).json()["polling_url"])
    assert body["status"] == "Error"
    assert "HTTP 500" in body["details"]["error"]
    assert chat.base_url + "/chat/completions" in body["details"]["error"]
    assert "internal error" not in body["details"]["error"]


def test_url_without_model_is_not_configured(serve, chat):
    live = serve(upsampler_url=chat.base_url)
    response = live.submit({"prompt": "a cat", "prompt_upsampling": True})
    assert response.status_code == 422
    assert "prompt_upsampling" in response.text
