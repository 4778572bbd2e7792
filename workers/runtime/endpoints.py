"""Request-reply endpoints served as one NATS micro service per worker (``ionveil-<name>``).

Being a micro service makes every endpoint discoverable with ``$SRV.PING``, ``$SRV.INFO`` and
``$SRV.STATS``; the default queue group spreads requests over a worker's replicas. Every request
is answered: with the handler's result in the request's own encoding, or with an error reply
(micro-service error headers plus ``{"error": {"code", "message"}}``), also for a request that
cannot be decoded.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors
import pydantic
import structlog
from nats import micro
from nats.aio.client import Client as NATS
from nats.micro.request import Request as MicroRequest

from ionveil.errors import (
    ConflictError,
    IonVeilError,
    NotFoundError,
    TransientError,
    ValidationError,
)
from workers.codec import (
    CONTENT_TYPE_HEADER,
    CONTENT_TYPE_JSON,
    decode_payload,
    encode_payload,
    is_json_content,
)
from workers.runtime._batch import format_pydantic_error
from workers.runtime.messages import EndpointSpec, Request
from workers.runtime.metrics import EndpointMetrics, WorkerMetrics

__all__ = ["SERVICE_VERSION", "EndpointServer", "error_status", "service_name"]

log = structlog.get_logger(__name__)

SERVICE_VERSION = "0.1.0"
_MAX_CONCURRENT_REQUESTS = 256
_JSON_HEADERS = {CONTENT_TYPE_HEADER: CONTENT_TYPE_JSON}


def service_name(worker_name: str) -> str:
    """The micro service name of a worker: ``ionveil-<worker name>``."""
    return f"ionveil-{worker_name}"


def error_status(exc: BaseException) -> tuple[int, str, str]:
    """``(status, code, message)`` of the error reply for ``exc``.

    ``ValidationError`` (and a pydantic validation error) 400, ``NotFoundError`` 404,
    ``ConflictError`` 409, ``TransientError`` and timeouts 503, any other ``IonVeilError`` 500
    with its code and message, anything else 500 ``internal`` without details (it is logged).
    """
    if isinstance(exc, ValidationError):
        return 400, exc.code, str(exc)
    if isinstance(exc, pydantic.ValidationError):
        return 400, ValidationError.code, format_pydantic_error(exc)
    if isinstance(exc, NotFoundError):
        return 404, exc.code, str(exc)
    if isinstance(exc, ConflictError):
        return 409, exc.code, str(exc)
    if isinstance(exc, TransientError):
        return 503, exc.code, str(exc)
    if isinstance(exc, TimeoutError):
        return 503, TransientError.code, "timed out"
    if isinstance(exc, IonVeilError):
        return 500, exc.code, str(exc)
    return 500, IonVeilError.code, "internal error"


def _org_index(subject: str) -> int | None:
    tokens = subject.split(".")
    return tokens.index("*") if "*" in tokens else None


class _Endpoint:
    """One endpoint: decode, call the handler, encode the reply or the error."""

    def __init__(self, spec: EndpointSpec, metrics: EndpointMetrics, timeout_s: float) -> None:
        self.spec = spec
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._org_index = _org_index(spec.subject)
        self._log = log.bind(endpoint=spec.name)

    async def handle(self, req: MicroRequest) -> None:
        started = time.perf_counter()
        self._metrics.requests.inc()
        headers = dict(req.headers or {})
        as_json = is_json_content(headers)
        try:
            payload = decode_payload(req.data, headers)[0] if req.data else {}
            if not isinstance(payload, dict):
                raise ValidationError(f"payload: must be a map, got {type(payload).__name__}")
            org = None
            if self._org_index is not None:
                tokens = req.subject.split(".")
                org = tokens[self._org_index] if self._org_index < len(tokens) else None
            request = Request(subject=req.subject, org=org, payload=payload, headers=headers)
            result = await asyncio.wait_for(self.spec.handler(request), self._timeout_s)
            body = encode_payload(result, as_json=as_json)
        except asyncio.CancelledError:
            await self._reply_error(req, TransientError("service is stopping"), as_json)
            raise
        except Exception as exc:  # every failure becomes an error reply, never a silent drop
            await self._reply_error(req, exc, as_json)
        else:
            await self._send(req, body, _JSON_HEADERS if as_json else None)
        finally:
            self._metrics.seconds.observe(time.perf_counter() - started)

    async def _reply_error(self, req: MicroRequest, exc: BaseException, as_json: bool) -> None:
        status, code, message = error_status(exc)
        self._metrics.error(status)
        if status == 500 and not isinstance(exc, IonVeilError):
            self._log.error("endpoint handler crashed", subject=req.subject, exc_info=exc)
        else:
            self._log.info("error reply", subject=req.subject, status=status, error=message)
        body = encode_payload({"error": {"code": code, "message": message}}, as_json=as_json)
        headers = {
            micro.request.ERROR_HEADER: " ".join(message.split())[:1000] or code,
            micro.request.ERROR_CODE_HEADER: str(status),
        }
        if as_json:
            headers.update(_JSON_HEADERS)
        await self._send(req, body, headers)

    async def _send(self, req: MicroRequest, body: bytes, headers: dict[str, str] | None) -> None:
        try:
            await req.respond(body, headers=headers)
        except ValueError:
            self._log.debug("request without reply subject; nothing sent", subject=req.subject)
        except nats.errors.Error as exc:
            self._log.warning("reply not sent", subject=req.subject, error=repr(exc))


class EndpointServer:
    """The micro service of one worker and the in-flight requests it is answering."""

    def __init__(
        self,
        worker_name: str,
        specs: list[EndpointSpec],
        *,
        nc: NATS,
        metrics: WorkerMetrics,
        timeout_s: float,
        description: str = "",
    ) -> None:
        self._name = service_name(worker_name)
        self._nc = nc
        self._description = description
        self._endpoints = [_Endpoint(s, metrics.endpoint(s.name), timeout_s) for s in specs]
        self._service: micro.Service | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._semaphore = asyncio.Semaphore(_MAX_CONCURRENT_REQUESTS)

    @property
    def service(self) -> micro.Service | None:
        """The running micro service (``None`` before ``start`` or without endpoints)."""
        return self._service

    async def start(self) -> None:
        """Register the service and its endpoints (no-op without endpoints)."""
        if not self._endpoints:
            return
        self._service = await micro.add_service(
            self._nc,
            name=self._name,
            version=SERVICE_VERSION,
            description=self._description or None,
        )
        for endpoint in self._endpoints:
            await self._service.add_endpoint(
                name=endpoint.spec.name,
                subject=endpoint.spec.subject,
                handler=self._dispatcher(endpoint),
            )
        # The subscriptions are only buffered until flushed: without this a request sent right
        # after start() (by another connection) can find no responders.
        await self._nc.flush()

    def _dispatcher(self, endpoint: _Endpoint) -> micro.request.Handler:
        # nats-py runs a subscription's callbacks one after another; a task per request lets a
        # slow request not hold up the next one (bounded by the semaphore).
        async def dispatch(req: MicroRequest) -> None:
            task = asyncio.create_task(self._guarded(endpoint, req))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return dispatch

    async def _guarded(self, endpoint: _Endpoint, req: MicroRequest) -> None:
        async with self._semaphore:
            await endpoint.handle(req)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking requests, then let the in-flight ones finish (cancelled after grace)."""
        if self._service is not None:
            try:
                await self._service.stop()
            except nats.errors.Error as exc:
                log.warning("micro service not stopped cleanly", error=repr(exc))
        if self._inflight:
            _, late = await asyncio.wait(set(self._inflight), timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
