"""The shared Redis and S3 security settings, and how a bad one is reported."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from planes.settings import PlaneSettings, settings_problems


def test_the_redis_password_is_given_once():
    with pytest.raises(ValidationError, match="give one"):
        PlaneSettings(redis_url="redis://:a@h:6379/0", redis_password=SecretStr("b"))
    settings = PlaneSettings(redis_url="redis://h:6379/0", redis_password=SecretStr("pw-42"))
    assert "pw-42" not in repr(settings)


def test_tls_to_redis_from_the_setting_or_the_url():
    assert not PlaneSettings().redis_uses_tls
    assert PlaneSettings(redis_tls=True).redis_uses_tls
    assert PlaneSettings(redis_url="rediss://h:6380/0").redis_uses_tls


def test_ca_files_must_exist(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert PlaneSettings(redis_ca_file=ca, s3_ca_file=ca).s3_ca_file == ca
    with pytest.raises(ValidationError):
        PlaneSettings(s3_ca_file=tmp_path / "missing.pem")


def test_a_settings_error_is_one_line_naming_the_variables(tmp_path):
    with pytest.raises(ValidationError) as info:
        PlaneSettings(s3_ca_file=tmp_path / "missing.pem", log_level="LOUD")
    line = settings_problems(info.value)
    assert "\n" not in line
    assert line.startswith("invalid settings: ")
    assert "KENPIN_S3_CA_FILE: " in line and "KENPIN_LOG_LEVEL: " in line
