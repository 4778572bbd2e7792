"""What handlers receive and what workers declare: envelopes, requests, consumer/endpoint specs.

These are the public shapes of the runtime API (``/work/briefs/common.md``, "The worker
runtime"); services code against them, so fields and defaults are fixed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

__all__ = ["ConsumerSpec", "EndpointSpec", "Envelope", "Request"]


@dataclass(slots=True)
class Envelope:
    """One decoded, validated message handed to a consumer handler.

    Attributes:
        subject: the subject the message was published on.
        org: the tenant token of the subject (``ionveil.dispatch.events.<org>`` -> ``<org>``),
            ``None`` for subjects without one.
        data: the validated value (an instance of the consumer's model) or, without a model,
            the decoded MessagePack/JSON value.
        headers: the message headers (empty dict when none).
        msg_id: the ``Nats-Msg-Id`` header, the event id a handler deduplicates on.
        stream_seq: the message's sequence in its stream (unique per stream, stable across
            redeliveries; a second key for deduplication).
        num_delivered: how many times JetStream has delivered this message (1 the first time).
    """

    subject: str
    org: str | None
    data: Any
    headers: dict[str, str]
    msg_id: str | None
    stream_seq: int
    num_delivered: int
    rejected: str | None = field(default=None, repr=False)

    def reject(self, reason: str) -> None:
        """Mark this message invalid: it goes to the DLQ with ``reason`` and is terminated.

        Use it for a message that decoded and validated but breaks a rule only the handler can
        check; the rest of the batch is acknowledged as usual.
        """
        self.rejected = reason or "rejected by handler"


@dataclass(slots=True)
class Request:
    """One request to an endpoint.

    Attributes:
        subject: the subject the request arrived on.
        org: the token of ``subject`` in the position of the ``*`` of the endpoint's subject
            (``None`` when the endpoint subject has no ``*``).
        payload: the decoded request body (``{}`` for an empty body); always a map.
        headers: the request headers (empty dict when none).
    """

    subject: str
    org: str | None
    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass
class ConsumerSpec:
    """A durable pull consumer a worker processes, and how.

    The runtime fetches up to ``batch`` messages, decodes and validates each (against
    ``model`` when given; a failure goes to the DLQ and never reaches the handler), awaits
    ``handler`` with the valid ones, then acknowledges each not rejected. A handler that raises
    makes the runtime ``nak`` every message with the back-off delay for its delivery count; a
    message already at ``max_deliver`` goes to the DLQ instead. A cancelled handler acks
    nothing (JetStream redelivers).

    For a durable listed in ``subjects.yaml`` the catalogue's ``ack_wait_s``, ``max_deliver``,
    ``backoff_s`` and filter are the ones provisioned and used; the values here apply to
    durables the catalogue does not list (tests, ad-hoc tools).
    """

    stream: str
    durable: str
    filter_subject: str
    handler: Callable[[list[Envelope]], Awaitable[None]]
    model: type[pydantic.BaseModel] | pydantic.TypeAdapter | None = None
    batch: int = 256
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = (0.5, 2.0, 10.0)
    handler_timeout_s: float | None = None
    """Uncatalogued durables only: see ``handler_timeout_s`` in ``subjects.yaml``."""
    start_seq: int | None = None
    """Uncatalogued durables only: deliver from this stream sequence (default: all)."""
    inactive_threshold_s: float | None = None
    """Uncatalogued durables only: the server deletes the durable after this long unused
    (for per-replica durables, so a dead replica's consumer does not linger)."""
    decoder: Callable[[bytes, Mapping[str, str] | None], tuple[Any, bool]] | None = None
    """Replaces ``workers.codec.decode_payload`` for this consumer (same contract: returns
    ``(value, is_json)``, raises ``ValidationError`` on an undecodable body). For consumers
    that decode straight into typed values on a hot path (the dashboard's event arrays)."""


@dataclass
class EndpointSpec:
    """A request-reply operation served through the worker's NATS micro service.

    Attributes:
        name: the operation (``"snapshot"``), the micro endpoint's name.
        subject: the subject served; a ``*`` token is the org
            (``ionveil.api.dashboard.*.snapshot``).
        handler: called with the decoded ``Request``; its return value is encoded with
            ``to_wire`` in the request's encoding. An ``IonVeilError`` becomes an error reply
            (``ValidationError`` 400, ``NotFoundError`` 404, ``ConflictError`` 409,
            ``TransientError`` 503); any other exception a logged 500.
    """

    name: str
    subject: str
    handler: Callable[[Request], Awaitable[Any]]
