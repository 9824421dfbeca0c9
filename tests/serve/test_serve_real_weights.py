"""The server on FLUX.1 Kontext [dev] weights (tiny, random) in each layout users hold: an edit
goes through the HTTP API end to end; `serve` with a part missing stops before listening, exit
2, naming the part."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_FLUX
from openkontext.cli import app as cli_app
from openkontext.serve.app import create_app
from openkontext.serve.settings import ServeSettings
from openkontext.weights import save_model
from tiny_text import (
    hub_snapshot,
    write_comfy_text_encoders,
    write_tiny_text_encoders,
    write_tokenizers,
)

from .conftest import png_b64, start_server


def layout(name: str, tmp_path, hub_cache, flux_model, ae_model) -> dict:
    """Settings naming tiny random weights in one of the layouts users hold."""
    clip, t5 = TINY_FLUX.vec_in_dim, TINY_FLUX.context_in_dim
    if name == "hub snapshot":
        hub_snapshot(hub_cache, flux_model, ae_model)
        return {"weights": "kontext-dev"}
    weights = tmp_path / "bfl"
    save_model(flux_model, weights / "flux1-kontext-dev.safetensors")
    save_model(ae_model, weights / "ae.safetensors")
    if name == "bfl + diffusers text encoders":
        write_tiny_text_encoders(tmp_path / "encoders", clip, t5)
        return {"weights": str(weights), "text_encoders": str(tmp_path / "encoders")}
    write_comfy_text_encoders(tmp_path / "comfy", clip, t5, t5_form="fp8_scaled")
    write_tokenizers(tmp_path / "tokenizers")
    return {"weights": str(weights), "text_encoders": str(tmp_path / "comfy"),
            "tokenizers": str(tmp_path / "tokenizers"), "weights_dtype": "fp8"}


@pytest.mark.parametrize("name", ["hub snapshot", "bfl + diffusers text encoders",
                                  "bfl + comfyui fp8 text encoders"])
def test_an_edit_over_http_in_each_layout(name, tmp_path, empty_hub_cache, flux_model, ae_model):
    settings = ServeSettings(**layout(name, tmp_path, empty_hub_cache, flux_model, ae_model),
                             threads=1, data_dir=tmp_path / "data", image_classifier="none")
    server, thread, url = start_server(create_app(settings))
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            r = client.post("/v1/flux-kontext-pro", json={
                "prompt": "make it red", "input_image": png_b64((64, 64)), "width": 64,
                "height": 64, "steps": 2, "seed": 1, "output_format": "png"})
            assert r.status_code == 200, r.text
            deadline_polls = 600
            while (body := client.get(r.json()["polling_url"]).json())["status"] == "Pending":
                deadline_polls -= 1
                assert deadline_polls > 0, body
                time.sleep(0.05)
            assert body["status"] == "Ready", body
            image = Image.open(io.BytesIO(client.get(body["result"]["sample"]).content))
            assert image.size == (64, 64) and np.asarray(image).std() > 1
            info = client.get("/v1/info").json()  # facts of the loaded model
            assert info["model"] == "kontext-dev", info
    finally:
        server.should_exit = True
        thread.join(30)


def test_serve_with_a_missing_part_exits_2_before_listening(tmp_path, flux_model, ae_model):
    weights = tmp_path / "bfl"
    save_model(flux_model, weights / "flux1-kontext-dev.safetensors")
    save_model(ae_model, weights / "ae.safetensors")
    r = CliRunner().invoke(cli_app, ["serve", "--weights", str(weights), "--data-dir",
                                     str(tmp_path / "data"), "--port", "0"])
    assert r.exit_code == 2
    message = " ".join(r.output.split())
    assert "no T5-XXL text encoder" in message and "--text-encoders" in message
    assert not (tmp_path / "data").exists()  # nothing made before the check

