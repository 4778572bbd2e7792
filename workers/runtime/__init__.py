"""The worker runtime shared by every IonVeil worker.

A worker subclasses ``Worker`` and declares its consumers (``ConsumerSpec``), endpoints
(``EndpointSpec``), HTTP routes and background loops; ``run_worker`` connects, provisions
JetStream from ``subjects.yaml``, runs all of it with health and metrics, and drains at exit.
"""

from workers.runtime.catalogue import Catalogue, load_catalogue
from workers.runtime.context import WorkerContext
from workers.runtime.dlq import DeadLetterReason, dlq_subject
from workers.runtime.idempotency import ProcessedLog
from workers.runtime.logging import configure_logging
from workers.runtime.messages import ConsumerSpec, EndpointSpec, Envelope, Request
from workers.runtime.metrics import WorkerMetrics
from workers.runtime.provisioning import ensure_streams
from workers.runtime.runner import WorkerHandle, run_worker
from workers.runtime.worker import Worker

__all__ = [
    "Catalogue",
    "ConsumerSpec",
    "DeadLetterReason",
    "EndpointSpec",
    "Envelope",
    "ProcessedLog",
    "Request",
    "Worker",
    "WorkerContext",
    "WorkerHandle",
    "WorkerMetrics",
    "configure_logging",
    "dlq_subject",
    "ensure_streams",
    "load_catalogue",
    "run_worker",
]
