"""Notification values, channel settings and the registry's fan-out (no servers needed)."""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime

import pytest

from ionveil.errors import ConflictError, NotFoundError, ValidationError
from services.notifications import (
    ChannelRegistry,
    DeliveryResult,
    EmailChannel,
    Notification,
    NotificationChannel,
    WebhookChannel,
)
from services.notifications._retry import backoff_delay, total_backoff


class Level(enum.Enum):
    HIGH = "high"


def make(**overrides: object) -> Notification:
    fields: dict[str, object] = {
        "title": "SLA breach",
        "body": "incident i1 is 50% over its SLA",
        "severity": "critical",
        "org_id": "org1",
        "key": "alert-1:opened",
    }
    fields.update(overrides)
    return Notification(**fields)  # type: ignore[arg-type]


class SpyChannel(NotificationChannel):
    """A channel that records what it was asked to send and answers as scripted."""

    def __init__(
        self, name: str, *, ok: bool = True, delay_s: float = 0.0, crash: bool = False
    ) -> None:
        self.name = name
        self.ok = ok
        self.delay_s = delay_s
        self.crash = crash
        self.sent: list[Notification] = []
        self.closed = False

    async def send(self, n: Notification) -> DeliveryResult:
        self.sent.append(n)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.crash:
            raise RuntimeError("bug in channel")
        return DeliveryResult(self.name, self.ok, 1, None if self.ok else "refused", 0.0)

    async def close(self) -> None:
        self.closed = True
        if self.crash:
            raise RuntimeError("close failed")


def test_notification_as_dict_is_plain_data() -> None:
    """as_dict gives plain types: datetimes as ISO strings, enums as values, tuples as lists."""
    when = datetime(2024, 5, 1, tzinfo=UTC)
    n = make(metadata={"at": when, "level": Level.HIGH, "ids": ("a", "b"), "obj": object})
    d = n.as_dict()
    assert d["title"] == "SLA breach"
    assert d["key"] == "alert-1:opened"
    assert d["metadata"]["at"] == when.isoformat()
    assert d["metadata"]["level"] == "high"
    assert d["metadata"]["ids"] == ["a", "b"]
    assert isinstance(d["metadata"]["obj"], str)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 600}, "title"),
        ({"body": None}, "body"),
        ({"severity": " "}, "severity"),
        ({"key": ""}, "key"),
        ({"key": "k" * 300}, "key"),
        ({"org_id": ""}, "org_id"),
        ({"metadata": []}, "metadata"),
    ],
)
def test_notification_validates_fields(overrides: dict[str, object], field: str) -> None:
    """A bad notification field raises ValidationError naming it."""
    with pytest.raises(ValidationError, match=f"{field}:"):
        make(**overrides)


def test_notification_allows_empty_body_and_no_org() -> None:
    """An empty body and a fleet-wide (org-less) notification are allowed."""
    n = make(body="", org_id=None)
    assert n.as_dict()["org_id"] is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"backoff_s": -1}, "backoff_s"),
        ({"name": ""}, "name"),
    ],
)
def test_channel_settings_are_validated(kwargs: dict[str, object], field: str) -> None:
    """Impossible retry settings are refused with the parameter named."""
    with pytest.raises(ValidationError, match=f"{field}:"):
        WebhookChannel("http://127.0.0.1:1/", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=f"{field}:"):
        EmailChannel("localhost", 25, "a@b.c", ["d@e.f"], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["ftp://x/", "http://", "not a url", 5])
def test_webhook_url_must_be_http(url: object) -> None:
    """Only http(s) URLs with a host are accepted."""
    with pytest.raises(ValidationError, match="url:"):
        WebhookChannel(url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("", 25, "a@b.c", ["d@e.f"]), {}, "host"),
        (("h", 0, "a@b.c", ["d@e.f"]), {}, "port"),
        (("h", 25, "nobody", ["d@e.f"]), {}, "sender"),
        (("h", 25, "a@b.c", []), {}, "recipients"),
        (("h", 25, "a@b.c", "d@e.f"), {}, "recipients"),
        (("h", 25, "a@b.c", ["oops"]), {}, "recipients"),
        (("h", 25, "a@b.c", ["d@e.f"]), {"username": "u"}, "username/password"),
    ],
)
def test_email_settings_are_validated(
    args: tuple[object, ...], kwargs: dict[str, object], field: str
) -> None:
    """E-mail settings are checked at construction, naming the parameter."""
    with pytest.raises(ValidationError, match=f"{field}:"):
        EmailChannel(*args, **kwargs)  # type: ignore[arg-type]


def test_email_message_carries_key_subject_and_metadata() -> None:
    """The e-mail has a severity-tagged subject, key headers and the metadata in the body."""
    channel = EmailChannel("localhost", 25, "ionveil@example.org", ["ops@example.org"])
    msg = channel.build_message(make(metadata={"incident": "i1"}))
    assert msg["Subject"] == "[CRITICAL] SLA breach"
    assert msg["X-IonVeil-Key"] == "alert-1:opened"
    assert msg["X-IonVeil-Org"] == "org1"
    assert msg["Message-ID"].endswith("@ionveil>")
    assert "incident: i1" in msg.get_content()
    again = channel.build_message(make(metadata={"incident": "i1"}))
    assert again["Message-ID"] == msg["Message-ID"]
    fleet = channel.build_message(make(org_id=None))
    assert fleet["X-IonVeil-Org"] is None


def test_backoff_doubles() -> None:
    """Back-off doubles after each failed try; the total sums the pauses between tries."""
    assert [backoff_delay(0.5, a) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert total_backoff(0.5, 3) == 1.5
    assert total_backoff(0.5, 1) == 0


def test_deadlines_cover_every_retry() -> None:
    """A channel's deadline is at least its tries' timeouts plus the pauses between them."""
    web = WebhookChannel("http://127.0.0.1/", timeout_s=2, max_attempts=3, backoff_s=1)
    assert web.deadline_s >= 2 * 3 + 1 + 2
    mail = EmailChannel("h", 25, "a@b.c", ["d@e.f"], timeout_s=2, max_attempts=2, backoff_s=1)
    assert mail.deadline_s >= 2 * 2 + 1
    assert SpyChannel("x").deadline_s == 30.0


async def test_registry_fans_out_concurrently_in_order() -> None:
    """send() returns one result per distinct name in order; slow channels run side by side."""
    registry = ChannelRegistry()
    a, b = SpyChannel("a", delay_s=0.5), SpyChannel("b", ok=False, delay_s=0.5)
    registry.register("a", a)
    registry.register("b", b)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await registry.send(["b", "a", "b", "ghost"], make())
    assert loop.time() - started < 0.9  # concurrent, not 1.0 s in sequence
    assert [r.channel for r in results] == ["b", "a", "ghost"]
    assert [r.ok for r in results] == [False, True, False]
    assert results[2].attempts == 0 and "ghost" in (results[2].error or "")
    assert len(a.sent) == len(b.sent) == 1


async def test_registry_bounds_each_channel_by_its_timeout() -> None:
    """A channel slower than its registry timeout yields a failed result without delaying others."""
    registry = ChannelRegistry()
    registry.register("slow", SpyChannel("slow", delay_s=5), timeout_s=0.1)
    registry.register("fast", SpyChannel("fast"))
    results = await asyncio.wait_for(registry.send(["slow", "fast"], make()), 2)
    assert results[0].ok is False and "timed out" in (results[0].error or "")
    assert results[1].ok is True


async def test_registry_reports_a_crashing_channel() -> None:
    """A channel that raises (a bug) becomes a failed result; the other channels still deliver."""
    registry = ChannelRegistry()
    registry.register("bug", SpyChannel("bug", crash=True))
    registry.register("ok", SpyChannel("ok"))
    results = await registry.send(["bug", "ok"], make())
    assert results[0].ok is False and "RuntimeError" in (results[0].error or "")
    assert results[1].ok is True


def test_registry_lookup_and_registration_rules() -> None:
    """get() names unknown channels in a KeyError; duplicates need replace=True."""
    registry = ChannelRegistry()
    first = SpyChannel("a")
    registry.register("a", first)
    assert registry.get("a") is first
    assert registry.names() == ["a"]
    assert "a" in registry and len(registry) == 1
    with pytest.raises(KeyError, match="nope") as info:
        registry.get("nope")
    assert isinstance(info.value, NotFoundError)
    with pytest.raises(ConflictError, match="'a'"):
        registry.register("a", SpyChannel("a2"))
    second = SpyChannel("a2")
    registry.register("a", second, replace=True)
    assert registry.get("a") is second
    assert registry.unregister("a") is second
    assert registry.names() == []
    with pytest.raises(KeyError):
        registry.unregister("a")


@pytest.mark.parametrize(
    ("name", "channel", "kwargs", "field"),
    [
        ("", SpyChannel("x"), {}, "name"),
        ("x", object(), {}, "channel"),
        ("x", SpyChannel("x"), {"timeout_s": 0}, "timeout_s"),
        ("x", SpyChannel("x"), {"timeout_s": True}, "timeout_s"),
    ],
)
def test_registry_register_validates(
    name: str, channel: object, kwargs: dict[str, object], field: str
) -> None:
    """register() refuses bad arguments, naming them."""
    with pytest.raises(ValidationError, match=f"{field}:"):
        ChannelRegistry().register(name, channel, **kwargs)  # type: ignore[arg-type]


async def test_registry_close_closes_every_channel() -> None:
    """close() closes every channel even when one of them fails to close."""
    registry = ChannelRegistry()
    channels = [SpyChannel("a", crash=True), SpyChannel("b")]
    for c in channels:
        registry.register(c.name, c)
    await registry.close()
    assert all(c.closed for c in channels)
