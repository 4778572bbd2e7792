"""The pull-consumer loop: fetch a batch, decode and validate, hand it over, acknowledge.

Acknowledgement is decided here and nowhere else (STYLE.md, "Errors and acknowledgement"):

- undecodable or invalid message -> DLQ + ``term`` (never reaches the handler);
- handler returned -> ``ack`` every message it did not ``reject``; rejected -> DLQ + ``term``;
- handler raised (any exception, or timed out) -> ``nak(delay=backoff)`` each, or DLQ + ``term``
  for a message already at ``max_deliver``;
- ``CancelledError`` -> nothing is acknowledged; JetStream redelivers after ``ack_wait``.

A consumer whose handler may run longer than its ``ack_wait`` (simulation jobs) sends
``in_progress`` for each message of the batch every third of ``ack_wait`` while the handler
runs: the job is kept as long as its worker lives, and comes back ``ack_wait`` after it died.

A failed DLQ publish never terms: the message is nak'ed and dead-lettered on a later delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from ionveil.errors import ValidationError
from workers.codec import decode_payload
from workers.runtime._batch import make_validator, reply_metadata
from workers.runtime.advisories import MaxDeliveriesWatcher
from workers.runtime.catalogue import Catalogue
from workers.runtime.dlq import DeadLetterReason, dead_letter
from workers.runtime.messages import ConsumerSpec, Envelope
from workers.runtime.metrics import ConsumerMetrics
from workers.runtime.provisioning import ConsumerSettings, ensure_consumer
from workers.runtime.pull import BatchPuller

__all__ = ["ConsumerLoop"]

log = structlog.get_logger(__name__)

_RETRY_PAUSE_S = 1.0
_ORG_CACHE_MAX = 10_000


class ConsumerLoop:
    """One durable pull consumer of a worker, processed batch after batch until stopped."""

    def __init__(
        self,
        spec: ConsumerSpec,
        settings: ConsumerSettings,
        *,
        js: JetStreamContext,
        catalogue: Catalogue,
        metrics: ConsumerMetrics,
        semaphore: asyncio.Semaphore,
        fetch_timeout_s: float,
        nc: NATS,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self._js = js
        self._catalogue = catalogue
        self._metrics = metrics
        self._semaphore = semaphore
        self._fetch_timeout_s = fetch_timeout_s
        self._validate = make_validator(spec.model)
        self._decode = spec.decoder or decode_payload
        self._handler_timeout_s = settings.effective_handler_timeout_s
        self._orgs: dict[str, str | None] = {}
        self._stopping = asyncio.Event()
        self._sub: BatchPuller | None = None
        self._nc = nc
        self._watcher = MaxDeliveriesWatcher(
            nc, js, stream=settings.stream, durable=settings.durable, metrics=metrics
        )
        self._log = log.bind(consumer=settings.durable, stream=settings.stream)

    @property
    def durable(self) -> str:
        """The consumer's durable name."""
        return self.settings.durable

    async def start(self) -> None:
        """Create or update the durable and bind a pull subscription to it."""
        await ensure_consumer(self._js, self.settings)
        await self._watcher.start()
        self._sub = BatchPuller(
            self._nc, stream=self.settings.stream, durable=self.settings.durable
        )
        await self._sub.start()

    def stop(self) -> None:
        """Ask the loop to stop after the batch in hand (the current fetch ends first)."""
        self._stopping.set()

    async def close(self) -> None:
        """Unsubscribe the pull subscription (after the loop ended)."""
        await self._watcher.stop()
        if self._sub is not None:
            with contextlib.suppress(
                nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError
            ):
                await self._sub.unsubscribe()
            self._sub = None

    async def consumer_info(self) -> tuple[int, int]:
        """``(num_pending, num_ack_pending)`` from the server; refreshes the lag gauges."""
        info = await self._js.consumer_info(self.settings.stream, self.settings.durable)
        pending, ack_pending = info.num_pending or 0, info.num_ack_pending or 0
        self._metrics.lag.set(pending)
        self._metrics.ack_pending.set(ack_pending)
        return pending, ack_pending

    async def run(self) -> None:
        """Fetch and process batches until ``stop()``; transient NATS errors are retried.

        After a full batch the next fetch is started before the batch is processed, so the
        round trip to the server overlaps the handler. A batch fetched that way before
        ``stop()`` is in hand and is processed too.
        """
        assert self._sub is not None, "start() first"
        sub, size, timeout_s = self._sub, self.spec.batch, self._fetch_timeout_s
        fetching: asyncio.Future[list[Msg]] | None = None
        try:
            while True:
                if fetching is None:
                    if self._stopping.is_set():
                        return
                    fetching = asyncio.ensure_future(sub.fetch(size, timeout=timeout_s))
                try:
                    msgs = await fetching
                except TimeoutError:  # nats-py raises both its own and asyncio's
                    continue  # no messages (or a reconnect in progress): ask again
                except nats.errors.ConnectionClosedError:
                    self._log.info("connection closed; consumer loop ends")
                    return
                except nats.errors.Error as exc:
                    await self._recover(exc)
                    continue
                finally:
                    fetching = None
                if len(msgs) >= size and not self._stopping.is_set():
                    fetching = asyncio.ensure_future(sub.fetch(size, timeout=timeout_s))
                await self.process(msgs)
        finally:
            if fetching is not None and not fetching.done():
                fetching.cancel()  # its messages were never seen: JetStream redelivers them

    async def _recover(self, exc: Exception) -> None:
        """After a fetch error (consumer deleted, server restarted...): pause, re-provision."""
        self._log.warning("fetch failed; retrying", error=repr(exc))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), _RETRY_PAUSE_S)
        if self._stopping.is_set():
            return
        try:
            await ensure_consumer(self._js, self.settings)
        except nats.errors.Error as again:
            self._log.warning("consumer not re-provisioned yet", error=repr(again))

    def _org(self, subject: str) -> str | None:
        try:
            return self._orgs[subject]
        except KeyError:
            if len(self._orgs) >= _ORG_CACHE_MAX:
                self._orgs.clear()
            org = self._orgs[subject] = self._catalogue.org_of(subject)
            return org

    async def process(self, msgs: list[Msg]) -> None:
        """Decode, validate, handle and acknowledge one fetched batch."""
        started = time.perf_counter()
        metas: list[tuple[int, int]] = []
        raws: list[Any] = []
        kept: list[Msg] = []
        dead: list[tuple[Msg, DeadLetterReason, str, int, int]] = []
        pending = 0
        decode = self._decode
        for msg in msgs:
            seq, delivered, pending = reply_metadata(msg.reply)
            try:
                value, _ = decode(msg.data, msg.headers)
            except ValidationError as exc:
                dead.append((msg, DeadLetterReason.UNDECODABLE, str(exc), seq, delivered))
                continue
            kept.append(msg)
            raws.append(value)
            metas.append((seq, delivered))

        envelopes: list[Envelope] = []
        accepted: list[Msg] = []
        for msg, (seq, delivered), (value, error) in zip(
            kept, metas, self._validate(raws), strict=True
        ):
            if error is not None:
                dead.append((msg, DeadLetterReason.INVALID, error, seq, delivered))
                continue
            headers = msg.headers or {}
            envelopes.append(
                Envelope(
                    msg.subject,
                    self._org(msg.subject),
                    value,
                    headers,
                    headers.get("Nats-Msg-Id"),
                    seq,
                    delivered,
                )
            )
            accepted.append(msg)

        failure = await self._call_handler(envelopes, accepted) if envelopes else None
        acked = 0
        if failure is None:
            for msg, env in zip(accepted, envelopes, strict=True):
                if env.rejected is None:
                    await self._settle(msg.ack)
                    acked += 1
                else:
                    dead.append(
                        (
                            msg,
                            DeadLetterReason.REJECTED,
                            env.rejected,
                            env.stream_seq,
                            env.num_delivered,
                        )
                    )
        else:
            self._metrics.failed.inc(len(envelopes))
            await self._retry_or_dead_letter(accepted, envelopes, failure, dead)

        for item in dead:
            await self._dead_letter(*item)
        self._metrics.processed.inc(acked)
        self._metrics.lag.set(pending)
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _call_handler(
        self, envelopes: list[Envelope], msgs: list[Msg]
    ) -> BaseException | None:
        async with self._semaphore:
            beating = self._heartbeat(msgs) if self.settings.heartbeat_s is not None else None
            try:
                await asyncio.wait_for(self.spec.handler(envelopes), self._handler_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure is retried with back-off, never fatal
                return exc
            finally:
                if beating is not None:
                    beating.cancel()
        return None

    def _heartbeat(self, msgs: list[Msg]) -> asyncio.Task[None]:
        """Send ``in_progress`` for ``msgs`` every ``heartbeat_s`` until cancelled."""
        interval = self.settings.heartbeat_s
        assert interval is not None

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                for msg in msgs:
                    await self._settle(msg.in_progress)
                self._metrics.heartbeats.inc(len(msgs))

        return asyncio.create_task(beat(), name=f"heartbeat-{self.settings.durable}")

    async def _retry_or_dead_letter(
        self,
        msgs: list[Msg],
        envelopes: list[Envelope],
        failure: BaseException,
        dead: list[tuple[Msg, DeadLetterReason, str, int, int]],
    ) -> None:
        error = f"{type(failure).__name__}: {failure}"
        retried = 0
        for msg, env in zip(msgs, envelopes, strict=True):
            if env.rejected is not None:
                dead.append(
                    (
                        msg,
                        DeadLetterReason.REJECTED,
                        env.rejected,
                        env.stream_seq,
                        env.num_delivered,
                    )
                )
            elif env.num_delivered >= self.settings.max_deliver:
                reason = f"{error} (after {env.num_delivered} deliveries)"
                dead.append(
                    (
                        msg,
                        DeadLetterReason.MAX_DELIVERIES,
                        reason,
                        env.stream_seq,
                        env.num_delivered,
                    )
                )
            else:
                delay = self.settings.nak_delay_s(env.num_delivered)
                await self._settle(msg.nak, delay)
                retried += 1
        self._log.warning(
            "handler failed; batch will be retried",
            error=error,
            retried=retried,
            batch=len(envelopes),
            exc_info=failure,
        )

    async def _dead_letter(
        self, msg: Msg, reason: DeadLetterReason, error: str, seq: int, delivered: int
    ) -> None:
        try:
            await dead_letter(
                self._js,
                msg,
                reason=reason,
                error=error,
                stream=self.settings.stream,
                consumer=self.settings.durable,
                stream_seq=seq,
                num_delivered=delivered,
            )
        except nats.errors.Error as exc:
            # Not stored in the DLQ: keep the original, retry on a later delivery.
            self._log.error(
                "dead-lettering failed; message kept for redelivery",
                subject=msg.subject,
                stream_seq=seq,
                error=repr(exc),
            )
            await self._settle(msg.nak, self.settings.nak_delay_s(self.settings.max_deliver))
            return
        await self._settle(msg.term)
        self._metrics.dead_lettered(reason.value)
        self._log.warning(
            "message dead-lettered",
            subject=msg.subject,
            msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
            stream_seq=seq,
            num_delivered=delivered,
            reason=reason.value,
            error=error,
        )

    async def _settle(self, action: Any, *args: float) -> None:
        """ack/nak/term one message; a lost connection means JetStream redelivers it later."""
        try:
            await action(*args)
        except nats.errors.Error as exc:
            self._log.warning("acknowledgement not sent", error=repr(exc))
