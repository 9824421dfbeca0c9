"""LoRAs on the server: the operator's folder listed at GET /v1/loras, a request's `loras`
checked at submission and applied to its job only, and batches that hold one LoRA set."""

from __future__ import annotations

import threading

import pytest
import torch
import typer
import uvicorn
from safetensors.torch import save_file
from typer.testing import CliRunner

from lora_files import write_lora
from openkontext.loras import LoraLibrary
from openkontext.pipeline import Kontext, Settings
from openkontext.serve.settings import hash_key

from .conftest import SlowKontext, png_b64, png_bytes, until

EDIT = {"prompt": "make the circle blue", "seed": 1, "steps": 2}
FIT = ["double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "single_blocks.3.linear2"]


@pytest.fixture
def loras_dir(tmp_path, mini_model):
    """a: rank 4 on four layers; b: rank 2 on three."""
    folder = tmp_path / "loras"
    folder.mkdir()
    write_lora(folder / "a.safetensors", mini_model.flux, seed=1)
    write_lora(folder / "b.safetensors", mini_model.flux, FIT, rank=2, seed=2)
    (folder / "notes.txt").write_text("not a LoRA")
    return folder


def _sample(live, body: dict) -> bytes:
    """The bytes of a Ready job's picture."""
    job = live.submit(body)
    assert job.status_code == 200, job.text
    done = live.wait(job.json()["polling_url"])
    assert done["status"] == "Ready", done
    return live.client.get(done["result"]["sample"]).content


def _refused(response) -> dict:
    """The one error of a 422."""
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    return error


def test_the_folder_is_listed(serve, loras_dir):
    live = serve(loras_dir=loras_dir)
    listed = live.client.get("/v1/loras")
    assert listed.status_code == 200
    assert listed.json() == {"loras": [
        {"name": "a", "rank": 4, "layers": 4,
         "bytes": (loras_dir / "a.safetensors").stat().st_size},
        {"name": "b", "rank": 2, "layers": 3,
         "bytes": (loras_dir / "b.safetensors").stat().st_size},
    ]}
    spec = live.client.get("/openapi.json").json()
    ok = spec["paths"]["/v1/loras"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LoraList"}
    choice = spec["components"]["schemas"]["LoraChoice"]["properties"]
    assert (choice["scale"]["minimum"], choice["scale"]["maximum"]) == (-4, 4)


@pytest.mark.filterwarnings("ignore:.*skipped 1 unknown keys")  # load_lora's, on the server
def test_a_file_that_is_not_a_lora_is_left_out_and_refused(serve, loras_dir):
    (loras_dir / "broken.safetensors").write_bytes(b"garbage")
    save_file({"x": torch.zeros(2)}, str(loras_dir / "weights.safetensors"))
    live = serve(loras_dir=loras_dir)
    listed = live.client.get("/v1/loras")
    assert [r["name"] for r in listed.json()["loras"]] == ["a", "b"]
    for name, why in [("broken", "no safetensors header"), ("weights", "no LoRA key")]:
        error = _refused(live.submit({**EDIT, "loras": [{"name": name}]}))
        assert error["loc"] == ["body", "loras", 0, "name"] and why in error["msg"]


def test_listing_needs_a_key_when_the_server_has_keys(serve, loras_dir):
    live = serve(loras_dir=loras_dir, api_keys=[hash_key("k")])
    assert live.client.get("/v1/loras").status_code == 401
    assert live.client.get("/v1/loras", headers={"x-key": "wrong"}).status_code == 403
    names = [r["name"] for r in live.client.get("/v1/loras", headers={"x-key": "k"}).json()[
        "loras"]]
    assert names == ["a", "b"]


def test_a_lora_changes_its_job_only(serve, loras_dir, mini_model):
    live = serve(loras_dir=loras_dir)
    body = {**EDIT, "input_image": png_b64()}
    plain = _sample(live, body)
    with_a = _sample(live, {**body, "loras": [{"name": "a", "scale": 1}]})
    after = _sample(live, body)
    at_zero = _sample(live, {**body, "loras": [{"name": "a", "scale": 0}]})
    half = _sample(live, {**body, "loras": [{"name": "a", "scale": 0.5}]})
    assert with_a != plain and half not in (plain, with_a)
    assert after == plain  # the adapters are gone once the job is done
    assert at_zero == plain
    # The job ran at the strength asked for: the pipeline itself gives the same bytes.
    kontext = Kontext(mini_model, loras=LoraLibrary(loras_dir, allow_paths=False))
    alone = kontext.run(EDIT["prompt"], [png_bytes()], Settings(seed=1, steps=2,
                                                               loras=[("a", 0.5)]))
    assert alone.encode("png")[0] == half


def test_bad_lora_fields_are_422_naming_them(serve, loras_dir):
    live = serve(loras_dir=loras_dir)
    error = _refused(live.submit({**EDIT, "loras": [{"name": "zzz"}]}))
    assert error["loc"] == ["body", "loras", 0, "name"]
    assert "unknown LoRA 'zzz'" in error["msg"] and "known: a, b" in error["msg"]
    second = _refused(live.submit({**EDIT, "loras": [{"name": "a"}, {"name": "../a"}]}))
    assert second["loc"] == ["body", "loras", 1, "name"]
    for name in ("notes", "a.safetensors", str(loras_dir / "a.safetensors")):  # names only
        assert _refused(live.submit({**EDIT, "loras": [{"name": name}]}))["loc"][-1] == "name"
    five = [{"name": "a"}] * 5
    assert _refused(live.submit({**EDIT, "loras": five}))["loc"] == ["body", "loras"]
    for choice, where in [({"name": "a", "scale": 5}, "scale"),
                          ({"name": "a", "scale": -4.5}, "scale"),
                          ({"name": "a", "scale": "1"}, "scale"),
                          ({"name": "a", "scale": True}, "scale"),
                          ({"name": ""}, "name"),
                          ({"name": "x" * 101}, "name"),
                          ({"name": "a", "strength": 1}, "strength"),
                          ({"scale": 1}, "name")]:
        assert _refused(live.submit({**EDIT, "loras": [choice]}))["loc"] == [
            "body", "loras", 0, where], choice
    assert _refused(live.submit({**EDIT, "loras": {"name": "a"}}))["loc"] == ["body", "loras"]
    assert live.services.store.queue_depth() == 0
    assert 'openkontext_jobs{state="queued"} 0' in live.client.get("/metrics").text


def test_a_lora_that_does_not_fit_the_model_is_refused_at_submission(serve, tmp_path,
                                                                      mini_model):
    folder = tmp_path / "loras"
    folder.mkdir()
    write_lora(folder / "other.safetensors", mini_model.flux, FIT,
               wrong_in={"single_blocks.1.linear1"})
    live = serve(loras_dir=folder)
    until(lambda: live.services.worker.facts is not None, what="the model to load")
    error = _refused(live.submit({**EDIT, "loras": [{"name": "other", "scale": 1}]}))
    assert error["loc"] == ["body", "loras", 0, "name"]
    assert "single_blocks.1.linear1" in error["msg"] and "does not fit" in error["msg"]
    assert live.services.store.queue_depth() == 0


def test_without_a_folder_there_are_no_loras(serve):
    live = serve()
    assert live.client.get("/v1/loras").json() == {"loras": []}
    error = _refused(live.submit({**EDIT, "loras": [{"name": "a"}]}))
    assert error["loc"] == ["body", "loras", 0, "name"]
    assert "unknown LoRA 'a'" in error["msg"] and "none are installed" in error["msg"]
    # An empty list is no LoRAs, as the hosted API's clients (which never send it) get.
    assert live.wait(live.submit({**EDIT, "loras": []}).json()["polling_url"])["status"] == "Ready"


def test_the_idempotency_key_tells_lora_sets_apart(serve, loras_dir):
    live = serve(loras_dir=loras_dir)
    key = {"Idempotency-Key": "one"}
    first = live.submit({**EDIT, "loras": [{"name": "a"}]}, headers=key)
    again = live.submit({**EDIT, "loras": [{"name": "a", "scale": 1.0}]}, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = live.submit({**EDIT, "loras": [{"name": "a", "scale": 0.5}]}, headers=key)
    assert other.status_code == 409
    assert live.submit(EDIT, headers=key).status_code == 409
    job = live.services.store.get(first.json()["id"])
    assert job.params["loras"] == [{"name": "a", "scale": 1.0}]


def test_batches_hold_one_lora_set(serve, loras_dir, mini_model):
    gate = threading.Event()
    kontext = SlowKontext(mini_model, gate=gate)  # the server gives it the folder's LoRAs
    live = serve(kontext, loras_dir=loras_dir, max_batch_images=4)
    a, b = {"name": "a"}, {"name": "b", "scale": 0.5}
    try:
        live.submit({"prompt": "first", "steps": 1})
        until(lambda: kontext.batches == [["first"]], what="the first batch")
        jobs = [live.submit(body).json() for body in [
            {"prompt": "plain", "steps": 1},
            {"prompt": "a", "steps": 1, "loras": [a]},
            {"prompt": "b", "steps": 1, "loras": [b]},
            {"prompt": "a again", "steps": 1, "loras": [{"name": "a", "scale": 1.0}]},
            {"prompt": "a+b", "steps": 1, "loras": [a, b]},
            {"prompt": "b+a", "steps": 1, "loras": [b, a]},
            {"prompt": "plain again", "steps": 1, "loras": []},
        ]]
    finally:
        gate.set()
    assert [live.wait(j["polling_url"])["status"] for j in jobs] == ["Ready"] * 7
    assert kontext.batches == [["first"], ["plain", "plain again"], ["a", "a again"], ["b"],
                               ["a+b"], ["b+a"]]


def test_serve_refuses_a_loras_dir_that_is_not_there(monkeypatch, tmp_path):
    from openkontext.serve.cli import serve_command

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    missing = tmp_path / "no-such-folder"
    app = typer.Typer()
    app.command()(serve_command)
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "--loras-dir",
                                      str(missing)])
    assert result.exit_code == 2 and not calls
    assert f"loras_dir {missing} is not a folder" in result.output
