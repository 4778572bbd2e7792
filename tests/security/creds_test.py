"""NATS decentralised (operator/JWT) authentication with a ``.creds`` file, end to end.

The test mints an operator, an account and users itself (``tests/security/_jwt.py``, no
``nsc``); a real nats-server trusts the operator with the account preloaded in a memory
resolver. A worker given ``IONVEIL_NATS_CREDS`` connects through the runtime, provisions its
streams and answers a request; connections without valid credentials are refused; a user's
JWT permissions hold; a bad ``IONVEIL_NATS_CREDS`` is refused by the settings, naming it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from structlog.testing import capture_logs

from ionveil.errors import ConfigurationError
from tests.security._jwt import Operator, creds_text, new_identity, server_config, user_jwt
from tests.security.conftest import UserSession
from workers.codec import decode_payload, encode_payload
from workers.embedded import EmbeddedNats
from workers.runtime import (
    EndpointSpec,
    Request,
    Worker,
    ensure_streams,
    load_catalogue,
    run_worker,
)
from workers.settings import load_settings

pytestmark = pytest.mark.security

ORG_SUBJECT = "ionveil.dispatch.events.{org}"


class CredsProbe(Worker):
    """A worker with one endpoint, answering which org asked: proof the runtime is up."""

    name = "creds-probe"

    def endpoints(self) -> list[EndpointSpec]:
        return [EndpointSpec("state", "ionveil.api.policy.*.state", self.state)]

    async def state(self, request: Request) -> dict[str, Any]:
        return {"org": request.org, "authenticated": "jwt"}


@dataclass(frozen=True)
class TrustedServer:
    """A nats-server in operator mode and the operator (with its account) it trusts."""

    url: str
    port: int
    operator: Operator


@pytest.fixture
def trusted(tmp_path: Path) -> Iterator[TrustedServer]:
    """A fresh operator and account, and a nats-server with JetStream trusting them."""
    operator = Operator.create()
    config = tmp_path / "operator-mode.conf"
    config.write_text(server_config(operator))
    server = EmbeddedNats(tmp_path / "nats", config_file=config)
    url = server.start()
    try:
        yield TrustedServer(url, server.port, operator)
    finally:
        server.stop()


@pytest.fixture
async def sessions() -> AsyncIterator[list[UserSession]]:
    """Connections opened by a test, closed after it."""
    opened: list[UserSession] = []
    yield opened
    for session in opened:
        if not session.nc.is_closed:
            await session.nc.close()


async def _connect(trusted: TrustedServer, creds: Path, **options: Any) -> UserSession:
    errors: asyncio.Queue[Exception] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        await errors.put(exc)

    nc = await nats.connect(trusted.url, user_credentials=str(creds), error_cb=on_error,
                            allow_reconnect=False, **options)  # fmt: skip
    return UserSession(nc, errors)


async def test_worker_runs_with_a_creds_file(
    trusted: TrustedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sessions: list[UserSession],
) -> None:
    """With ``IONVEIL_NATS_CREDS`` set, the runtime connects as the JWT user, provisions every
    catalogue stream and answers a request from another creds user; no NATS error is logged."""
    creds = trusted.operator.write_creds(tmp_path / "worker.creds", "creds-probe")
    monkeypatch.setenv("IONVEIL_NATS_URL", trusted.url)
    monkeypatch.setenv("IONVEIL_NATS_CREDS", str(creds))
    settings = load_settings(data_dir=tmp_path, log_format="console")
    assert settings.nats_creds == creds
    # Bounded: a worker whose credentials are not used would retry its connection forever.
    with capture_logs() as logs:
        async with asyncio.timeout(20), run_worker(CredsProbe(), settings, http_port=0) as handle:
            assert handle.ctx.nc.is_connected
            client = await _connect(trusted, trusted.operator.write_creds(tmp_path / "c.creds"))
            sessions.append(client)
            reply = await client.nc.request(
                "ionveil.api.policy.metro.state", encode_payload({}), timeout=5
            )
            names = {s.config.name for s in await client.nc.jetstream().streams_info()}
    assert decode_payload(reply.data, reply.headers)[0] == {"org": "metro", "authenticated": "jwt"}
    assert {"DISPATCH", "INCIDENTS", "POLICY", "ALERTS", "SIMJOBS", "DLQ"} <= names
    errors = [entry for entry in logs if entry.get("event") == "nats error"]
    assert not errors, errors


REFUSED = ("no credentials", "user of an unknown account", "valid JWT, another user's seed")


def _refused_connect(operator: Operator, case: str, nonce: str) -> dict[str, Any]:
    """CONNECT fields of a client the server must refuse."""
    fields: dict[str, Any] = {"verbose": False, "pedantic": False}
    user, other = new_identity("user"), new_identity("user")
    if case == "no credentials":
        return fields
    if case == "user of an unknown account":
        token, signer = user_jwt(new_identity("account"), user), user
    else:
        token, signer = user_jwt(operator.account, user), other
    signature = base64.urlsafe_b64encode(signer.sign(nonce.encode())).rstrip(b"=").decode()
    return fields | {"jwt": token, "sig": signature}


@pytest.mark.parametrize("case", REFUSED)
async def test_connection_without_valid_creds_is_refused(trusted: TrustedServer, case: str) -> None:
    """The server answers ``-ERR 'Authorization Violation'`` to a client without a JWT, with a
    JWT signed by an account the operator never issued, or with a valid JWT whose nonce is
    signed by another key (a stolen JWT without its seed).

    Spoken in the raw protocol, as nats_permissions_test.py does: nats-py leaks its socket on a
    refused connect, which the suite's warnings-as-errors would report as a failure.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", trusted.port)
    try:
        line = await reader.readline()
        assert line.startswith(b"INFO ")
        connect = _refused_connect(trusted.operator, case, json.loads(line[5:])["nonce"])
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"-ERR") and b"authorization violation" in answer.lower(), answer


async def test_jwt_permissions_keep_a_user_to_its_org(
    trusted: TrustedServer, tmp_path: Path, sessions: list[UserSession]
) -> None:
    """A user whose JWT allows publishing only to metro's dispatch subject (replies on its own
    inbox) gets its own event stored and a permissions violation for county's, which is never
    stored."""
    operator = trusted.operator
    admin = await _connect(trusted, operator.write_creds(tmp_path / "admin.creds"))
    sessions.append(admin)
    js = admin.nc.jetstream()
    await ensure_streams(js, load_catalogue(), names=["DISPATCH"])
    metro_creds = operator.write_creds(
        tmp_path / "metro.creds",
        "tenant-metro",
        pub_allow=[ORG_SUBJECT.format(org="metro")],
        sub_allow=["_INBOX.metro.>"],
    )
    metro = await _connect(trusted, metro_creds, inbox_prefix="_INBOX.metro")
    sessions.append(metro)
    ack = await metro.nc.jetstream().publish(ORG_SUBJECT.format(org="metro"), b"{}", timeout=5)
    assert ack.stream == "DISPATCH"
    await metro.nc.publish(ORG_SUBJECT.format(org="county"), b"{}")
    assert 'publish to "ionveil.dispatch.events.county"' in await metro.violation()
    info = await js.stream_info("DISPATCH", subjects_filter=">")
    assert info.state.subjects == {ORG_SUBJECT.format(org="metro"): 1}


def _seed_only(path: Path) -> None:
    # The creds file without its JWT block: nats-py would loop forever looking for it.
    path.write_text(creds_text("x", new_identity("user")).split("\n\n", 1)[1])


def _garbage(path: Path) -> None:
    path.write_text("not a creds file\n")


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "x").write_text("")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_seed_only, "no 'BEGIN NATS USER JWT' block"),
        (_garbage, "is not a NATS .creds file"),
        (_directory, "does not exist"),
    ],
)
def test_bad_creds_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path], None], message: str
) -> None:
    """A creds path that is not a readable ``.creds`` file stops the process at start with a
    ConfigurationError naming IONVEIL_NATS_CREDS (nats-py would otherwise loop forever on a
    file without a user JWT). A missing path: tests/unit/settings_test.py."""
    path = tmp_path / "bad.creds"
    make(path)
    monkeypatch.setenv("IONVEIL_NATS_CREDS", str(path))
    with pytest.raises(ConfigurationError, match="IONVEIL_NATS_CREDS:") as info:
        load_settings()
    assert message in str(info.value)


def test_unreadable_creds_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A creds file the process may not read (permissions; root reads anything, so the read
    is made to fail) is named with the reason, not left to fail when NATS connects."""
    path = tmp_path / "locked.creds"
    path.write_text(creds_text("x", new_identity("user")))
    real_read = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(ConfigurationError, match=r"IONVEIL_NATS_CREDS: .*Permission denied"):
        load_settings(nats_creds=path)
