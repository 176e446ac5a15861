"""The webhook transport: signs a delivery the Standard Webhooks way and posts it to the
partner's endpoint, connecting only to an address it checked (resolve, check, then connect to
that very address, so a DNS answer that changes between check and connect cannot point the
request inside). No redirects, short timeouts, at most a few KiB of the answer read, and one
deadline over the whole attempt (resolving, connecting, TLS, sending, reading), so an endpoint
that answers a byte at a time cannot hold a delivery slot for long."""

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

from avis.notify import rules
from avis.notify.models import Outcome
from avis.notify.rules import Target

# host -> the addresses it resolves to (tests stub it; no test may reach beyond loopback).
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_RESPONSE_BYTES = 4096
DEADLINE_SECONDS = 30.0


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses, from the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def sign(secrets: list[str], msg_id: str, at: datetime, body: str) -> str:
    """The `webhook-signature` header: one `v1,` signature per live secret (the new one and,
    during a rotation's grace period, the old), space separated."""
    return " ".join(Webhook(s).sign(msg_id=msg_id, timestamp=at, data=body) for s in secrets)


@dataclass(frozen=True)
class Answer:
    """One attempt's outcome: the endpoint's status code (if it answered), how long it took,
    and a reason safe to show (never the endpoint's body)."""

    outcome: Outcome
    code: int | None
    latency_ms: int
    reason: str


class Refused(Exception):
    """The URL or what it resolves to is not allowed."""


class WebhookClient:
    """Checks URLs and posts deliveries; every failure becomes an Answer, never an exception."""

    def __init__(
        self,
        *,
        allow_http_loopback: bool,
        timeout: float,
        connect_timeout: float,
        deadline: float = DEADLINE_SECONDS,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.allow_loopback = allow_http_loopback
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.deadline = deadline
        self.resolver = resolver
        # One verifying TLS context for every attempt: building one loads the CA bundle, which
        # cost notify a third of its CPU when made per delivery. It holds no connection.
        # (httpx's own: certifi's CAs, as a client made with `trust_env=False` builds it.)
        self.tls = httpx.create_ssl_context(trust_env=False)

    async def check(self, url: str) -> tuple[Target, str]:
        """The URL's target and the address to connect to; Refused with the reason if not."""
        target, why = rules.url_refusal(url, self.allow_loopback)
        if target is None:
            raise Refused(why)
        try:
            addresses = [str(ipaddress.ip_address(target.host))]  # a literal: nothing to resolve
        except ValueError:
            try:
                async with asyncio.timeout(self.timeout.connect):
                    addresses = await self.resolver(target.host, target.port)
            except (OSError, TimeoutError, UnicodeError):
                raise Refused("the host does not resolve") from None
        address, why = rules.resolved_refusal(target, addresses, self.allow_loopback)
        if address is None:
            raise Refused(why)
        return target, address

    async def post(self, url: str, body: str, headers: dict[str, str]) -> Answer:
        """Post one signed delivery, all of it within the deadline."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.deadline):
                outcome, code, reason = await self._attempt(url, body, headers)
        except TimeoutError:
            outcome, code = Outcome.TRANSIENT, None
            reason = f"timed out: the attempt took over {self.deadline:g} s"
        return Answer(outcome, code, int((time.monotonic() - started) * 1000), reason)

    async def _attempt(
        self, url: str, body: str, headers: dict[str, str]
    ) -> tuple[Outcome, int | None, str]:
        """Check, connect, send and read: the outcome, the status code and the reason."""
        try:
            target, address = await self.check(url)
        except Refused as exc:
            return Outcome.TRANSIENT, None, f"refused: {exc}"
        host = f"[{address}]" if ":" in address else address
        default = 443 if target.scheme == "https" else 80
        authority = target.host if target.port == default else f"{target.host}:{target.port}"
        request_headers = headers | {
            "host": authority,
            "content-type": "application/json",
            "user-agent": "Avis-Webhooks/1",
        }
        try:
            # Connect to the checked address; TLS still verifies the certificate of the host
            # name (SNI). A fresh client per attempt: no pooled connection outlives its check.
            async with (
                httpx.AsyncClient(
                    timeout=self.timeout, follow_redirects=False, trust_env=False, verify=self.tls
                ) as http,
                http.stream(
                    "POST",
                    f"{target.scheme}://{host}:{target.port}{target.path}",
                    content=body.encode(),
                    headers=request_headers,
                    extensions={"sni_hostname": target.host},
                ) as response,
            ):
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break
                code = response.status_code
        except httpx.TimeoutException:
            return Outcome.TRANSIENT, None, "timed out"
        except httpx.HTTPError as exc:
            return Outcome.TRANSIENT, None, type(exc).__name__
        outcome = rules.webhook_outcome(code)
        reason = str(code) if outcome is Outcome.SENT else f"{code} from the endpoint"
        if 300 <= code < 400:
            reason = f"{code}: redirects are not followed"
        return outcome, code, reason
