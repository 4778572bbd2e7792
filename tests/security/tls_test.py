"""TLS, client certificates and user/password credentials, end to end through the runtime.

A CA and certificates are made by the test (``openssl``); a real nats-server runs with a
``tls`` block (and, per case, ``verify`` for client certificates or a user with a password);
the worker runtime connects through ``Settings(nats_url="tls://...", nats_tls_ca=...)``,
provisions its streams and serves an endpoint that a TLS client can call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.security._certs import Certificates, make_certificates, openssl_available
from workers.codec import decode_payload, encode_payload
from workers.embedded import EmbeddedNats
from workers.runtime import EndpointSpec, Request, Worker, run_worker
from workers.settings import Settings

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(not openssl_available(), reason="openssl command not installed"),
]

STATE = "ionveil.api.policy.*.state"


class ProbeWorker(Worker):
    """A worker with one endpoint, to prove the runtime works over the secured connection."""

    name = "tls-probe"

    def endpoints(self) -> list[EndpointSpec]:
        return [EndpointSpec("state", STATE, self.state)]

    async def state(self, request: Request) -> dict[str, Any]:
        return {"org": request.org, "secure": True}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A fresh CA with server and client certificates."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _config(certs: Certificates, *, verify: bool, password: bool) -> str:
    lines = [
        "tls {",
        f"  cert_file: {str(certs.server_cert)!r}",
        f"  key_file: {str(certs.server_key)!r}",
        f"  ca_file: {str(certs.ca)!r}",
        f"  verify: {'true' if verify else 'false'}",
        "  timeout: 5",
        "}",
    ]
    if password:
        lines += ["authorization { user: ionveil, password: 's3cret-pass' }"]
    return "\n".join(lines) + "\n"


CASES = {
    "tls": {"verify": False, "password": False},
    "tls+client-cert": {"verify": True, "password": False},
    "tls+password": {"verify": False, "password": True},
}


@pytest.fixture(params=sorted(CASES))
def secured(
    request: pytest.FixtureRequest, certs: Certificates, tmp_path: Path
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(case, tls URL, settings fields)`` for a server configured as the case says."""
    case = request.param
    config = tmp_path / "nats.conf"
    config.write_text(_config(certs, **CASES[case]))
    server = EmbeddedNats(tmp_path / "store", config_file=config)
    server.start()
    fields: dict[str, Any] = {"nats_tls_ca": certs.ca}
    if CASES[case]["verify"]:
        fields |= {"nats_tls_cert": certs.client_cert, "nats_tls_key": certs.client_key}
    if CASES[case]["password"]:
        fields |= {"nats_user": "ionveil", "nats_password": "s3cret-pass"}
    try:
        yield case, f"tls://127.0.0.1:{server.port}", fields
    finally:
        server.stop()


def _client_tls(certs: Certificates, fields: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if "nats_tls_cert" in fields:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context


async def test_runtime_works_over_tls(
    secured: tuple[str, str, dict[str, Any]], certs: Certificates, tmp_path: Path
) -> None:
    """The runtime connects with the configured CA (plus client certificate or password),
    provisions every catalogue stream and serves requests made over TLS."""
    case, url, fields = secured
    settings = Settings(nats_url=url, data_dir=tmp_path, log_format="console", **fields)
    async with run_worker(ProbeWorker(), settings, http_port=0) as handle:
        assert handle.ctx.nc.is_connected
        creds = {"user": "ionveil", "password": "s3cret-pass"} if "nats_user" in fields else {}
        client = await nats.connect(url, tls=_client_tls(certs, fields), **creds)
        try:
            reply = await client.request(
                "ionveil.api.policy.metro.state", encode_payload({}), timeout=5
            )
            value, _ = decode_payload(reply.data, reply.headers)
            names = {s.config.name for s in await client.jetstream().streams_info()}
        finally:
            await client.close()
    assert value == {"org": "metro", "secure": True}, case
    assert {"DISPATCH", "INCIDENTS", "POLICY", "ALERTS", "SIMJOBS", "DLQ"} <= names


async def _server_info(port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert line.startswith(b"INFO ")
    return json.loads(line[5:])


async def test_server_requires_tls_and_rejects_an_unknown_ca(
    secured: tuple[str, str, dict[str, Any]], certs: Certificates
) -> None:
    """The server announces ``tls_required``; a client trusting another CA fails the
    handshake (certificate verification), so there is no plaintext or unverified path."""
    _, url, _ = secured
    port = int(url.rsplit(":", 1)[1])
    info = await _server_info(port)
    assert info.get("tls_required") is True
    wrong = ssl.create_default_context(cafile=str(certs.other_ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # INFO, in the clear
        transport = writer.transport
        loop = asyncio.get_running_loop()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.wait_for(
                loop.start_tls(transport, transport.get_protocol(), wrong,
                               server_hostname="127.0.0.1"),
                5,
            )  # fmt: skip
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()  # the failed handshake may already have closed it
