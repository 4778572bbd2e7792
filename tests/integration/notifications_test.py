"""Notification channels against real receivers on loopback: HTTP, SMTP and NATS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from nats.aio.client import Client as NATS

from services.notifications import (
    ChannelRegistry,
    EmailChannel,
    NatsSubjectChannel,
    Notification,
    WebhookChannel,
)
from workers.embedded import free_port

N = Notification(
    title="SLA breach",
    body="incident i1 is 50% over its SLA",
    severity="critical",
    org_id="org1",
    key="alert-1:escalated:2",
    metadata={"incident_id": "i1", "level": 2},
)


# --- HTTP receiver -------------------------------------------------------------------------


@dataclass
class Receiver:
    """A real aiohttp server answering with scripted statuses, recording each request."""

    url: str
    script: list[int | float] = field(default_factory=list)  # status, or float = hang seconds
    requests: list[dict[str, Any]] = field(default_factory=list)
    retry_after: str | None = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """An HTTP server on loopback; answers 200 once its script is used up."""
    state = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        state.requests.append({"headers": dict(request.headers), "json": await request.json()})
        step = state.script.pop(0) if state.script else 200
        if isinstance(step, float):
            await asyncio.sleep(step)
            step = 200
        headers = {"Retry-After": state.retry_after} if state.retry_after else {}
        return web.Response(status=step, text=f"status {step}", headers=headers)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def webhook(receiver: Receiver) -> AsyncIterator[WebhookChannel]:
    """A webhook channel on the receiver with quick retries."""
    channel = WebhookChannel(
        receiver.url, timeout_s=0.5, max_attempts=3, backoff_s=0.01, headers={"X-Token": "t"}
    )
    try:
        yield channel
    finally:
        await channel.close()


async def test_webhook_delivers_json_with_idempotency_key(
    receiver: Receiver, webhook: WebhookChannel
) -> None:
    """A 200 on the first try: one POST of the notification's JSON with Idempotency-Key."""
    result = await webhook.send(N)
    assert (result.ok, result.attempts, result.error, result.status) == (True, 1, None, 200)
    assert result.channel == "webhook" and result.latency_s >= 0
    (request,) = receiver.requests
    assert request["json"] == N.as_dict()
    assert request["headers"]["Idempotency-Key"] == N.key
    assert request["headers"]["X-Token"] == "t"
    assert request["headers"]["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("script", "ok", "attempts", "status"),
    [
        ([500, 200], True, 2, 200),
        ([503, 502, 200], True, 3, 200),
        ([429, 200], True, 2, 200),
        ([500, 500, 500], False, 3, 500),
        ([400], False, 1, 400),
        ([404], False, 1, 404),
    ],
)
async def test_webhook_retries_only_what_can_succeed(
    receiver: Receiver,
    webhook: WebhookChannel,
    script: list[int],
    ok: bool,
    attempts: int,
    status: int,
) -> None:
    """5xx and 429 are retried up to max_attempts; other 4xx fail at once; the key is reused."""
    receiver.script = list(script)
    result = await webhook.send(N)
    assert (result.ok, result.attempts, result.status) == (ok, attempts, status)
    assert len(receiver.requests) == attempts
    assert {r["headers"]["Idempotency-Key"] for r in receiver.requests} == {N.key}
    if not ok:
        assert result.error == f"HTTP {status}: status {status}"


async def test_webhook_honours_retry_after(receiver: Receiver) -> None:
    """A 429's numeric Retry-After lengthens the pause before the next try."""
    receiver.script = [429]
    receiver.retry_after = "0.3"
    channel = WebhookChannel(receiver.url, max_attempts=2, backoff_s=0.0)
    try:
        result = await channel.send(N)
    finally:
        await channel.close()
    assert result.ok and result.attempts == 2
    assert result.latency_s >= 0.3


async def test_webhook_times_out_a_hanging_receiver(receiver: Receiver) -> None:
    """A receiver slower than timeout_s counts as a failed try, retried, then reported."""
    receiver.script = [2.0, 2.0]
    channel = WebhookChannel(receiver.url, timeout_s=0.2, max_attempts=2, backoff_s=0.01)
    try:
        result = await channel.send(N)
    finally:
        await channel.close()
    assert not result.ok and result.attempts == 2
    assert result.error == "timed out after 0.2s"
    assert result.latency_s < 1.5


async def test_webhook_connection_refused_is_a_failed_result() -> None:
    """Nobody listening: every try fails with a connection error, and send() does not raise."""
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/", max_attempts=2, backoff_s=0.01)
    try:
        result = await channel.send(N)
    finally:
        await channel.close()
    assert not result.ok and result.attempts == 2 and result.status is None
    assert "Connect" in (result.error or "")


async def test_webhook_custom_payload(receiver: Receiver) -> None:
    """A payload builder shapes the body for Slack-style endpoints."""
    channel = WebhookChannel(receiver.url, payload=lambda n: {"text": f"{n.title}: {n.body}"})
    try:
        assert (await channel.send(N)).ok
        await channel.close()
        assert (await channel.send(N)).ok  # a closed channel reopens its session
    finally:
        await channel.close()
    assert receiver.requests[0]["json"] == {"text": f"{N.title}: {N.body}"}


# --- SMTP receiver -------------------------------------------------------------------------


@dataclass
class MailSink:
    """An aiosmtpd handler that keeps messages and answers as scripted."""

    data_script: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    messages: list[Envelope] = field(default_factory=list)
    attempts: int = 0

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self.data_script:
            return self.data_script.pop(0)
        self.messages.append(envelope)
        return "250 Message accepted"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ops", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Smtp:
    sink: MailSink
    port: int


def _start_smtp(sink: MailSink, **kwargs: Any) -> Iterator[Smtp]:
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    try:
        yield Smtp(sink, controller.port)
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    """A plain SMTP server on loopback that accepts LOGIN/PLAIN auth without TLS."""
    yield from _start_smtp(MailSink(), authenticator=_authenticate, auth_require_tls=False)


@pytest.fixture
def smtp_tls(tls_files: tuple[Path, Path]) -> Iterator[Smtp]:
    """An SMTP server on loopback that requires STARTTLS."""
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    yield from _start_smtp(MailSink(), tls_context=context, require_starttls=True)


def _email(port: int, **kwargs: Any) -> EmailChannel:
    return EmailChannel(
        "127.0.0.1",
        port,
        "ionveil@example.org",
        kwargs.pop("recipients", ["ops@example.org", "lead@example.org"]),
        timeout_s=kwargs.pop("timeout_s", 2),
        backoff_s=0.01,
        **kwargs,
    )


async def test_email_is_delivered(smtp: Smtp) -> None:
    """One message to every recipient, with the severity-tagged subject and the key header."""
    result = await _email(smtp.port).send(N)
    assert (result.ok, result.attempts, result.error, result.status) == (True, 1, None, 250)
    (envelope,) = smtp.sink.messages
    assert envelope.mail_from == "ionveil@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "lead@example.org"]
    text = envelope.content.decode()
    assert "Subject: [CRITICAL] SLA breach" in text
    assert f"X-IonVeil-Key: {N.key}" in text
    assert "incident_id: i1" in text


async def test_email_logs_in_when_given_credentials(smtp: Smtp) -> None:
    """With username/password the channel authenticates; a wrong password is permanent."""
    good = await _email(smtp.port, username="ops", password="s3cret").send(N)
    assert good.ok
    bad = await _email(smtp.port, username="ops", password="wrong").send(N)
    assert not bad.ok and bad.attempts == 1 and bad.status == 535


@pytest.mark.parametrize(
    ("script", "ok", "attempts", "status"),
    [
        (["451 4.3.0 try again later"], True, 2, 250),
        (["451 4.3.0 busy", "421 4.3.0 busy", "451 4.3.0 busy"], False, 3, 451),
        (["554 5.6.0 rejected"], False, 1, 554),
    ],
)
async def test_email_retries_temporary_failures_only(
    smtp: Smtp, script: list[str], ok: bool, attempts: int, status: int
) -> None:
    """4xx SMTP answers are retried with back-off, 5xx answers are final."""
    smtp.sink.data_script = list(script)
    result = await _email(smtp.port).send(N)
    assert (result.ok, result.attempts, result.status) == (ok, attempts, status)
    assert smtp.sink.attempts == attempts


async def test_email_partial_refusal_is_reported(smtp: Smtp) -> None:
    """Some recipients refused: delivered to the rest, the refusal named in error."""
    smtp.sink.refuse = {"lead@example.org"}
    result = await _email(smtp.port).send(N)
    assert result.ok and "lead@example.org" in (result.error or "")
    assert smtp.sink.messages[0].rcpt_tos == ["ops@example.org"]


async def test_email_all_recipients_refused_is_permanent(smtp: Smtp) -> None:
    """Every recipient refused with 5xx: a failed result after one try."""
    smtp.sink.refuse = {"ops@example.org"}
    result = await _email(smtp.port, recipients=["ops@example.org"]).send(N)
    assert not result.ok and result.attempts == 1 and result.status == 550


async def test_email_connection_refused_is_retried_then_reported() -> None:
    """No server: each try fails on connect; send() reports it rather than raising."""
    result = await _email(free_port(), max_attempts=2).send(N)
    assert not result.ok and result.attempts == 2 and result.status is None
    assert "Connection" in (result.error or "") or "refused" in (result.error or "")


async def test_email_over_starttls(smtp_tls: Smtp, tls_files: tuple[Path, Path]) -> None:
    """With starttls the channel upgrades the session; without it the server refuses."""
    cert, _ = tls_files
    context = ssl.create_default_context(cafile=str(cert))
    secure = await _email(smtp_tls.port, starttls=True, ssl_context=context).send(N)
    assert secure.ok
    assert len(smtp_tls.sink.messages) == 1
    plain = await _email(smtp_tls.port, max_attempts=1).send(N)
    assert not plain.ok and plain.status == 530


# --- NATS ----------------------------------------------------------------------------------


async def test_nats_channel_publishes_msgpack(nc: NATS) -> None:
    """The notification arrives on the subject as a MessagePack map with Nats-Msg-Id = key."""
    sub = await nc.subscribe("ionveil.notifications.org1")
    channel = NatsSubjectChannel(nc, "ionveil.notifications.org1")
    result = await channel.send(N)
    assert result.ok and result.attempts == 1 and result.channel == "nats"
    msg = await sub.next_msg(timeout=2)
    assert msgpack.unpackb(msg.data) == N.as_dict()
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == N.key
    await sub.unsubscribe()


async def test_nats_channel_on_a_closed_connection_fails_cleanly(nc: NATS) -> None:
    """A closed connection gives a failed result, not an exception."""
    other = await nats.connect(nc.connected_url.geturl() if nc.connected_url else "")
    await other.close()
    result = await NatsSubjectChannel(other, "ionveil.notifications.x", name="n").send(N)
    assert not result.ok and "Closed" in (result.error or "")


@pytest.mark.parametrize("subject", ["", "a.*", "a.>", "a..b", "a b", 5])
def test_nats_channel_refuses_wildcard_or_bad_subjects(subject: object) -> None:
    """The subject must be literal: no wildcards, empty tokens or spaces."""
    with pytest.raises(ValueError, match="subject:"):
        NatsSubjectChannel(None, subject)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name:"):
        NatsSubjectChannel(None, "ok.subject", name="")  # type: ignore[arg-type]


# --- all together --------------------------------------------------------------------------


async def test_registry_delivers_through_real_channels(
    nc: NATS, receiver: Receiver, smtp: Smtp
) -> None:
    """One notification fans out to webhook, e-mail and NATS; a dead channel fails alone."""
    sub = await nc.subscribe("ionveil.notifications.all")
    registry = ChannelRegistry()
    registry.register("slack", WebhookChannel(receiver.url, name="slack"))
    registry.register("email", _email(smtp.port))
    registry.register("nats", NatsSubjectChannel(nc, "ionveil.notifications.all"))
    registry.register(
        "pagerduty",
        WebhookChannel(f"http://127.0.0.1:{free_port()}/", max_attempts=1, name="pagerduty"),
    )
    receiver.script = [5.0]  # the slack receiver hangs
    registry.register(
        "slack", WebhookChannel(receiver.url, name="slack"), timeout_s=0.3, replace=True
    )
    try:
        results = await asyncio.wait_for(
            registry.send(["slack", "email", "nats", "pagerduty"], N), timeout=3
        )
    finally:
        await registry.close()
    by_name = {r.channel: r for r in results}
    assert by_name["email"].ok and by_name["nats"].ok
    assert not by_name["pagerduty"].ok
    assert not by_name["slack"].ok and "timed out" in (by_name["slack"].error or "")
    assert len(smtp.sink.messages) == 1
    assert msgpack.unpackb((await sub.next_msg(timeout=2)).data)["key"] == N.key
