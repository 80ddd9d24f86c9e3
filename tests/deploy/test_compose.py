"""deploy/compose/compose.yaml: the one-server stack is wired as kenpin reads its settings.

Docker is not on the CI machines, so the file is parsed and checked here: the kenpin
services set only real settings (derived from the settings classes) and every required
one, with values those classes accept once `.env.example` is interpolated; images are
pinned; every long-running service has a healthcheck and waits for what it needs to be
healthy; secrets come from `.env`, not from the file; the broker takes kenpin's largest
record; the frame topics carry the contract's prefix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.topics import FRAMES_TOPIC_PREFIX
from tests.deploy.deploy_checks import (
    DEPLOY,
    SETTINGS_OF_COMMAND,
    all_setting_names,
    check_process_env,
    kenpin_names_in,
    project_scripts,
)
from worker.settings import WorkerSettings

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILES = ("compose.yaml", "compose.gpu.yaml")
SECRET_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY", "TOKEN")
# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / name).read_text())


def _dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (single quotes: literal)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${...}` interpolation of one value; a `:?` with nothing set fails the test."""
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if op in (":?", "?") and not current:
            pytest.fail(f"{name} is required by compose.yaml ({arg}) and .env.example lacks it")
        if op == ":-" and not current:
            return arg
        if op == "-" and current is None:
            return arg
        return current or ""

    return _INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load("compose.yaml")


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    return _dotenv(COMPOSE_DIR / ".env.example")


def _kenpin_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run a kenpin command (the image's entry points)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command") and service["command"][0] in SETTINGS_OF_COMMAND
    }


def test_the_stack_has_every_part_of_a_plant(compose):
    services = compose["services"]
    for needed in ("kafka", "minio", "redis", "prometheus", "grafana", "worker", "trainer"):
        assert needed in services, needed
    commands = {s["command"][0] for s in _kenpin_services(compose).values()}
    assert commands == set(SETTINGS_OF_COMMAND), commands
    assert services["worker"]["deploy"]["replicas"] >= 2
    # Kafka in KRaft mode: no ZooKeeper anywhere.
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("zookeeper" in name for name in services)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_kenpin_variables_are_settings(name, compose, dotenv, monkeypatch):
    """Every KENPIN_* a kenpin service sets is a setting of its command, its required ones
    are set, and the values (with .env.example interpolated) are accepted."""
    document = _load(name)
    base = compose["services"]
    for service_name, service in document["services"].items():
        command = (service.get("command") or base.get(service_name, {}).get("command") or [""])[0]
        env = {}
        if name != "compose.yaml":  # an override file: its values on top of compose.yaml's
            env = dict(base.get(service_name, {}).get("environment") or {})
        env |= service.get("environment") or {}
        env = {k: _interpolate(v, dotenv) for k, v in env.items()}
        if command in SETTINGS_OF_COMMAND:
            check_process_env(f"{name}:{service_name}", command, env, monkeypatch)
        else:
            assert not [k for k in env if k.startswith("KENPIN_")], (
                f"{service_name} is not a kenpin process but sets KENPIN_* variables"
            )


def test_every_kenpin_name_in_the_compose_folder_is_a_setting():
    """Also the ones in comments and in .env.example: a name there is what people copy."""
    known = all_setting_names()
    for path in sorted(COMPOSE_DIR.glob("*")) + sorted(COMPOSE_DIR.glob(".env*")):
        unknown = kenpin_names_in(path.read_text()) - known
        assert not unknown, f"{path.name}: {sorted(unknown)} are not kenpin settings"


def test_commands_are_declared_entry_points(compose):
    scripts = project_scripts()
    for name, service in _kenpin_services(compose).items():
        assert service["command"][0] in scripts, name


def test_images_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        if image.startswith("${"):  # kenpin's own, built here; the default names a version
            assert "build" in service, name
            image = image.split(":-", 1)[1].rstrip("}")
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"


def test_services_are_healthchecked_and_wait_for_healthy_dependencies(compose):
    services = compose["services"]
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        if not one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wanted = condition["condition"]
            if services[dependency].get("restart") == "no":
                assert wanted == "service_completed_successfully", (name, dependency)
            else:
                assert wanted == "service_healthy", (name, dependency)
    worker_needs = set(services["worker"]["depends_on"])
    assert {"kafka", "redis", "minio"} <= worker_needs
    assert {"redis", "minio"} <= set(services["trainer"]["depends_on"])


def test_volumes_and_mounted_files_exist(compose):
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared
    for stateful in ("kafka", "minio", "redis", "prometheus", "grafana", "trainer"):
        assert compose["services"][stateful].get("volumes"), f"{stateful} keeps no volume"


def test_secrets_come_from_the_env_file(compose, dotenv):
    """No secret literal in compose.yaml; .env.example holds only marked development values."""
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), (
                    f"{name}: {key} must be `${{VAR:?...}}` from .env, not {value!r}"
                )
    secrets = {k: v for k, v in dotenv.items() if any(w in k for w in SECRET_WORDS)}
    assert secrets
    for key, value in secrets.items():
        if key in {"MINIO_ROOT_USER", "KENPIN_S3_ACCESS_KEY"}:
            continue  # user names
        assert "dev-only-change-me" in value, f".env.example: {key} is not a marked placeholder"
    assert "LOCAL DEVELOPMENT DEFAULTS" in (COMPOSE_DIR / ".env.example").read_text()


def test_kafka_takes_kenpin_records_and_frame_topics_follow_the_contract(compose):
    services = compose["services"]
    largest = WorkerSettings.model_fields["kafka_max_message_bytes"].default
    broker = services["kafka"]["environment"]
    assert int(broker["KAFKA_MESSAGE_MAX_BYTES"]) > largest
    assert int(broker["KAFKA_REPLICA_FETCH_MAX_BYTES"]) >= int(broker["KAFKA_MESSAGE_MAX_BYTES"])
    assert broker["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # KRaft's cluster id: a base64url UUID (16 bytes, 22 characters).
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{21}", broker["CLUSTER_ID"])
    init = services["kafka-init"]["environment"]
    assert init["FRAMES_TOPIC_PREFIX"] == FRAMES_TOPIC_PREFIX
    assert int(init["FRAME_MAX_MESSAGE_BYTES"]) > largest
    assert "--if-not-exists" in services["kafka-init"]["command"][0]


def test_workers_get_time_to_finish_on_stop(compose):
    worker = compose["services"]["worker"]
    grace = float(worker["environment"]["KENPIN_SHUTDOWN_GRACE_S"])
    stop = worker["stop_grace_period"]
    assert stop.endswith("s")
    # a batch (bounded well under 10 s) plus the grace, before Docker's SIGKILL
    assert float(stop[:-1]) >= grace + 10
    metrics_port = str(worker["environment"]["KENPIN_METRICS_PORT"])
    assert f":{metrics_port}/livez" in " ".join(worker["healthcheck"]["test"])
    assert worker["environment"]["KENPIN_METRICS_HOST"] == "0.0.0.0"


def test_prometheus_scrapes_the_workers_and_trainer_on_their_metrics_ports(compose):
    config = yaml.safe_load((DEPLOY / "observability/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = compose["services"]["worker"]["environment"]["KENPIN_METRICS_PORT"]
    (sd,) = jobs["kenpin-worker"]["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == port
    trainer = compose["services"]["trainer"]
    port = trainer["environment"]["KENPIN_TRAINER_METRICS_PORT"]
    assert trainer["environment"]["KENPIN_TRAINER_METRICS_HOST"] == "0.0.0.0"
    assert f":{port}/livez" in " ".join(trainer["healthcheck"]["test"])
    (static,) = jobs["kenpin-trainer"]["static_configs"]
    assert static["targets"] == [f"trainer:{port}"]


def test_the_deployment_guide_names_real_settings_and_every_alert():
    """docs/deploy.md is what engineers copy from: its names must exist."""
    guide = (DEPLOY.parent / "docs" / "deploy.md").read_text()
    unknown = kenpin_names_in(guide) - all_setting_names()
    assert not unknown, f"docs/deploy.md names {sorted(unknown)}, which are not settings"
    rules = yaml.safe_load((DEPLOY / "observability/prometheus/alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert not {a for a in alerts if f"`{a}`" not in guide}, "alerts missing from the guide"


def test_the_bridge_can_serve_opc_ua_as_configured(compose, dotenv, monkeypatch):
    """`kenpin-bridge opcua` refuses to start without a certificate and a PLC password."""
    from bridge.settings import BridgeSettings

    bridge = compose["services"]["bridge"]
    assert bridge["command"] == ["kenpin-bridge", "opcua"]
    for name in [n for n in os.environ if n.startswith("KENPIN_")]:
        monkeypatch.delenv(name)
    for name, value in bridge["environment"].items():
        monkeypatch.setenv(name, str(_interpolate(value, dotenv)))
    BridgeSettings().check_opcua()  # raises ValueError when the server could not be used
    secrets = {s: compose["secrets"][s]["file"] for s in bridge["secrets"]}
    env = bridge["environment"]
    for setting in ("KENPIN_BRIDGE_OPCUA_CERTIFICATE", "KENPIN_BRIDGE_OPCUA_PRIVATE_KEY"):
        assert env[setting].removeprefix("/run/secrets/") in secrets
