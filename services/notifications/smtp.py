"""E-mail channel: one message per notification over SMTP (``smtplib`` in a worker thread)."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
import time
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate

import structlog

from ionveil.errors import ValidationError
from services.notifications._retry import backoff_delay, check_channel_settings, total_backoff
from services.notifications.base import DeliveryResult, Notification, NotificationChannel

__all__ = ["EmailChannel"]

log = structlog.get_logger(__name__)


def _smtp_code(exc: smtplib.SMTPException) -> int | None:
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return max(codes) if codes else None
    return None


class EmailChannel(NotificationChannel):
    """Sends each notification as a plain-text e-mail to ``recipients``.

    ``smtplib`` is blocking, so each try runs in a worker thread (``asyncio.to_thread``); its
    socket timeout bounds the thread even if the awaiting task is cancelled. Connection errors,
    timeouts and 4xx SMTP answers (temporary) are retried with exponential back-off; 5xx answers
    (permanent: unknown recipient, authentication failed) are not.

    The Message-ID is derived from ``n.key``, so a receiving system can drop a duplicate.

    Args:
        host: SMTP server.
        port: its port.
        sender: the From address.
        recipients: To addresses (at least one).
        starttls: upgrade the connection with STARTTLS before anything else.
        username: log in with this user (and ``password``) when given.
        password: the password for ``username``.
        timeout_s: socket timeout of one try.
        max_attempts: tries in all, >= 1.
        name: the channel's name in results and logs.
        backoff_s: pause after the first failed try; doubles after each further one.
        ssl_context: TLS settings for STARTTLS; the system's default verification when omitted.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10,
        max_attempts: int = 3,
        name: str = "email",
        backoff_s: float = 0.5,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        check_channel_settings(
            timeout_s=timeout_s, max_attempts=max_attempts, backoff_s=backoff_s, name=name
        )
        problems: list[str] = []
        if not isinstance(host, str) or not host:
            problems.append("host: must be a non-empty string")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            problems.append(f"port: must be an integer from 1 to 65535, got {port!r}")
        if not isinstance(sender, str) or "@" not in sender:
            problems.append(f"sender: must be an e-mail address, got {sender!r}")
        if isinstance(recipients, str) or not recipients:
            problems.append("recipients: must be a non-empty list of addresses")
        elif any(not isinstance(r, str) or "@" not in r for r in recipients):
            problems.append("recipients: every entry must be an e-mail address")
        if (username is None) != (password is None):
            problems.append("username/password: give both or neither")
        if problems:
            raise ValidationError(problems)
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.starttls = starttls
        self.username = username
        self._password = password
        self.timeout_s = float(timeout_s)
        self.max_attempts = max_attempts
        self.backoff_s = float(backoff_s)
        self.name = name
        self._ssl_context = ssl_context

    @property
    def deadline_s(self) -> float:
        """Every try at its timeout (a session has several round trips) plus the pauses."""
        return (
            2 * self.timeout_s * self.max_attempts
            + total_backoff(self.backoff_s, self.max_attempts)
            + 1.0
        )

    def build_message(self, n: Notification) -> EmailMessage:
        """The e-mail for ``n``: subject ``[SEVERITY] title``, body, then metadata lines."""
        msg = EmailMessage()
        msg["Subject"] = f"[{n.severity.upper()}] {n.title}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        digest = hashlib.sha256(n.key.encode("utf-8")).hexdigest()[:40]
        msg["Message-ID"] = f"<{digest}@ionveil>"
        msg["X-IonVeil-Key"] = n.key
        if n.org_id is not None:
            msg["X-IonVeil-Org"] = n.org_id
        lines = [n.body, ""]
        meta = n.as_dict()["metadata"]
        if meta:
            lines.append("--")
            lines.extend(f"{k}: {v}" for k, v in sorted(meta.items()))
        msg.set_content("\n".join(lines))
        return msg

    def _deliver(self, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        """One blocking SMTP session (runs in a worker thread)."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=self._ssl_context or ssl.create_default_context())
            if self.username is not None and self._password is not None:
                smtp.login(self.username, self._password)
            return smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)

    async def send(self, n: Notification) -> DeliveryResult:
        """Mail ``n``; retry temporary failures; never raises for delivery failures."""
        msg = self.build_message(n)
        started = time.monotonic()
        error: str | None = None
        status: int | None = None
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            try:
                refused = await asyncio.to_thread(self._deliver, msg)
            except (smtplib.SMTPException, OSError) as exc:
                # OSError covers refused connections and socket timeouts.
                status = _smtp_code(exc) if isinstance(exc, smtplib.SMTPException) else None
                error = f"{type(exc).__name__}: {exc}"
                permanent = status is not None and status >= 500
                log.warning(
                    "email_attempt_failed",
                    channel=self.name,
                    key=n.key,
                    attempt=attempt,
                    error=error,
                    permanent=permanent,
                )
                if permanent:
                    break
                if attempt < self.max_attempts:
                    await asyncio.sleep(backoff_delay(self.backoff_s, attempt))
                continue
            latency = time.monotonic() - started
            if refused:
                # Delivered to some recipients: a success, with the refusals reported.
                warning = f"some recipients refused: {sorted(refused)}"
                return DeliveryResult(self.name, True, attempt, warning, latency, 250)
            return DeliveryResult(self.name, True, attempt, None, latency, 250)
        return DeliveryResult(self.name, False, attempt, error, time.monotonic() - started, status)
