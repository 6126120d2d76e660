"""deploy/k8s/ cannot drift from the app: every environment variable the manifests give is one the app declares
(`ihanoi settings`), what production requires is there, and the commands and probe paths exist.

Their validity against the Kubernetes schemas is checked offline by `kubernetes-validate` in .ci/run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.asgi import resolve_modules
from app.cli import main as cli
from app.settings import ENV_VARS, load_settings

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def declared() -> set[str]:
    names = set(ENV_VARS)
    for module in resolve_modules(load_settings({})):
        if module.settings is not None:
            names |= set(module.settings.env)
    return names


def workloads(docs: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod spec) of every Deployment and Job."""
    found = []
    for doc in docs:
        if doc["kind"] == "Deployment":
            found.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "Job":
            found.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return found


def environment(docs: list[dict], container: dict) -> set[str]:
    """The variable names a container gets: its env entries and the keys of the objects it takes by envFrom."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    names = {entry["name"] for entry in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            kind, ref = "ConfigMap", source["configMapRef"]
        else:
            kind, ref = "Secret", source["secretRef"]
        obj = by_name.get((kind, ref["name"]))
        assert obj is not None, f"{container['name']} takes {kind} {ref['name']}, not in deploy/k8s/"
        names |= set(obj.get("data", {})) | set(obj.get("stringData", {}))
    return names


def test_the_manifests_define_the_whole_production_shape():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in documents())
    assert kinds == [
        ("ConfigMap", "ihanoi-config"), ("Deployment", "ihanoi-api"), ("Deployment", "ihanoi-worker"),
        ("HorizontalPodAutoscaler", "ihanoi-api"), ("Job", "ihanoi-migrate"),
        ("PodDisruptionBudget", "ihanoi-api"), ("PodDisruptionBudget", "ihanoi-worker"),
        ("Secret", "ihanoi-fcm"), ("Secret", "ihanoi-secrets"), ("Service", "ihanoi-api"),
    ]


def test_every_variable_given_is_one_the_app_declares():
    docs, known = documents(), declared()
    for name, pod in workloads(docs):
        for container in pod["containers"]:
            unknown = environment(docs, container) - known
            assert not unknown, f"{name}/{container['name']} sets variables the app does not read: {sorted(unknown)}"


def test_what_production_requires_is_given_to_every_workload():
    docs = documents()
    for name, pod in workloads(docs):
        for container in pod["containers"]:
            env = environment(docs, container)
            for required in ("IHANOI_ENV", "DATABASE_URL", "REDIS_URL", "IHANOI_MASTER_KEY", "IHANOI_REDIS_CLUSTER",
                             "IHANOI_HEALTH_DATA_KEY"):
                assert required in env, f"{name} lacks {required}"
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    # a production deployment never falls back to embedded services or dev defaults
    assert config["IHANOI_ENV"] == "prod"
    settings = load_settings(config)  # every value the ConfigMap gives is one the app accepts
    assert settings.env == "prod" and settings.redis_cluster and settings.workers == 1
    secrets = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "ihanoi-secrets")
    assert all("CHANGE-ME" in value for value in secrets["stringData"].values()), "a real secret in the repository?"


def test_commands_and_probes_exist():
    docs = documents()
    commands = {pod["containers"][0]["command"][1] for _, pod in workloads(docs)}
    assert commands == {"serve", "worker", "migrate"}
    assert commands <= set(cli.commands)
    api = next(pod for name, pod in workloads(docs) if name == "ihanoi-api")["containers"][0]
    assert api["command"] == ["ihanoi", "serve", "--no-migrate"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ihanoi-api" and hpa["spec"]["minReplicas"] >= 2


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_the_probe_paths_answer(client, path):
    assert (await client.get(path)).status_code == 200
