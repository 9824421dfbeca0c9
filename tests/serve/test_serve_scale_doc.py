"""docs/scale.md's Kubernetes manifests are well formed and give Serve and the API what they
need: parsed here, `serveConfigV2` checked with Serve's own schema, and every name that must
agree with the code (import path, application, deployment) or with the other manifest
(database secret, shared volume, the head's address) compared."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with ray[serve] (make install)")
DOC = Path(__file__).parents[2] / "docs" / "scale.md"


def manifests() -> dict[str, dict]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), re.S | re.M)
    docs = [yaml.safe_load(b) for b in blocks]
    return {d["kind"]: d for d in docs}


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def data_dir_on_shared_volume(template: dict) -> str:
    """The data dir every container of this pod uses, checked to lie on the shared claim."""
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in template["spec"]["volumes"] if "persistentVolumeClaim" in v}
    dirs = set()
    for c in containers(template):
        data_dir = env_of(c)["OPENKONTEXT_DATA_DIR"]["value"]
        mounts = [m for m in c["volumeMounts"] if data_dir.startswith(m["mountPath"] + "/")]
        assert mounts and claims[mounts[0]["name"]] == "openkontext-shared", c["name"]
        assert not mounts[0].get("readOnly")
        db = env_of(c)["OPENKONTEXT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert db == {"name": "openkontext-db", "key": "url"}
        dirs.add(data_dir)
    assert len(dirs) == 1
    return dirs.pop()


def test_the_rayservice_deploys_our_application_on_autoscaled_gpus():
    from ray.serve.schema import ServeDeploySchema

    from openkontext.serve.ray_deployment import KontextReplica
    from openkontext.serve.settings import ServeSettings

    service = manifests()["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    # 1. serveConfigV2 is what Serve accepts, and names what the code deploys and attaches to.
    config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    [app] = config.applications
    assert app.name == ServeSettings().ray_app_name and app.route_prefix is None
    module, _, attribute = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    [deployment] = app.deployments
    assert deployment.name == KontextReplica.name
    scaling = deployment.autoscaling_config
    assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"]
    assert deployment.ray_actor_options.num_gpus == 1
    # Serve's warning otherwise: a full batch and the next must fit in the replica's queue.
    assert deployment.max_ongoing_requests >= 2 * scaling["target_ongoing_requests"]
    # 2. The cluster: a GPU worker group the autoscaler may grow to every replica.
    cluster = service["spec"]["rayClusterConfig"]
    import ray

    assert cluster["rayVersion"] == ray.__version__ and cluster["enableInTreeAutoscaling"]
    [gpu] = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert gpu["maxReplicas"] >= scaling["max_replicas"]
    [worker] = containers(gpu["template"])
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    # 3. Head and workers share the database and the data dir (the head builds the app).
    head = cluster["headGroupSpec"]["template"]
    assert data_dir_on_shared_volume(head) == data_dir_on_shared_volume(gpu["template"])


def test_the_api_deployment_attaches_to_the_rayservice_head():
    found = manifests()
    service, api = found["RayService"], found["Deployment"]
    [container] = containers(api["spec"]["template"])
    command = container["command"]
    assert command[:4] == ["openkontext", "serve", "--executor", "ray"]
    address = command[command.index("--ray-address") + 1]
    assert address == f"{service['metadata']['name']}-head-svc:6379"
    gpu = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert data_dir_on_shared_volume(api["spec"]["template"]) == data_dir_on_shared_volume(
        gpu["template"])
    env = env_of(container)
    assert {"OPENKONTEXT_API_KEYS", "OPENKONTEXT_URL_SECRET"} <= set(env)
    # The API's autoscale bounds (how many jobs it sends at once) are the deployment's.
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    scaling = serve["applications"][0]["deployments"][0]["autoscaling_config"]
    assert yaml.safe_load(env["OPENKONTEXT_RAY_AUTOSCALE"]["value"]) == [
        scaling["min_replicas"], scaling["max_replicas"]]
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/health" and probe["port"] == container["ports"][0]["containerPort"]


def test_the_database_url_in_the_doc_is_one_the_store_takes():
    urls = re.findall(r"url=(postgresql\+psycopg://\S+)", DOC.read_text())
    assert urls and all(u.startswith("postgresql+psycopg://") for u in urls)
