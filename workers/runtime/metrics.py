"""Prometheus metrics of one worker, on a registry of its own.

One ``CollectorRegistry`` per worker keeps several workers in one process (``ionveil up``)
from clashing, and keeps tests independent. The consumer loop binds labelled children once per
consumer so the hot path only calls ``inc(n)`` / ``observe(s)`` once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ConsumerMetrics", "EndpointMetrics", "WorkerMetrics"]

_BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ConsumerMetrics:
    """The metric children of one consumer (label ``consumer`` already applied)."""

    processed: Counter
    failed: Counter
    batch_seconds: Histogram
    lag: Gauge
    ack_pending: Gauge
    heartbeats: Counter
    durable: str
    _dead_lettered: Counter

    def dead_lettered(self, reason: str, count: int = 1) -> None:
        """Count ``count`` messages sent to the DLQ for ``reason``."""
        self._dead_lettered.labels(consumer=self.durable, reason=reason).inc(count)


@dataclass(frozen=True)
class EndpointMetrics:
    """The metric children of one endpoint."""

    requests: Counter
    seconds: Histogram
    name: str
    _errors: Counter

    def error(self, status: int) -> None:
        """Count one error reply with HTTP-like ``status``."""
        self._errors.labels(endpoint=self.name, status=str(status)).inc()


class WorkerMetrics:
    """Messages processed/failed/dead-lettered, batch latency, consumer lag, endpoint traffic.

    ``registry`` is exposed so a worker can register extra collectors of its own.
    """

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._processed = Counter(
            "ionveil_messages_processed",
            "Messages handled successfully and acknowledged",
            ["consumer"],
            registry=r,
        )
        self._failed = Counter(
            "ionveil_messages_failed",
            "Message deliveries whose handler failed (negatively acknowledged)",
            ["consumer"],
            registry=r,
        )
        self._dead = Counter(
            "ionveil_messages_dead_lettered",
            "Messages published to the DLQ and terminated",
            ["consumer", "reason"],
            registry=r,
        )
        self._batch = Histogram(
            "ionveil_batch_seconds",
            "Time to decode, validate, handle and acknowledge one fetched batch",
            ["consumer"],
            buckets=_BATCH_BUCKETS_S,
            registry=r,
        )
        self._lag = Gauge(
            "ionveil_consumer_lag",
            "Messages in the stream not yet delivered to the consumer (num_pending)",
            ["consumer"],
            registry=r,
        )
        self._ack_pending = Gauge(
            "ionveil_consumer_ack_pending",
            "Messages delivered but not yet acknowledged (num_ack_pending)",
            ["consumer"],
            registry=r,
        )
        self._heartbeats = Counter(
            "ionveil_messages_in_progress",
            "In-progress heartbeats sent for messages whose handler outlasts ack_wait",
            ["consumer"],
            registry=r,
        )
        self._requests = Counter(
            "ionveil_endpoint_requests",
            "Requests received by an endpoint",
            ["endpoint"],
            registry=r,
        )
        self._errors = Counter(
            "ionveil_endpoint_errors",
            "Error replies sent by an endpoint",
            ["endpoint", "status"],
            registry=r,
        )
        self._endpoint_seconds = Histogram(
            "ionveil_endpoint_seconds",
            "Time to answer one request",
            ["endpoint"],
            buckets=_BATCH_BUCKETS_S,
            registry=r,
        )

    def consumer(self, durable: str) -> ConsumerMetrics:
        """The children for consumer ``durable`` (created on first use, zero-valued)."""
        return ConsumerMetrics(
            processed=self._processed.labels(consumer=durable),
            failed=self._failed.labels(consumer=durable),
            batch_seconds=self._batch.labels(consumer=durable),
            lag=self._lag.labels(consumer=durable),
            ack_pending=self._ack_pending.labels(consumer=durable),
            heartbeats=self._heartbeats.labels(consumer=durable),
            durable=durable,
            _dead_lettered=self._dead,
        )

    def endpoint(self, name: str) -> EndpointMetrics:
        """The children for endpoint ``name``."""
        return EndpointMetrics(
            requests=self._requests.labels(endpoint=name),
            seconds=self._endpoint_seconds.labels(endpoint=name),
            name=name,
            _errors=self._errors,
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
