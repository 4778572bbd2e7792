"""The shipped NATS configuration (deploy/nats/nats-server.conf) enforces who may do what.

A real nats-server is started with that file (port and store directory from the command line,
passwords from the environment, as in docker-compose). Services can do their job; dashboard
cannot publish alerts; a tenant reaches only its own org's subjects and inbox.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from workers.embedded import EmbeddedNats

pytestmark = pytest.mark.security

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "nats-server.conf"
USERS = ("admin", "policy", "analytics", "dashboard", "alerts", "simulator", "publisher")
TENANTS = ("metro", "county")
STREAMS = {
    "DISPATCH": ["ionveil.dispatch.events.>"],
    "INCIDENTS": ["ionveil.incidents.>"],
    "POLICY": ["ionveil.policy.transitions.>"],
    "ALERTS": ["ionveil.alerts.>"],
    "DLQ": ["ionveil.dlq.>"],
}


def _password(user: str) -> str:
    return f"test-{user}-secret"


def _env_name(user: str) -> str:
    return f"IONVEIL_NATS_{user.upper().replace('-', '_')}_PASSWORD"


@pytest.fixture
def secured_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A nats-server running the shipped configuration; yields its URL."""
    for user in (*USERS, *(f"tenant-{org}" for org in TENANTS)):
        monkeypatch.setenv(_env_name(user), _password(user))
    server = EmbeddedNats(tmp_path / "nats", config_file=CONFIG)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


class Session:
    """A connection as one user, with the asynchronous errors the server sent it."""

    def __init__(self) -> None:
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.nc: NATS | None = None

    async def on_error(self, exc: Exception) -> None:
        await self.errors.put(exc)

    async def violation(self, timeout_s: float = 5.0) -> str:
        """The next permissions-violation error message (fails the test if none comes)."""
        exc = await asyncio.wait_for(self.errors.get(), timeout_s)
        text = str(exc).lower()
        assert "permissions violation" in text, text
        return text


Connect = Callable[[str], Awaitable[Session]]


@pytest.fixture
async def connect(secured_nats: str) -> AsyncIterator[Connect]:
    """Open sessions as named users (tenants use their own inbox prefix); closes them all."""
    sessions: list[Session] = []

    async def _connect(user: str) -> Session:
        session = Session()
        inbox = f"_INBOX.{user.removeprefix('tenant-')}" if user.startswith("tenant-") else None
        session.nc = await nats.connect(
            secured_nats,
            user=user,
            password=_password(user),
            error_cb=session.on_error,
            allow_reconnect=False,
            **({"inbox_prefix": inbox} if inbox else {}),
        )
        sessions.append(session)
        return session

    yield _connect
    for session in sessions:
        if session.nc is not None and not session.nc.is_closed:
            await session.nc.close()


@pytest.fixture
async def streams(connect: Connect) -> None:
    """The IonVeil streams, created by the admin user."""
    admin = await connect("admin")
    js = admin.nc.jetstream()  # type: ignore[union-attr]
    for name, subjects in STREAMS.items():
        await js.add_stream(StreamConfig(name=name, subjects=subjects))


@pytest.mark.parametrize("credentials", [{"user": "policy", "pass": "wrong"}, {}])
async def test_wrong_or_missing_password_is_refused(
    secured_nats: str, credentials: dict[str, str]
) -> None:
    """A client with a wrong password, or none, is refused with an authorization error.

    Spoken in the raw protocol: nats-py leaks its socket on a refused connect, which the
    suite's warnings-as-errors would report as a test failure.
    """
    host, port = secured_nats.removeprefix("nats://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        assert (await reader.readline()).startswith(b"INFO")
        connect = {"verbose": False, "pedantic": False, **credentials}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"-ERR") and b"authorization" in line.lower(), line
    finally:
        writer.close()
        await writer.wait_closed()


async def test_policy_service_consumes_dispatch_and_publishes_transitions(
    connect: Connect, streams: None
) -> None:
    """The policy user pulls from its durable, acks, and publishes a transition into POLICY."""
    publisher = await connect("publisher")
    pjs = publisher.nc.jetstream()  # type: ignore[union-attr]
    ack = await pjs.publish("ionveil.dispatch.events.metro", b"{}", headers={"Nats-Msg-Id": "e1"})
    assert ack.stream == "DISPATCH"

    policy = await connect("policy")
    js = policy.nc.jetstream()  # type: ignore[union-attr]
    sub = await js.pull_subscribe(
        "ionveil.dispatch.events.>", durable="policy-engine", stream="DISPATCH"
    )
    msgs = await sub.fetch(1, timeout=5)
    assert msgs[0].subject == "ionveil.dispatch.events.metro"
    await msgs[0].ack_sync()
    info = await js.consumer_info("DISPATCH", "policy-engine")
    assert info.num_ack_pending == 0

    ack = await js.publish("ionveil.policy.transitions.metro", b"{}", headers={"Nats-Msg-Id": "t1"})
    assert ack.stream == "POLICY"
    assert policy.errors.empty()


async def test_service_endpoint_answers_its_own_tenant(connect: Connect) -> None:
    """A tenant requests its own org's API subject and the serving service may reply to it."""
    dashboard = await connect("dashboard")

    async def reply(msg: Msg) -> None:
        await msg.respond(json.dumps({"org": msg.subject.split(".")[3]}).encode())

    await dashboard.nc.subscribe("ionveil.api.dashboard.*.*", cb=reply)  # type: ignore[union-attr]
    await dashboard.nc.flush()  # type: ignore[union-attr]
    metro = await connect("tenant-metro")
    answer = await metro.nc.request(  # type: ignore[union-attr]
        "ionveil.api.dashboard.metro.snapshot", b"{}", timeout=5
    )
    assert json.loads(answer.data) == {"org": "metro"}
    assert metro.errors.empty() and dashboard.errors.empty()


async def test_tenant_receives_its_own_alerts_and_dashboard_updates(connect: Connect) -> None:
    """metro can subscribe to its alerts and dashboard updates; a service publishes them."""
    metro = await connect("tenant-metro")
    got: asyncio.Queue[str] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await got.put(msg.subject)

    await metro.nc.subscribe("ionveil.alerts.metro.>", cb=on_msg)  # type: ignore[union-attr]
    await metro.nc.subscribe("ionveil.dashboard.updates.metro.>", cb=on_msg)  # type: ignore[union-attr]
    await metro.nc.flush()  # type: ignore[union-attr]
    alerts = await connect("alerts")
    dashboard = await connect("dashboard")
    await alerts.nc.publish("ionveil.alerts.metro.critical", b"{}")  # type: ignore[union-attr]
    await dashboard.nc.publish("ionveil.dashboard.updates.metro.response_time", b"{}")  # type: ignore[union-attr]
    received = {await asyncio.wait_for(got.get(), 5) for _ in range(2)}
    assert received == {
        "ionveil.alerts.metro.critical",
        "ionveil.dashboard.updates.metro.response_time",
    }
    assert metro.errors.empty()


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("dashboard", "ionveil.alerts.x.critical"),
        ("dashboard", "ionveil.dispatch.events.metro"),
        ("policy", "ionveil.alerts.metro.warning"),
        ("alerts", "ionveil.policy.transitions.metro"),
        ("simulator", "ionveil.dashboard.updates.metro.response_time"),
        ("publisher", "ionveil.policy.transitions.metro"),
        ("tenant-metro", "ionveil.dispatch.events.county"),
        ("tenant-metro", "ionveil.incidents.county"),
        ("tenant-metro", "ionveil.api.dashboard.county.snapshot"),
        ("tenant-metro", "ionveil.alerts.metro.critical"),
        ("tenant-metro", "$JS.API.STREAM.DELETE.DISPATCH"),
        ("policy", "$JS.API.STREAM.DELETE.DISPATCH"),
        ("policy", "$JS.API.CONSUMER.MSG.NEXT.DISPATCH.dashboard-dispatch"),
    ],
)
async def test_publish_outside_permissions_is_refused(
    connect: Connect, streams: None, user: str, subject: str
) -> None:
    """Publishing outside a user's subjects raises a permissions violation and stores nothing."""
    session = await connect(user)
    await session.nc.publish(subject, b"{}")  # type: ignore[union-attr]
    text = await session.violation()
    assert "publish" in text
    admin = await connect("admin")
    for name in STREAMS:
        info = await admin.nc.jetstream().stream_info(name)  # type: ignore[union-attr]
        assert info.state.messages == 0, name


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("tenant-metro", "ionveil.alerts.county.>"),
        ("tenant-metro", "ionveil.dashboard.updates.county.>"),
        ("tenant-metro", "ionveil.dispatch.events.>"),
        ("tenant-metro", "_INBOX.>"),
        ("tenant-metro", "_INBOX.county.>"),
        ("tenant-county", "ionveil.alerts.>"),
        ("dashboard", "ionveil.api.alerts.metro.active"),
        ("publisher", "ionveil.dispatch.events.>"),
    ],
)
async def test_subscribe_outside_permissions_is_refused(
    connect: Connect, user: str, subject: str
) -> None:
    """Subscribing outside a user's subjects raises a permissions violation."""
    session = await connect(user)
    await session.nc.subscribe(subject)  # type: ignore[union-attr]
    text = await session.violation()
    assert "subscription" in text


async def test_policy_worker_runs_as_its_user_and_serves_its_tenant(
    secured_nats: str, connect: Connect, dsns: dict[str, str], tmp_path: Path
) -> None:
    """The real policy worker, connected as `policy`, provisions, consumes, publishes a
    transition, dead-letters a bad event and answers tenant metro: its permissions suffice."""
    from workers.codec import decode_payload, encode_payload
    from workers.policy import PolicyWorker
    from workers.runtime import run_worker
    from workers.settings import Settings

    settings = Settings(
        nats_url=secured_nats,
        nats_user="policy",
        nats_password=_password("policy"),
        core_dsn=dsns["core"],
        data_dir=tmp_path,
        log_format="console",
    )
    async with run_worker(PolicyWorker(), settings, http_port=0) as handle:
        metro = await connect("tenant-metro")
        js = metro.nc.jetstream()  # type: ignore[union-attr]
        for n in range(3):
            event = {"event_id": f"m{n}", "timestamp": 1_767_225_600 + n, "sla_met": False}
            await js.publish("ionveil.dispatch.events.metro", encode_payload(event))
        await js.publish("ionveil.dispatch.events.metro", encode_payload({"event_id": "bad"}))
        await handle.wait_idle()
        reply = await metro.nc.request(  # type: ignore[union-attr]
            "ionveil.api.policy.metro.state", encode_payload({}), timeout=10
        )
        state, _ = decode_payload(reply.data, reply.headers)
        admin = await connect("admin")
        ajs = admin.nc.jetstream()  # type: ignore[union-attr]
        deadline = asyncio.get_running_loop().time() + 10
        while (await ajs.stream_info("POLICY")).state.messages < 1:
            assert asyncio.get_running_loop().time() < deadline, "no transition published"
            await asyncio.sleep(0.1)
        dlq = await ajs.stream_info("DLQ")
    assert state["policy"] == "watch" and state["outcomes_recorded"] == 3
    assert dlq.state.messages == 1
    assert metro.errors.empty()
