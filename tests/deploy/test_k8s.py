"""deploy/k8s: the kustomize overlays render to valid objects that run kenpin as it expects.

Offline, as CI has no cluster: each overlay is rendered by `render` below (base + overlay:
resources, images, namespace, strategic-merge patches: the subset of kustomize the
manifests use, and the test fails on a kustomization field it does not know); where
`kubectl` is installed its own `kubectl kustomize` must give the same objects. Built-in
kinds are validated with kubernetes-validate against the oldest and newest Kubernetes
versions it knows; KEDA's ScaledObject with the vendored subset of its CRD schema
(deploy/k8s/crd-schemas/). Then what kenpin needs: KENPIN_* names are settings of the
process (derived from the settings classes), probes on the worker's metrics port,
termination grace longer than a batch plus the shutdown grace, a PodDisruptionBudget, the
GPU request in the gpu overlay only, credentials from Secrets, and the KEDA trigger on
the workers' consumer group, bounded by the partitions.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from schemas.topics import CONSUMER_GROUP
from tests.deploy.deploy_checks import (
    DEPLOY,
    SETTINGS_OF_COMMAND,
    all_setting_names,
    check_process_env,
    kenpin_names_in,
    project_scripts,
)
from worker.settings import WorkerSettings

K8S = DEPLOY / "k8s"
OVERLAYS = ("cpu", "gpu")
#: Oldest and newest Kubernetes the manifests are checked against (kubernetes-validate's).
K8S_VERSIONS = ("1.28.0", "1.34.0")
KEDA_SCHEMA = K8S / "crd-schemas" / "keda.sh_v1alpha1_scaledobject.json"
#: One forward pass of a full batch, an upper bound for any device kenpin runs on.
BATCH_BOUND_S = 10.0

# --- a small kustomize -----------------------------------------------------------------------

#: Lists Kubernetes merges item by item in a strategic-merge patch, and the key of an item.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "envFrom": None,  # replaced as a whole (no merge key), like tolerations
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
_KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
#: Kinds whose objects have no namespace.
_CLUSTER_KINDS = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(target: Any, patch: Any, field: str | None = None) -> Any:
    """Strategic merge of `patch` into `target` (maps by key; lists by their merge key)."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = _merge(target[key], value, key) if key in target else value
        return merged
    if isinstance(target, list) and isinstance(patch, list) and _MERGE_KEYS.get(field or ""):
        key = _MERGE_KEYS[field]
        merged = [copy.deepcopy(item) for item in target]
        for item in patch:
            index = next((i for i, old in enumerate(merged) if old.get(key) == item.get(key)), None)
            if index is None:
                merged.append(item)
            else:
                merged[index] = _merge(merged[index], item)
        return merged
    return patch


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects of the kustomization in `folder`, as `kubectl kustomize` makes them.

    Supported: `resources` (files, or folders holding a kustomization), `patches` with a
    `path` (strategic merge, its target named by the patch's kind and name), `images`
    (newName / newTag by image name) and `namespace`. Anything else fails the test, so
    the manifests cannot start using a feature this function would silently skip.
    """
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KNOWN_FIELDS
    assert not unknown, f"{folder}: kustomization fields {unknown} are not rendered by this test"
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        docs += render(path) if path.is_dir() else _documents(path)
    for entry in kustomization.get("patches", []):
        assert set(entry) == {"path"}, f"{folder}: only file patches are rendered: {entry}"
        patch = yaml.safe_load((folder / entry["path"]).read_text())
        matches = [
            i
            for i, doc in enumerate(docs)
            if doc["kind"] == patch["kind"] and doc["metadata"]["name"] == patch["metadata"]["name"]
        ]
        assert len(matches) == 1, f"{entry['path']} matches {len(matches)} objects"
        docs[matches[0]] = _merge(docs[matches[0]], patch)
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                name, _, _ = container["image"].partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    tag = image.get("newTag")
                    container["image"] = f"{new}:{tag}" if tag else new
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in _CLUSTER_KINDS:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    out = {}
    for overlay in OVERLAYS:
        docs = render(K8S / "overlays" / overlay)
        keyed = {_key(doc): doc for doc in docs}
        assert len(keyed) == len(docs), f"{overlay}: two objects share a kind and name"
        out[overlay] = keyed
    return out


@pytest.fixture(scope="module")
def example_secret() -> dict[str, Any]:
    (secret,) = _documents(K8S / "secret.example.yaml")
    return secret


def _config_maps(objects) -> dict[str, dict[str, str]]:
    return {
        name: doc.get("data", {}) for (kind, name), doc in objects.items() if kind == "ConfigMap"
    }


def _workloads(objects):
    return [doc for (kind, _), doc in objects.items() if kind == "Deployment"]


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_render_agrees_with_kubectl_kustomize(overlay, rendered):
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    theirs = {_key(doc): doc for doc in yaml.safe_load_all(result.stdout) if doc}
    assert theirs == rendered[overlay]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_are_valid(overlay, rendered, example_secret):
    objects = list(rendered[overlay].values()) + [example_secret]
    for doc in objects:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{overlay} {_key(doc)} on Kubernetes {version}: {exc.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_object_follows_the_consumer_group_within_the_partitions(overlay, rendered):
    schema = json.loads(KEDA_SCHEMA.read_text())
    objects = rendered[overlay]
    scaled = objects["ScaledObject", "kenpin-worker"]
    jsonschema.Draft7Validator(schema).validate(scaled)
    spec = scaled["spec"]
    assert ("Deployment", spec["scaleTargetRef"]["name"]) in objects
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == CONSUMER_GROUP
    worker_config = _config_maps(objects)["kenpin-worker"]
    assert worker_config.get("KENPIN_CONSUMER_GROUP", CONSUMER_GROUP) == CONSUMER_GROUP
    assert meta["bootstrapServers"] == worker_config["KENPIN_KAFKA_BOOTSTRAP"]
    assert "topic" not in meta  # the lag of every line's frame topic the group reads
    assert int(meta["lagThreshold"]) > 0
    # KEDA itself caps the replicas at the partitions unless idle consumers are allowed
    assert meta.get("allowIdleConsumers", "false") == "false"
    partitions = int(scaled["metadata"]["annotations"]["kenpin/frame-partitions"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_gets_only_its_settings(overlay, rendered, example_secret, monkeypatch):
    """KENPIN_* from env and ConfigMaps are settings of the container's command, required
    ones are set, and the values parse; secrets come from Secret keys the example has."""
    objects = rendered[overlay]
    config_maps = _config_maps(objects)
    secret_keys = set(example_secret["stringData"])
    scripts = project_scripts()
    commands = set()
    for workload in _workloads(objects):
        for container in _containers(workload):
            command = container["command"][0]
            assert command in scripts, f"{command} is not an entry point of pyproject.toml"
            commands.add(command)
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                env |= config_maps[source["configMapRef"]["name"]]
            for item in container.get("env", []):
                value_from = item.get("valueFrom", {})
                if "secretKeyRef" in value_from:
                    ref = value_from["secretKeyRef"]
                    assert ref["name"] == example_secret["metadata"]["name"]
                    assert ref["key"] in secret_keys, f"secret key {ref['key']} not in the example"
                    if ref.get("optional"):
                        continue  # absent unless the plant uses it (Kafka SASL)
                    env[item["name"]] = "secret-from-kubernetes"
                elif "fieldRef" in value_from:
                    env[item["name"]] = "pod-name-0"
                else:
                    env[item["name"]] = item["value"]
            secret_words = ("PASSWORD", "SECRET", "ACCESS_KEY")
            for source in container.get("envFrom", []):
                data = config_maps[source["configMapRef"]["name"]]
                leaked = [k for k in data if any(w in k for w in secret_words)]
                assert not leaked, f"credentials {leaked} belong in a Secret, not a ConfigMap"
            where = f"{overlay}/{workload['metadata']['name']}"
            check_process_env(where, command, env, monkeypatch)
    assert commands == set(SETTINGS_OF_COMMAND)
    placeholders = example_secret["stringData"].values()
    assert all(value.startswith("REPLACE-WITH-") for value in placeholders)


def test_every_kenpin_name_in_the_manifests_is_a_setting():
    """Comments too: the commented TLS settings are what an engineer uncomments."""
    known = all_setting_names()
    for path in sorted(K8S.rglob("*.yaml")):
        unknown = kenpin_names_in(path.read_text()) - known
        assert not unknown, f"{path.relative_to(K8S)}: {sorted(unknown)} are not kenpin settings"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_probes_grace_and_disruption_budget(overlay, rendered):
    objects = rendered[overlay]
    worker = objects["Deployment", "kenpin-worker"]
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = _config_maps(objects)["kenpin-worker"]
    defaults = WorkerSettings.model_fields
    port = int(config.get("KENPIN_METRICS_PORT", defaults["metrics_port"].default))
    assert config["KENPIN_METRICS_HOST"] == "0.0.0.0"  # the kubelet probes the pod's address
    (named,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    grace = float(config.get("KENPIN_SHUTDOWN_GRACE_S", defaults["shutdown_grace_s"].default))
    max_wait_s = int(config.get("KENPIN_MAX_WAIT_MS", defaults["max_wait_ms"].default)) / 1000
    assert pod["terminationGracePeriodSeconds"] > grace + max_wait_s + BATCH_BOUND_S
    # a surplus worker finds no partition and never becomes ready: no surge in a rollout
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    budget = objects["PodDisruptionBudget", "kenpin-worker"]
    assert budget["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    assert "maxUnavailable" in budget["spec"]  # minAvailable would block draining one worker
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_gpu_only_in_the_gpu_overlay(rendered):
    def gpus(overlay, name):
        (container,) = _containers(rendered[overlay]["Deployment", name])
        return container["resources"].get("limits", {}).get("nvidia.com/gpu")

    assert gpus("gpu", "kenpin-worker") == 1
    assert gpus("gpu", "kenpin-trainer") == 1
    assert gpus("cpu", "kenpin-worker") is None
    for process in ("kenpin-worker", "kenpin-trainer"):  # where the model runs: their own
        assert _config_maps(rendered["gpu"])[process]["KENPIN_DEVICE"] == "cuda"
        assert _config_maps(rendered["cpu"])[process]["KENPIN_DEVICE"] == "cpu"
    for overlay, suffix in (("cpu", "-cpu"), ("gpu", "-cuda")):
        for workload in _workloads(rendered[overlay]):
            for container in _containers(workload):
                assert container["image"].endswith(suffix), (overlay, container["image"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_bridge_and_console_are_probed(overlay, rendered):
    objects = rendered[overlay]
    (trainer,) = _containers(objects["Deployment", "kenpin-trainer"])
    config = _config_maps(objects)["kenpin-trainer"]
    port = int(config.get("KENPIN_TRAINER_METRICS_PORT", 0))
    assert config["KENPIN_TRAINER_METRICS_HOST"] == "0.0.0.0"
    (named,) = [p for p in trainer["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    assert trainer["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert trainer["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for name in ("kenpin-bridge", "kenpin-console"):
        (container,) = objects["Deployment", name]["spec"]["template"]["spec"]["containers"]
        assert container.get("livenessProbe") and container.get("readinessProbe"), name
        service = objects["Service", name]
        port_names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
