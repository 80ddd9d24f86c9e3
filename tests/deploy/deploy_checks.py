"""What the deployment tests share: which settings each kenpin command reads, and their names.

The compose file and the Kubernetes manifests set `KENPIN_*` variables for processes they
start by command (`kenpin-worker run`, ...). A variable no settings class of that process
declares is silently ignored by pydantic-settings (`extra="ignore"`), so a typo in a
manifest would configure nothing; these helpers derive the accepted names from the
settings classes themselves, so a renamed setting fails the deployment tests.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from planes.settings import env_names

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

#: The settings classes each entry point reads ("module:Class"); each mixes in the plane
#: blocks it uses (planes/settings.py).
SETTINGS_OF_COMMAND: dict[str, tuple[str, ...]] = {
    "kenpin-worker": ("worker.settings:WorkerSettings",),
    "kenpin-trainer": ("trainer.service.settings:TrainerSettings",),
    "kenpin-console": ("console.settings:ConsoleSettings",),
    "kenpin-bridge": ("bridge.settings:BridgeSettings",),
}

#: A `KENPIN_` name written anywhere (also in comments): `KENPIN_S3_SECURE`.
KENPIN_NAME = re.compile(r"\bKENPIN_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")


def project_scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml: entry point -> "module:function"."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


def settings_classes(command: str) -> list[type[BaseSettings]]:
    """The settings classes `command` reads; the test fails when one cannot be imported."""
    classes = []
    for spec in SETTINGS_OF_COMMAND[command]:
        module, _, name = spec.partition(":")
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{command} is deployed but its settings {spec} are missing: {exc}")
    return classes


def all_setting_names() -> set[str]:
    """Every `KENPIN_*` name some kenpin process reads."""
    names: set[str] = set()
    for command in SETTINGS_OF_COMMAND:
        for model in settings_classes(command):
            names |= set(env_names(model))
    return names


def kenpin_names_in(text: str) -> set[str]:
    return set(KENPIN_NAME.findall(text))


def check_process_env(
    where: str, command: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`env` (what a manifest gives the process) configures `command` as intended.

    Every `KENPIN_*` name is a setting of that process, every required setting is given,
    and the values parse: each settings class is built from exactly this environment, as
    the process would build it. Values a manifest fills at deploy time (a secret, an
    interpolated `${VAR}`) are passed as given when they are plain strings.
    """
    classes = settings_classes(command)
    known: dict[str, str] = {}
    for model in classes:
        known |= env_names(model)
    unknown = sorted(name for name in env if name.startswith("KENPIN_") and name not in known)
    assert not unknown, f"{where}: {unknown} are not settings of {command}"
    for model in classes:
        names = env_names(model)
        given = {names[n] for n in env if n in names}
        missing = [
            name
            for name, field in names.items()
            if model.model_fields[field].is_required() and field not in given
        ]
        assert not missing, f"{where}: {command} needs {sorted(missing)}"
    for name in list(_kenpin_environ()):
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("KENPIN_"):
            monkeypatch.setenv(name, str(value))
    for model in classes:
        try:
            model()
        except ValidationError as exc:
            pytest.fail(f"{where}: {command}'s {model.__name__} refuses the values: {exc}")


def _kenpin_environ() -> Iterator[str]:
    import os

    return (name for name in os.environ if name.upper().startswith("KENPIN_"))
