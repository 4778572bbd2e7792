"""Request-reply endpoints served as a NATS micro service, against a real NATS server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from ionveil.errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    TransientError,
    ValidationError,
)
from workers.codec import encode_payload
from workers.runtime import EndpointSpec, Request, Worker, run_worker
from workers.settings import Settings

SNAPSHOT = "ionveil.api.dashboard.*.snapshot"


class Query(BaseModel):
    """A request model the handler validates (pydantic errors become 400 replies)."""

    limit: int


class ServingWorker(Worker):
    """A worker with endpoints whose behaviour depends on the request payload."""

    name = "rt-endpoints"
    endpoint_timeout_s = 0.5

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def endpoints(self) -> list[EndpointSpec]:
        return [
            EndpointSpec(name="snapshot", subject=SNAPSHOT, handler=self.snapshot),
            EndpointSpec(
                name="create", subject="ionveil.api.simulator.create", handler=self.create
            ),
        ]

    async def snapshot(self, request: Request) -> Any:
        self.requests.append(request)
        fail = request.payload.get("fail")
        if fail == "validation":
            raise ValidationError(["limit: must be positive", "window: unknown"])
        if fail == "pydantic":
            return Query.model_validate(request.payload)
        if fail == "not_found":
            raise NotFoundError("no such org")
        if fail == "conflict":
            raise ConflictError("already running")
        if fail == "transient":
            raise TransientError("database unavailable")
        if fail == "configuration":
            raise ConfigurationError("IONVEIL_X: missing")
        if fail == "crash":
            raise ZeroDivisionError("secret detail")
        if fail == "slow":
            await asyncio.sleep(5)
        if fail == "unencodable":
            return object()
        return {"org": request.org, "echo": request.payload, "ok": True}

    async def create(self, request: Request) -> dict[str, Any]:
        return {"org": request.org, "headers": sorted(request.headers)}


@pytest.fixture
async def served(settings: Settings):
    """A running ServingWorker."""
    worker = ServingWorker()
    async with run_worker(worker, settings, http_port=0) as handle:
        yield worker, handle


async def request(
    nc: NATS, subject: str, payload: Any, *, as_json: bool = False, raw: bytes | None = None
) -> tuple[Any, dict[str, str]]:
    headers = {"Content-Type": "application/json"} if as_json else None
    body = raw if raw is not None else encode_payload(payload, as_json=as_json)
    reply = await nc.request(subject, body, timeout=5, headers=headers)
    decoded = json.loads(reply.data) if as_json else msgpack.unpackb(reply.data)
    return decoded, reply.headers or {}


@pytest.mark.parametrize("as_json", [False, True])
async def test_ok_reply_in_the_request_encoding(served, nc: NATS, as_json: bool) -> None:
    """A request is answered in its own encoding (MessagePack by default, JSON when its
    Content-Type says so), with the org taken from the subject's '*' token."""
    body, headers = await request(
        nc, "ionveil.api.dashboard.acme.snapshot", {"x": 1}, as_json=as_json
    )
    assert body == {"org": "acme", "echo": {"x": 1}, "ok": True}
    assert "Nats-Service-Error" not in headers
    assert (headers.get("Content-Type") == "application/json") is as_json


@pytest.mark.parametrize(
    ("fail", "status", "code", "message"),
    [
        ("validation", "400", "invalid", "limit: must be positive; window: unknown"),
        ("pydantic", "400", "invalid", "limit: Field required"),
        ("not_found", "404", "not_found", "no such org"),
        ("conflict", "409", "conflict", "already running"),
        ("transient", "503", "unavailable", "database unavailable"),
        ("slow", "503", "unavailable", "timed out"),
        ("configuration", "500", "configuration", "IONVEIL_X: missing"),
        ("crash", "500", "internal", "internal error"),
        ("unencodable", "500", "internal", "internal error"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
async def test_error_replies(
    served, nc: NATS, fail: str, status: str, code: str, message: str, as_json: bool
) -> None:
    """Each error class is answered with the micro-service error headers (status code,
    description) and an {"error": {"code", "message"}} body in the request's encoding;
    unexpected exceptions reveal no details."""
    body, headers = await request(
        nc, "ionveil.api.dashboard.acme.snapshot", {"fail": fail}, as_json=as_json
    )
    assert headers["Nats-Service-Error-Code"] == status
    assert headers["Nats-Service-Error"] == message
    assert body == {"error": {"code": code, "message": message}}
    assert "secret" not in json.dumps(body)


@pytest.mark.parametrize(
    ("raw", "as_json", "needle"),
    [
        (b"\xc1", False, "payload: not valid MessagePack"),
        (b"{not json", True, "payload: not valid JSON"),
        (encode_payload([1, 2]), False, "payload: must be a map"),
    ],
)
async def test_undecodable_request_gets_an_error_reply(
    served, nc: NATS, raw: bytes, as_json: bool, needle: str
) -> None:
    """A request whose body cannot be decoded, or is not a map, is answered with a 400."""
    body, headers = await request(
        nc, "ionveil.api.dashboard.acme.snapshot", None, raw=raw, as_json=as_json
    )
    assert headers["Nats-Service-Error-Code"] == "400"
    assert body["error"]["code"] == "invalid"
    assert needle in body["error"]["message"]


async def test_empty_request_is_an_empty_map_and_subject_without_org(served, nc: NATS) -> None:
    """An empty body is the empty map; an endpoint subject without '*' gives org None, and the
    handler sees the request headers."""
    reply = await nc.request(
        "ionveil.api.simulator.create", b"", timeout=5, headers={"X-Trace": "t1"}
    )
    assert msgpack.unpackb(reply.data) == {"org": None, "headers": ["X-Trace"]}


async def test_srv_ping_info_and_stats(served, nc: NATS) -> None:
    """The worker is a discoverable micro service: $SRV.PING, $SRV.INFO and $SRV.STATS answer
    for ionveil-<worker name>, listing its endpoints and counting requests."""
    await request(nc, "ionveil.api.dashboard.acme.snapshot", {})
    ping = json.loads((await nc.request("$SRV.PING.ionveil-rt-endpoints", b"", timeout=5)).data)
    assert ping["name"] == "ionveil-rt-endpoints"
    info = json.loads((await nc.request("$SRV.INFO.ionveil-rt-endpoints", b"", timeout=5)).data)
    assert {(e["name"], e["subject"]) for e in info["endpoints"]} == {
        ("snapshot", SNAPSHOT),
        ("create", "ionveil.api.simulator.create"),
    }
    stats = json.loads((await nc.request("$SRV.STATS.ionveil-rt-endpoints", b"", timeout=5)).data)
    by_name = {e["name"]: e for e in stats["endpoints"]}
    assert by_name["snapshot"]["num_requests"] >= 1


async def test_endpoint_metrics_count_requests_and_errors(served, nc: NATS) -> None:
    """/metrics counts endpoint requests and error replies by status."""
    _, handle = served
    await request(nc, "ionveil.api.dashboard.acme.snapshot", {})
    await request(nc, "ionveil.api.dashboard.acme.snapshot", {"fail": "not_found"})
    text = handle.ctx.metrics.render().decode()
    assert 'ionveil_endpoint_requests_total{endpoint="snapshot"} 2.0' in text
    assert 'ionveil_endpoint_errors_total{endpoint="snapshot",status="404"} 1.0' in text


async def test_slow_request_does_not_block_the_next(served, nc: NATS) -> None:
    """Requests are handled concurrently: a fast one is answered while a slow one waits."""
    slow = asyncio.create_task(request(nc, "ionveil.api.dashboard.acme.snapshot", {"fail": "slow"}))
    await asyncio.sleep(0.05)
    body, _ = await request(nc, "ionveil.api.dashboard.beta.snapshot", {})
    assert body["org"] == "beta"
    assert not slow.done()
    slow_body, _ = await slow
    assert slow_body["error"]["code"] == "unavailable"
