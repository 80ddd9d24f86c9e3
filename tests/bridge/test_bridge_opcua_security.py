"""The OPC UA server itself (in process, on loopback; no Kafka): the trust list of client
certificates, read-only values, and the namespace a PLC program is written against."""

import asyncio
import socket
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import BadCertificateUntrusted
from cryptography.x509.oid import ExtendedKeyUsageOID

from bridge.opcua_server import PlcServer
from bridge.settings import BridgeSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def certificate(folder: Path, name: str, uri: str, use) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.pem", folder / f"{name}.der"
    await setup_self_signed_certificate(key, cert, uri, "localhost", [use], {"commonName": name})
    return key, cert


async def attempt(url: str, key: Path, cert: Path, server_cert: Path, uri: str) -> list:
    client = Client(url, timeout=10)
    client.application_uri = uri
    client.set_user("plc")
    client.set_password("pw")
    await client.set_security(
        SecurityPolicyBasic256Sha256, str(cert), str(key), server_certificate=str(server_cert)
    )
    async with client:
        ns = await client.get_namespace_index("urn:kenpin:plc")
        node = client.get_node(ua.NodeId("kenpin.l1.LastVerdict", ns))
        with pytest.raises(ua.UaError):  # nobody writes a verdict but the bridge
            await node.write_value("OK")
        return [ns, await client.get_node(ua.NodeId("kenpin.l1.Sequence", ns)).read_value()]


def test_only_trusted_client_certificates_connect(tmp_path):
    async def scenario() -> None:
        trusted_dir = tmp_path / "trusted"
        trusted_dir.mkdir()
        server_key, server_cert = await certificate(
            tmp_path, "server", "urn:kenpin:bridge", ExtendedKeyUsageOID.SERVER_AUTH
        )
        known = await certificate(
            trusted_dir, "known", "urn:plant:plc-1", ExtendedKeyUsageOID.CLIENT_AUTH
        )
        stranger = await certificate(
            tmp_path, "stranger", "urn:plant:laptop", ExtendedKeyUsageOID.CLIENT_AUTH
        )
        known[0].rename(tmp_path / "known.pem")  # the folder holds certificates, not keys
        known = (tmp_path / "known.pem", known[1])
        port = free_port()
        settings = BridgeSettings(
            opcua_endpoint=f"opc.tcp://127.0.0.1:{port}/kenpin/",
            opcua_certificate=server_cert,
            opcua_private_key=server_key,
            opcua_password="pw",
            opcua_trusted_clients=trusted_dir,
            lines=["l1"],
        )
        settings.check_opcua()
        server = PlcServer(settings)
        await server.start()
        url = f"opc.tcp://127.0.0.1:{port}/kenpin/"
        try:
            assert await attempt(url, *known, server_cert, "urn:plant:plc-1") == [2, 0]
            with pytest.raises(BadCertificateUntrusted):
                await attempt(url, *stranger, server_cert, "urn:plant:laptop")
        finally:
            await server.stop()

    asyncio.run(scenario())
