"""How the Redis client is built from settings (no server: clients connect lazily)."""

from __future__ import annotations

import redis
from pydantic import SecretStr

from planes.control import connect_with
from worker.settings import WorkerSettings


def test_tls_setting_turns_a_redis_url_into_a_verified_tls_client(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = WorkerSettings(
        redis_url="redis://h:6380/0",
        redis_tls=True,
        redis_ca_file=ca,
        redis_password=SecretStr("pw"),
    )
    pool = connect_with(settings).connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca)
    assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
    assert pool.connection_kwargs["password"] == "pw"


def test_plain_url_stays_plain_and_keeps_its_own_password():
    pool = connect_with(WorkerSettings(redis_url="redis://:inurl@h:6379/0")).connection_pool
    assert pool.connection_class is redis.Connection
    assert pool.connection_kwargs["password"] == "inurl"
