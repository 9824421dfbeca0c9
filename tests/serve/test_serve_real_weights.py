"""The server on FLUX.1 Kontext [dev]-layout weights (tiny, random): settings name the BFL files,
ComfyUI text encoders and tokenizers; an edit goes through the HTTP API end to end; `serve`
with a part missing stops before listening, exit 2, naming the part."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_FLUX
from openkontext.cli import app as cli_app
from openkontext.serve.app import create_app
from openkontext.serve.settings import ServeSettings
from openkontext.weights import save_model
from tiny_text import write_comfy_text_encoders, write_tokenizers

from .conftest import png_b64, start_server


def test_an_edit_over_http_on_bfl_files_with_comfyui_text_encoders(tmp_path, flux_model,
                                                                   ae_model):
    weights, comfy, tokens = tmp_path / "bfl", tmp_path / "comfy", tmp_path / "tokenizers"
    save_model(flux_model, weights / "flux1-kontext-dev.safetensors")
    save_model(ae_model, weights / "ae.safetensors")
    write_comfy_text_encoders(comfy, TINY_FLUX.vec_in_dim, TINY_FLUX.context_in_dim,
                              t5_form="fp8_scaled")
    write_tokenizers(tokens)
    settings = ServeSettings(weights=str(weights), text_encoders=str(comfy),
                             tokenizers=str(tokens), weights_dtype="fp8", threads=1,
                             data_dir=tmp_path / "data", image_classifier="none")
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

