"""Create or update JetStream streams and durable consumers from the subject catalogue.

Idempotent: every worker provisions at start, several replicas may do so at once, and a
changed catalogue updates what JetStream allows to change in place (limits, subjects,
replicas, consumer timings). A change JetStream refuses (retention or storage of an existing
stream) stops the start with a ``ConfigurationError`` instead of silently running on the old
settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import structlog
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from ionveil.errors import ConfigurationError
from workers.runtime.catalogue import Catalogue, CatalogueStream, load_catalogue
from workers.runtime.messages import ConsumerSpec

__all__ = [
    "REPLICAS_ENV",
    "ConsumerSettings",
    "consumer_settings",
    "ensure_consumer",
    "ensure_streams",
    "load_catalogue",
    "stream_config",
]

log = structlog.get_logger(__name__)

REPLICAS_ENV = "IONVEIL_STREAM_REPLICAS"
_DEFAULT_MAX_ACK_PENDING = 1000
_HANDLER_TIMEOUT_SHARE = 0.9  # of ack_wait: answer before JetStream redelivers on its own


def _replicas_override() -> int | None:
    raw = os.environ.get(REPLICAS_ENV)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{REPLICAS_ENV}: {raw!r} is not an integer") from None
    if not 1 <= value <= 5:
        raise ConfigurationError(f"{REPLICAS_ENV}: must be 1..5, got {value}")
    return value


def stream_config(stream: CatalogueStream, *, replicas: int | None = None) -> api.StreamConfig:
    """The nats-py ``StreamConfig`` for a catalogue stream (``replicas`` overrides)."""
    return api.StreamConfig(
        name=stream.name,
        description=stream.description or None,
        subjects=list(stream.subjects),
        retention=api.RetentionPolicy(stream.retention),
        max_age=stream.max_age_hours * 3600.0,
        duplicate_window=stream.duplicate_window_s,
        storage=api.StorageType(stream.storage),
        num_replicas=replicas or _replicas_override() or stream.replicas,
        max_msg_size=stream.max_msg_size_bytes,
        discard=api.DiscardPolicy(stream.discard),
    )


def _differences(want: api.StreamConfig, have: api.StreamConfig) -> list[str]:
    fields = ("subjects", "max_age", "duplicate_window", "num_replicas", "max_msg_size", "discard")
    out = []
    for name in fields:
        a, b = getattr(want, name), getattr(have, name)
        if name == "subjects":
            a, b = sorted(a or []), sorted(b or [])
        elif isinstance(a, float) or isinstance(b, float):
            a, b = round(float(a or 0), 3), round(float(b or 0), 3)
        if a != b:
            out.append(name)
    return out


def _text(value: object) -> str:
    return str(getattr(value, "value", value))


async def _ensure_stream(js: JetStreamContext, want: api.StreamConfig) -> None:
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        try:
            await js.add_stream(want)
            log.info("stream created", stream=want.name, subjects=want.subjects)
            return
        except BadRequestError:  # created meanwhile by another replica: compare and update
            info = await js.stream_info(want.name)
    have = info.config
    for immutable in ("retention", "storage"):
        if getattr(have, immutable) != getattr(want, immutable):
            raise ConfigurationError(
                f"stream {want.name}: {immutable} is {_text(getattr(have, immutable))} on the "
                f"server but {_text(getattr(want, immutable))} in subjects.yaml; JetStream "
                "cannot change it in place (recreate the stream)"
            )
    changed = _differences(want, have)
    if changed:
        await js.update_stream(want)
        log.info("stream updated", stream=want.name, changed=changed)


async def ensure_streams(
    js: JetStreamContext, catalogue: Catalogue, *, names: list[str] | None = None
) -> None:
    """Create or update every catalogue stream (or only ``names``).

    Raises:
        ConfigurationError: a stream's retention or storage differs from the server's.
    """
    for stream in catalogue.streams:
        if names is None or stream.name in names:
            await _ensure_stream(js, stream_config(stream))


@dataclass(frozen=True)
class ConsumerSettings:
    """The effective delivery settings of one durable (catalogue first, then the spec)."""

    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float
    max_deliver: int
    backoff_s: tuple[float, ...]
    max_ack_pending: int
    start_seq: int | None = None
    inactive_threshold_s: float | None = None
    handler_timeout_s: float | None = None
    """``None``: 0.9 x ``ack_wait_s``. Longer than ``ack_wait_s``: heartbeats keep the batch."""

    @property
    def effective_handler_timeout_s(self) -> float:
        """How long one batch may run before it counts as failed."""
        return self.handler_timeout_s or self.ack_wait_s * _HANDLER_TIMEOUT_SHARE

    @property
    def heartbeat_s(self) -> float | None:
        """The in-progress interval while a batch runs, or ``None`` when none is needed."""
        if self.effective_handler_timeout_s <= self.ack_wait_s * _HANDLER_TIMEOUT_SHARE:
            return None
        return self.ack_wait_s / 3.0

    def nak_delay_s(self, num_delivered: int) -> float:
        """The back-off before the next attempt after delivery ``num_delivered`` failed."""
        if not self.backoff_s:
            return 0.0
        return self.backoff_s[min(max(num_delivered, 1), len(self.backoff_s)) - 1]


def consumer_settings(spec: ConsumerSpec, catalogue: Catalogue) -> ConsumerSettings:
    """Merge a worker's ``ConsumerSpec`` with the catalogue entry of its durable.

    Raises:
        ConfigurationError: the spec names another stream or filter than the catalogue.
    """
    entry = catalogue.consumer(spec.durable)
    if entry is None:
        catalogue.stream(spec.stream)  # the stream itself must be catalogued
        return ConsumerSettings(
            stream=spec.stream,
            durable=spec.durable,
            filter_subject=spec.filter_subject,
            ack_wait_s=spec.ack_wait_s,
            max_deliver=spec.max_deliver,
            backoff_s=tuple(spec.backoff_s),
            max_ack_pending=max(_DEFAULT_MAX_ACK_PENDING, spec.batch * 4),
            start_seq=spec.start_seq,
            inactive_threshold_s=spec.inactive_threshold_s,
            handler_timeout_s=spec.handler_timeout_s,
        )
    if entry.stream != spec.stream or entry.filter_subject != spec.filter_subject:
        raise ConfigurationError(
            f"consumer {spec.durable}: code says stream {spec.stream} filter "
            f"{spec.filter_subject}, subjects.yaml says stream {entry.stream} filter "
            f"{entry.filter_subject}"
        )
    return ConsumerSettings(
        stream=entry.stream,
        durable=spec.durable,
        filter_subject=entry.filter_subject,
        ack_wait_s=entry.ack_wait_s,
        max_deliver=entry.max_deliver,
        backoff_s=entry.backoff_s,
        max_ack_pending=entry.max_ack_pending,
        # A per-replica durable starts where its replica's checkpoint ends, and goes away
        # when that replica is gone for good.
        start_seq=spec.start_seq if entry.per_replica else None,
        inactive_threshold_s=spec.inactive_threshold_s if entry.per_replica else None,
        handler_timeout_s=entry.handler_timeout_s,
    )


async def ensure_consumer(js: JetStreamContext, settings: ConsumerSettings) -> api.ConsumerInfo:
    """Create the durable, or update it in place when its settings changed.

    No server-side ``backoff`` is set: JetStream would then use it instead of ``ack_wait`` for
    ack timeouts. The runtime applies ``backoff_s`` as ``nak`` delays.
    """
    config = api.ConsumerConfig(
        name=settings.durable,
        durable_name=settings.durable,
        filter_subject=settings.filter_subject,
        deliver_policy=(
            api.DeliverPolicy.ALL
            if settings.start_seq is None
            else api.DeliverPolicy.BY_START_SEQUENCE
        ),
        opt_start_seq=settings.start_seq,
        inactive_threshold=settings.inactive_threshold_s,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_ack_pending,
    )
    try:
        return await js.add_consumer(settings.stream, config)
    except BadRequestError as exc:
        raise ConfigurationError(
            f"consumer {settings.durable} on {settings.stream}: JetStream refused the "
            f"configuration: {exc.description}"
        ) from None
