"""The Ray executor's configuration, without starting Ray: Serve's options from our settings,
the replica's batching rule, and the CLI's --autoscale."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from openkontext.pipeline import Settings
from openkontext.serve.cli import parse_autoscale
from openkontext.serve.settings import ServeSettings

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (make install adds it)")
from openkontext.serve.ray_deployment import batches, deployment_options  # noqa: E402
from openkontext.serve.worker import _Prepared  # noqa: E402


def test_fixed_replicas_reserve_their_share_and_one_thread():
    options = deployment_options(ServeSettings(ray_replicas=3, ray_num_gpus=1, threads=2,
                                               max_batch_images=4))
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    actor = options["ray_actor_options"]
    assert (actor["num_cpus"], actor["num_gpus"]) == (1.0, 1)
    assert actor["runtime_env"]["env_vars"] == {"OMP_NUM_THREADS": "2"}
    assert options["max_ongoing_requests"] == 8  # one batch running, one gathering


def test_autoscaling_aims_at_a_full_batch_per_replica_unless_told():
    options = deployment_options(ServeSettings(ray_autoscale=(0, 6), max_batch_images=2))
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 0, "initial_replicas": 1,
                                             "max_replicas": 6, "target_ongoing_requests": 2}
    options = deployment_options(ServeSettings(ray_autoscale=(2, 4),
                                               ray_target_jobs_per_replica=1.5))
    assert options["autoscaling_config"]["target_ongoing_requests"] == 1.5
    assert options["autoscaling_config"]["initial_replicas"] == 2


def test_autoscale_bounds_are_checked():
    assert parse_autoscale("1:4") == (1, 4) and parse_autoscale(None) is None
    for text in ("4", "1-4", "a:b", ":3", "-1:2"):
        with pytest.raises(ValueError, match="MIN:MAX"):
            parse_autoscale(text)
    for bounds in ((3, 2), (0, 0)):
        with pytest.raises(ValidationError, match="ray_autoscale"):
            ServeSettings(ray_autoscale=bounds)


def _prepared(name: str, key: str, images: int = 1) -> _Prepared:
    return _Prepared(job=name, prompt=name, images=[], settings=Settings(num_images=images),
                     key=(key,))


def test_replica_batches_by_the_local_workers_key_and_image_budget():
    jobs = [_prepared("a1", "a"), _prepared("b1", "b"), _prepared("a2", "a", 2),
            _prepared("a3", "a", 2), _prepared("b2", "b", 4), _prepared("a4", "a")]
    got = [[p.prompt for p in batch] for batch in batches(jobs, max_images=4)]
    # Same key together, in order of first appearance; a batch ends at four images.
    assert got == [["a1", "a2"], ["b1"], ["a3", "a4"], ["b2"]]
    assert [[p.prompt for p in b] for b in batches(jobs[:3], max_images=1)] == [
        ["a1"], ["b1"], ["a2"]]


def test_the_serve_config_builder_takes_settings_from_args_and_environment(monkeypatch):
    from ray.serve import Application

    from openkontext.serve.ray_deployment import app_builder

    monkeypatch.setenv("OPENKONTEXT_RAY_NUM_GPUS", "1")
    app = app_builder({"weights": "random:mini", "max_batch_images": "2"})
    assert isinstance(app, Application)
    deployment = app._bound_deployment  # what Serve will deploy
    assert deployment.name == "KontextReplica"
    assert deployment.ray_actor_options["num_gpus"] == 1
    [settings] = deployment.init_args
    assert (settings.weights, settings.max_batch_images) == ("random:mini", 2)
