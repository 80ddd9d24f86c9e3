"""PlaneSettings is declared once; settings_env writes what a process reads back."""

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from planes.settings import PlaneSettings, settings_env
from trainer.service.settings import TrainerSettings
from worker.settings import WorkerSettings


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("KENPIN_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_worker_and_trainer_share_the_plane_fields():
    for settings in (WorkerSettings, TrainerSettings):
        assert issubclass(settings, PlaneSettings)
        for name, field in PlaneSettings.model_fields.items():
            assert settings.model_fields[name].default == field.default, (settings, name)
            assert settings.model_fields[name].description == field.description


def test_settings_read_back_from_their_environment(clean_env):
    settings = WorkerSettings(
        s3_access_key=SecretStr("access"),
        s3_secret_key=SecretStr("p@ss w0rd"),
        s3_secure=True,
        normals_rates={"bottle": 0.05},
        model_path=Path("/models/x"),
        frames_topic_pattern=r"^kenpin\.frames\.a-.*",
        max_batch=32,
    )
    env = settings_env(settings)
    assert env["KENPIN_S3_SECRET_KEY"] == "p@ss w0rd"  # in clear: it is for that process
    assert env["KENPIN_S3_SECURE"] == "true"
    assert env["KENPIN_NORMALS_RATES"] == '{"bottle": 0.05}'
    assert "KENPIN_MODEL_S3_KEY" not in env  # None: left unset
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert WorkerSettings() == settings


def test_trainer_settings_with_nested_recipe_values_read_back(clean_env):
    settings = TrainerSettings(scoring={"scales": [1, 2]}, epochs=3, anomalies_dir=Path("/a"))
    for key, value in settings_env(settings).items():
        clean_env.setenv(key, value)
    assert TrainerSettings() == settings


def test_a_few_fields_are_checked_by_their_class(clean_env):
    values = {"device": "cpu", "metrics_port": 0, "model_path": Path("m")}
    env = settings_env(values, WorkerSettings)
    assert env == {"KENPIN_DEVICE": "cpu", "KENPIN_METRICS_PORT": "0", "KENPIN_MODEL_PATH": "m"}
    with pytest.raises(ValueError, match="max_batches"):
        settings_env({"max_batches": 4}, WorkerSettings)
    with pytest.raises(ValidationError):
        settings_env({"device": "tpu"}, WorkerSettings)


def test_the_callers_own_environment_does_not_leak_in(clean_env):
    clean_env.setenv("KENPIN_MAX_BATCH", "0")  # invalid, and not asked for
    assert settings_env({"device": "cpu"}, WorkerSettings) == {"KENPIN_DEVICE": "cpu"}


def test_an_s3_endpoint_with_a_scheme_fails_early_for_every_process():
    for settings in (WorkerSettings, TrainerSettings):
        with pytest.raises(ValidationError, match="without a scheme"):
            settings(s3_endpoint="http://minio:9000")
