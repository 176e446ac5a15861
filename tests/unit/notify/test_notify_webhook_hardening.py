"""Webhooks hardened, without broker or store: 6to4 and site-local addresses refused, ports
limited to 443 and 8443 (any port on loopback in development), one deadline over a whole attempt
(against a loopback server that answers a byte at a time), and delivery slots per partner.
Names are resolved by a stub: nothing here resolves or connects beyond loopback."""

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from avis.notify import rules
from avis.notify.models import Outcome
from avis.notify.queue import Pool
from avis.notify.settings import Settings
from avis.notify.webhooks import Refused, WebhookClient


def stub(table: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A resolver answering from `table` only."""

    async def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        raise OSError(f"{host} does not resolve (stub)")

    return resolve


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("2002:a00:1::1", "a 6to4 address"),  # embeds 10.0.0.1
        ("2002:7f00:1::1", "a 6to4 address"),  # embeds 127.0.0.1
        ("2002:808:808::1", "a 6to4 address"),  # embeds 8.8.8.8: the whole range goes
        ("2002::", "a 6to4 address"),
        ("fec0::1", "a site-local address"),
        ("feff:ffff::1", "a site-local address"),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("2001:4860:4860::8888", None),
    ],
)
def test_6to4_and_site_local_addresses_are_refused(address: str, refusal: str | None) -> None:
    for loopback_ok in (False, True):
        assert rules.address_refusal(ipaddress.ip_address(address), loopback_ok) == refusal


@pytest.mark.parametrize(
    ("url", "dev", "refused"),
    [
        ("https://partner.example/hooks", False, False),
        ("https://partner.example:443/hooks", False, False),
        ("https://partner.example:8443/hooks", False, False),
        ("https://partner.example:8080/hooks", False, True),
        ("https://partner.example:22/", False, True),
        ("https://partner.example:80/", False, True),
        # in development the port is judged once the name is resolved (loopback: any port)
        ("https://partner.example:8080/hooks", True, False),
    ],
)
def test_ports_are_443_and_8443(url: str, dev: bool, refused: bool) -> None:
    target, why = rules.url_refusal(url, dev)
    assert (target is None) == refused
    if refused:
        assert why == "the URL's port must be 443 or 8443"


def test_any_port_is_for_loopback_in_development_only() -> None:
    target, _ = rules.url_refusal("https://partner.example:8080/hooks", True)
    assert target is not None
    assert rules.resolved_refusal(target, ["127.0.0.1"], True) == ("127.0.0.1", "")
    assert rules.resolved_refusal(target, ["::1"], True) == ("::1", "")
    public = rules.resolved_refusal(target, ["93.184.216.34"], True)
    assert public == (None, "the URL's port must be 443 or 8443")
    mixed = rules.resolved_refusal(target, ["127.0.0.1", "93.184.216.34"], True)
    assert mixed[0] is None
    standard, _ = rules.url_refusal("https://partner.example:8443/hooks", True)
    assert standard is not None
    assert rules.resolved_refusal(standard, ["93.184.216.34"], True) == ("93.184.216.34", "")


async def test_the_client_refuses_what_the_stub_resolves_to() -> None:
    table = {
        "sixtofour.example": ["2002:a00:1::1"],
        "sitelocal.example": ["fec0::5"],
        "public.example": ["93.184.216.34"],
    }
    client = WebhookClient(
        allow_http_loopback=False, timeout=1.0, connect_timeout=1.0, resolver=stub(table)
    )
    with pytest.raises(Refused, match="6to4"):
        await client.check("https://sixtofour.example/")
    with pytest.raises(Refused, match="site-local"):
        await client.check("https://sitelocal.example/")
    with pytest.raises(Refused, match="443 or 8443"):
        await client.check("https://public.example:9000/")
    with pytest.raises(Refused, match="6to4"):
        await client.check("https://[2002:a00:1::1]/")
    target, address = await client.check("https://public.example:8443/")
    assert (target.port, address) == (8443, "93.184.216.34")


# --- the deadline of one attempt -------------------------------------------------------------


@contextlib.asynccontextmanager
async def dripping_server(pace: float) -> AsyncIterator[int]:
    """A loopback HTTP server that answers 200 and then one byte of its body every `pace`
    seconds: never slow enough for a read timeout, never done. Yields its port."""
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            for _ in range(100000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(pace)

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


async def test_an_attempt_ends_at_its_deadline_whatever_the_pace() -> None:
    async with dripping_server(pace=0.1) as port:
        client = WebhookClient(
            allow_http_loopback=True, timeout=2.0, connect_timeout=1.0, deadline=0.8
        )
        answer = await client.post(f"http://127.0.0.1:{port}/hook", "{}", {})
    assert answer.outcome is Outcome.TRANSIENT
    assert answer.code is None
    assert answer.reason == "timed out: the attempt took over 0.8 s"
    assert 700 <= answer.latency_ms < 2000  # well before the read timeout would ever fire


def test_deadline_and_caps_are_settings() -> None:
    settings = Settings(
        avis_env="development",
        webhook_attempt_deadline_seconds=5,
        webhook_per_partner=3,
        webhook_max_subscriptions=7,
    )
    assert settings.webhook_attempt_deadline_seconds == 5
    assert (settings.webhook_per_partner, settings.webhook_max_subscriptions) == (3, 7)
    defaults = Settings(avis_env="development")
    assert defaults.webhook_max_subscriptions == 10
    assert defaults.webhook_per_partner < defaults.webhook_concurrency


def test_loopback_webhooks_are_refused_in_production() -> None:
    with pytest.raises(ValueError, match="development only"):
        Settings(avis_env="production", webhook_allow_http_loopback=True)
    assert Settings(avis_env="development", webhook_allow_http_loopback=True)


# --- delivery slots per partner -------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What the pool looks at."""

    id: str
    subscription_id: str
    partner_id: str


async def test_a_partner_holds_at_most_its_slots_and_the_others_go_on() -> None:
    pool: Pool[Delivery] = Pool(
        8,
        [
            (lambda d: d.subscription_id, 2),
            (lambda d: d.partner_id, 3),
        ],
    )
    gate = asyncio.Event()
    running: list[str] = []
    finished = asyncio.Event()

    def attempt(item: Delivery) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            running.append(item.id)
            await gate.wait()

        return run

    busy = [Delivery(f"a{i}", f"sub-a{i % 3}", "partner-a") for i in range(6)]
    other = [Delivery(f"b{i}", "sub-b", "partner-b") for i in range(2)]
    for item in [*busy, *other]:
        await pool.start(item.id, item, attempt(item), finished.set)
    await asyncio.sleep(0)
    # partner-a has six due across three subscriptions: three run, the other partner's two run.
    assert sorted(running) == ["a0", "a1", "a2", "b0", "b1"]
    late = Delivery("a9", "sub-a9", "partner-a")
    await pool.start(late.id, late, attempt(late), finished.set)
    assert not pool.busy("a9")  # still partner-a's three slots taken
    gate.set()  # the running ones end, and give their slots back
    await asyncio.sleep(0.05)
    await pool.start(late.id, late, attempt(late), finished.set)
    assert pool.busy("a9")
    await asyncio.sleep(0.05)
    assert running[-1] == "a9"


async def test_the_subscription_share_still_holds() -> None:
    pool: Pool[Delivery] = Pool(8, [(lambda d: d.subscription_id, 2), (lambda d: d.partner_id, 5)])
    gate = asyncio.Event()
    started: list[str] = []

    def attempt(item: Delivery) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            started.append(item.id)
            await gate.wait()

        return run

    items = [Delivery(f"d{i}", "one-sub", "partner-a") for i in range(4)]
    for item in items:
        await pool.start(item.id, item, attempt(item), lambda: None)
    await asyncio.sleep(0)
    assert started == ["d0", "d1"]
    gate.set()
    await asyncio.sleep(0.05)
