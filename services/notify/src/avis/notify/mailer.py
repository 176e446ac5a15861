"""The SMTP transport: hands one email to the configured server (aiosmtplib) and says what
came of it, as a sent / transient / permanent outcome with the reply code."""

from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib

from avis.notify.models import Outcome
from avis.notify.rules import outcome_of_code, safe_reason
from avis.notify.settings import Settings


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
        )


class Mailer:
    """Sends one email per call; every failure becomes a Result, never an exception."""

    def __init__(self, target: SmtpTarget) -> None:
        self.target = target

    async def send(self, message: EmailMessage) -> Result:
        """Hand `message` to the server."""
        t = self.target
        try:
            responses, _ = await aiosmtplib.send(
                message,
                hostname=t.hostname,
                port=t.port,
                use_tls=t.use_tls,
                start_tls=t.start_tls,
                username=t.username,
                password=t.password,
                timeout=t.timeout,
            )
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
