"""The x-key header: optional without configured keys, required and checked with them."""

from __future__ import annotations

from openkontext.serve.settings import ServeSettings, hash_key


def test_keys_are_hashed_at_rest():
    hashed = hash_key("s3cret")
    settings = ServeSettings(api_keys=["s3cret", hashed.upper().replace("SHA256", "sha256")])
    assert settings.api_keys == [hashed, hashed]
    assert "s3cret" not in settings.model_dump_json()
    assert settings.check_key("s3cret") == hashed
    assert settings.check_key("other") is None and settings.check_key(None) is None


def test_without_keys_any_request_is_accepted(serve):
    live = serve()
    assert live.submit({"prompt": "x", "steps": 1}).status_code == 200
    r = live.submit({"prompt": "x", "steps": 1}, headers={"x-key": "anything"})
    assert r.status_code == 200
    assert live.wait(r.json()["polling_url"])["status"] == "Ready"


def test_with_keys_missing_gives_401_and_wrong_gives_403(serve):
    live = serve(api_keys=["alpha", hash_key("beta")])
    missing = live.submit({"prompt": "x", "steps": 1})
    assert missing.status_code == 401 and "x-key" in missing.json()["detail"]
    assert live.submit({"prompt": "x"}, headers={"x-key": "gamma"}).status_code == 403
    assert live.client.get("/v1/get_result", params={"id": "a"}).status_code == 401
    assert live.client.post("/v1/cancel", params={"id": "a"}).status_code == 401
    job = live.submit({"prompt": "x", "steps": 1}, headers={"x-key": "beta"}).json()
    body = live.wait(job["polling_url"], headers={"x-key": "beta"})
    assert body["status"] == "Ready"
    # Another key does not see the job; the signed sample needs no key.
    other = live.client.get(job["polling_url"], headers={"x-key": "alpha"})
    assert other.status_code == 404 and other.json()["status"] == "Task not found"
    assert live.client.get(body["result"]["sample"]).status_code == 200
    assert live.client.get("/health").status_code == 200
