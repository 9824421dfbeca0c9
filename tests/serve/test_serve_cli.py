"""`openkontext serve`, registered on a Typer app; uvicorn.run is replaced by a recorder."""

from __future__ import annotations

import typer
import uvicorn
from typer.testing import CliRunner

from openkontext.serve.cli import register
from openkontext.serve.settings import hash_key


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """openkontext"""

    register(app)
    return app


def _run(monkeypatch, args: list[str], env: dict | None = None):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    result = CliRunner().invoke(_app(), ["serve", *args], env=env)
    return result, calls


def test_without_keys_binds_loopback_and_says_so(monkeypatch, tmp_path):
    result, calls = _run(monkeypatch, ["--host", "0.0.0.0", "--port", "8123",
                                       "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "127.0.0.1 only" in result.output and "refusing to listen on 0.0.0.0" in result.output
    app, kw = calls[0]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8123
    assert app.state.services.settings.data_dir == tmp_path


def test_with_keys_binds_the_given_host(monkeypatch, tmp_path):
    env = {"OPENKONTEXT_API_KEYS": f'["{hash_key("k")}"]'}
    result, calls = _run(monkeypatch, ["--host", "0.0.0.0", "--data-dir", str(tmp_path)], env)
    assert result.exit_code == 0, result.output
    assert calls[0][1]["host"] == "0.0.0.0"
    assert "127.0.0.1 only" not in result.output


def test_hash_key_and_bad_config(monkeypatch, tmp_path):
    result, calls = _run(monkeypatch, ["--hash-key", "k"])
    assert result.output.strip() == hash_key("k") and not calls
    result, calls = _run(monkeypatch, ["--config", str(tmp_path / "none.toml")])
    assert result.exit_code == 2 and "does not exist" in result.output and not calls


def test_ray_flags_reach_the_settings_and_bad_ones_stop_it(monkeypatch, tmp_path):
    from openkontext.serve.ray_executor import RayExecutor

    result, calls = _run(monkeypatch, ["--data-dir", str(tmp_path), "--executor", "ray",
                                       "--autoscale", "1:3", "--ray-address", "head:6379"])
    assert result.exit_code == 0, result.output
    services = calls[0][0].state.services
    s = services.settings
    assert (s.executor, s.ray_autoscale, s.ray_address) == ("ray", (1, 3), "head:6379")
    assert isinstance(services.worker, RayExecutor)  # not started: uvicorn.run is replaced
    for bad, says in ((["--replicas", "2", "--autoscale", "1:3"], "exclude each other"),
                      (["--autoscale", "4"], "MIN:MAX"), (["--autoscale", "3:1"], "min <= max")):
        result, _ = _run(monkeypatch, ["--data-dir", str(tmp_path), "--executor", "ray", *bad])
        assert result.exit_code == 2 and says in result.output, result.output
