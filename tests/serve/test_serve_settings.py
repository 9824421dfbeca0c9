"""ServeSettings: defaults, environment, TOML config file and their order."""

from __future__ import annotations

from pathlib import Path

import pytest

from openkontext.serve.settings import ServeSettings, hash_key, is_loopback_host, load_settings


def test_defaults(tmp_path):
    s = ServeSettings(data_dir=tmp_path)
    assert (s.host, s.port, s.prompt_max_length) == ("127.0.0.1", 8000, 4096)
    assert s.db_url == f"sqlite:///{(tmp_path / 'jobs.sqlite3').resolve()}"
    assert s.results_dir == tmp_path / "results"
    assert not s.auth_required
    assert s.tiers["max"].steps == 40 and s.tiers["pro"].steps is None
    assert s.image_limits.max_bytes == 10 * 1024 * 1024 and s.image_limits.max_side == 1920


def test_file_then_env_then_arguments(tmp_path, monkeypatch):
    config = tmp_path / "serve.toml"
    config.write_text(
        'port = 9000\nqueue_max_size = 3\napi_keys = ["' + hash_key("k") + '"]\n'
        'fetch_allow_hosts = ["Images.Internal."]\n[tiers.pro]\nsteps = 12\n'
    )
    s = load_settings(config)
    assert (s.port, s.queue_max_size, s.tiers["pro"].steps) == (9000, 3, 12)
    assert s.check_key("k") and s.fetch_allow_hosts == ["images.internal"]
    monkeypatch.setenv("OPENKONTEXT_PORT", "9100")
    monkeypatch.setenv("OPENKONTEXT_API_KEYS", '["plain"]')
    s = load_settings(config, port=None, data_dir=Path("/tmp/x"))
    assert s.port == 9100 and s.check_key("plain") and not s.check_key("k")
    assert s.data_dir == Path("/tmp/x") and s.queue_max_size == 3
    assert load_settings(config, port=1234).port == 1234
    monkeypatch.setenv("OPENKONTEXT_CONFIG", str(config))
    assert ServeSettings().queue_max_size == 3


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="64 hex"):
        ServeSettings(api_keys=["sha256:abc"])
    with pytest.raises(ValueError, match="public_url"):
        ServeSettings(public_url="example.com")


def test_signing_secret_is_kept(tmp_path):
    s = ServeSettings(data_dir=tmp_path)
    secret = s.signing_secret()
    assert len(secret) == 64 and ServeSettings(data_dir=tmp_path).signing_secret() == secret
    assert (tmp_path / "url-secret").stat().st_mode & 0o777 == 0o600
    assert ServeSettings(url_secret="fixed").signing_secret() == b"fixed"


def test_loopback_hosts():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost")
    assert is_loopback_host("::1") and is_loopback_host("[::1]")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("example.com")
