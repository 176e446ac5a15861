"""The SMTP transport: hands one email to the configured server (aiosmtplib) and says what
came of it, as a sent / transient / permanent outcome with the reply code.

Connections are kept and reused: the connection, its TLS handshake (STARTTLS or smtps), EHLO
and AUTH are paid once per connection, not once per email. At most `AVIS_NOTIFY_SMTP_CONNECTIONS`
are open, each carrying one send at a time, opened as sends at once need them (the email queue
sends one at a time, so one is open). One left idle longer than `AVIS_NOTIFY_SMTP_IDLE_SECONDS`
(servers drop idle clients), or found closed by the server, is closed and replaced before use.
A connection goes back for reuse only after a message was accepted on it, with its envelope
done with; any failure closes it (aiosmtplib resets the envelope after a refusal, but a
connection in an unknown state is not worth keeping). `close` ends them (notify's shutdown).

A send on a reused connection that finds it gone (the server closed it, a reset, a 421 closing
answer) is tried once more on a new connection, only when the failure came before the DATA
command: then the server holds no message of ours, and the new connection's is the only one.
From DATA on (the message under way, or its final answer awaited) the server may have taken the
message and the answer been lost (RFC 1047): that is a transient failure as before, the queue
tries again later with the same Message-ID, and no second copy is sent by this call. A send on
a new connection is never tried again here, nor one that timed out (a silent server is not
waited for twice in one attempt: the queue's retry comes later)."""

import asyncio
import contextlib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
import structlog

from avis.notify.models import Outcome
from avis.notify.rules import outcome_of_code, safe_reason
from avis.notify.settings import Settings

log = structlog.get_logger("avis.notify")

CLOSING = 421  # "service not available, closing transmission channel"
QUIT_SECONDS = 2.0  # the longest a polite QUIT may take at shutdown


@dataclass(frozen=True)
class Result:
    """One attempt's outcome, the server's reply code (if any) and a reason safe to keep;
    `posted`: the attempt was a post to an endpoint instead of an email (a physician's
    institution's), retried on the webhooks' schedule."""

    outcome: Outcome
    code: int | None
    reason: str
    posted: bool = False


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to connect, read from the settings."""

    hostname: str
    port: int
    use_tls: bool
    start_tls: bool | None  # None: when the server offers it
    username: str | None
    password: str | None
    timeout: float
    connections: int = 1  # open at most, each carrying one send at a time
    idle_seconds: float = 20.0  # an idle connection older than this is replaced

    @classmethod
    def from_settings(cls, settings: Settings) -> "SmtpTarget":
        """`smtp://[user:pass@]host:port` or `smtps://...`, plus the STARTTLS and credential
        settings (which win over the URL's)."""
        url = urlsplit(settings.smtp_url)
        if url.scheme not in ("smtp", "smtps") or not url.hostname:
            raise ValueError("AVIS_SMTP_URL must look like smtp://host:port or smtps://host:port")
        use_tls = url.scheme == "smtps"
        start_tls = {"auto": None, "always": True, "never": False}[settings.smtp_starttls]
        password = settings.smtp_password.get_secret_value() or unquote(url.password or "")
        return cls(
            hostname=url.hostname,
            port=url.port or (465 if use_tls else 25),
            use_tls=use_tls,
            start_tls=False if use_tls else start_tls,
            username=settings.smtp_username or unquote(url.username or "") or None,
            password=password or None,
            timeout=settings.smtp_timeout_seconds,
            connections=settings.smtp_connections,
            idle_seconds=settings.smtp_idle_seconds,
        )

    def client_options(self) -> dict[str, Any]:
        """aiosmtplib's options for a connection to this server."""
        return {
            "hostname": self.hostname,
            "port": self.port,
            "use_tls": self.use_tls,
            "start_tls": self.start_tls,
            "username": self.username,
            "password": self.password,
            "timeout": self.timeout,
        }


class Connection(aiosmtplib.SMTP):
    """A client kept open between emails: when it was last given back, and whether the
    current message reached its DATA command (after which it is never sent again here)."""

    used_at = 0.0
    data_began = False

    async def data(self, *args: Any, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        self.data_began = True
        return await super().data(*args, **kwargs)


def gone(exc: Exception) -> bool:
    """Whether `exc` says the connection is closed (by the server, or reset)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code == CLOSING
    return isinstance(exc, ConnectionError)  # SMTPServerDisconnected is one


class Mailer:
    """Sends one email per call over kept connections; every failure becomes a Result, never
    an exception."""

    def __init__(self, target: SmtpTarget) -> None:
        self.target = target
        self.opened = 0  # connections opened since the start
        self._slots = asyncio.Semaphore(target.connections)
        self._idle: list[Connection] = []  # the most recently used last

    async def send(self, message: EmailMessage) -> Result:
        """Hand `message` to the server."""
        try:
            async with self._slots:
                responses = await self._exchange(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            code = max(codes) if codes else None
            outcome = outcome_of_code(code) if code is not None else Outcome.TRANSIENT
            text = exc.recipients[0].message if exc.recipients else ""
            return Result(outcome, code, safe_reason(code, text) or "recipient refused")
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the message: retried, so fixing the setting lets it through.
            return Result(Outcome.TRANSIENT, exc.code, f"{exc.code} authentication failed")
        except aiosmtplib.SMTPServerDisconnected:
            return Result(Outcome.TRANSIENT, None, "connection dropped")
        except aiosmtplib.SMTPResponseException as exc:
            reason = safe_reason(exc.code, exc.message) or "refused"
            return Result(outcome_of_code(exc.code), exc.code, reason)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            return Result(Outcome.TRANSIENT, None, type(exc).__name__)
        refused = {r: v for r, v in responses.items() if not 200 <= v.code < 300}
        if refused:  # partial refusal cannot happen with one recipient; kept for safety
            code = max(v.code for v in refused.values())
            return Result(outcome_of_code(code), code, safe_reason(code, ""))
        return Result(Outcome.SENT, 250, "250")

    async def close(self) -> None:
        """Say QUIT on every idle connection and close it (a later send opens anew)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(QUIT_SECONDS):
                    await connection.quit()
            connection.close()

    async def _exchange(self, message: EmailMessage) -> dict[str, aiosmtplib.SMTPResponse]:
        """The message over a kept connection, or a new one; once more on a new one if the
        kept one turns out gone before DATA (the module's docstring says why only then)."""
        kept = self._kept()
        if kept is not None:
            try:
                return await self._over(kept, message)
            except Exception as exc:
                if kept.data_began or not gone(exc):
                    raise
                log.info("smtp connection found closed: the email goes on a new one")
        return await self._over(await self._open(), message)

    async def _over(
        self, connection: Connection, message: EmailMessage
    ) -> dict[str, aiosmtplib.SMTPResponse]:
        """One message on `connection`, given back for reuse if accepted, else closed."""
        connection.data_began = False
        try:
            responses, _ = await connection.send_message(message)
        except BaseException:
            connection.close()
            raise
        connection.used_at = time.monotonic()
        self._idle.append(connection)
        return responses

    def _kept(self) -> Connection | None:
        """The most recently used idle connection still fit for use; the others found on the
        way (closed by the server, or idle too long) are closed."""
        while self._idle:
            connection = self._idle.pop()
            idle_for = time.monotonic() - connection.used_at
            if connection.is_connected and idle_for <= self.target.idle_seconds:
                return connection
            connection.close()
        return None

    async def _open(self) -> Connection:
        """A new connection: connected, TLS as set, EHLO and AUTH done."""
        connection = Connection(**self.target.client_options())
        self.opened += 1
        try:
            await connection.connect()
        except BaseException:
            connection.close()
            raise
        return connection
