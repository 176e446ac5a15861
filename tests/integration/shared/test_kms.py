"""The KMIP key service against the test stack's real key server (PyKMIP, deploy/kms): keys made
by one service are read by another with its own certificate, a second read is served from
memory, a destroyed key is gone for every service, a client our CA did not certify is refused,
and one connection serves one request after another, replaced when the server restarts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from avis.shared.keys import KeyServiceError, KeyUnavailable, KmipEndpoint, KmipKeyService
from tests.support import kms
from tests.support.basics import ROOT

pytestmark = pytest.mark.infra


def service(identity: str) -> tuple[KmipKeyService, kms.CountingClients]:
    """A key service as `identity`, with a fresh cache and its KMIP requests counted."""
    clients = kms.CountingClients()
    return KmipKeyService(kms.endpoint(identity), client_factory=clients), clients


def case() -> str:
    return f"case-{uuid.uuid4().hex[:12]}"


async def test_a_key_made_by_intake_is_read_by_review_with_its_own_certificate() -> None:
    intake, made = service("intake")
    review, read = service("review")
    key_id = await intake.create_key(case())
    assert made.calls["create"] == 1
    assert made.calls["activate"] == 1

    value = await review.key(key_id)

    assert read.calls["get"] == 1  # from the server: review's cache was empty
    assert len(value) == 32
    assert value == await intake.key(key_id)  # the very bytes intake holds since it made it
    assert made.calls["get"] == 1  # intake read it once, when it made it


async def test_each_service_creates_and_reads_keys_with_its_own_credentials() -> None:
    values: dict[str, bytes] = {}
    for identity in ("intake", "review", "reports", "notify", "web"):
        creator, _ = service(identity)
        reader, _ = service("notify" if identity != "notify" else "reports")
        key_id = await creator.create_key(case())
        values[identity] = await reader.key(key_id)
        assert values[identity] == await creator.key(key_id)
    assert len(set(values.values())) == 5  # five keys, no two alike


async def test_a_second_read_is_served_from_memory_without_a_request() -> None:
    intake, _ = service("intake")
    key_id = await intake.create_key(case())
    review, read = service("review")

    first = await review.key(key_id)
    second = await review.key(key_id)

    assert first == second
    assert read.calls["get"] == 1, read.calls
    assert read.calls["open"] == 1, read.calls


async def test_one_connection_serves_many_requests() -> None:
    intake, made = service("intake")
    review, read = service("review")
    key_ids = [await intake.create_key(case()) for _ in range(5)]
    for _ in range(4):
        for key_id in key_ids:
            review.forget(key_id)  # as if another copy of review, or its cache's time ran out
            assert await review.key(key_id) == await intake.key(key_id)
    assert read.calls["get"] == 20
    assert read.calls["open"] == 1, read.calls
    assert made.calls["open"] == 1, made.calls
    review.close()
    intake.close()


async def test_a_connection_kept_across_a_crash_of_the_key_server_is_replaced(
    tmp_path: Path,
) -> None:
    own = kms.OwnKeyServer(tmp_path / "state")
    await asyncio.to_thread(own.run, "start")
    try:
        await asyncio.to_thread(own.run, "wait")
        clients = kms.CountingClients()
        keys = KmipKeyService(
            own.endpoint("intake", own.first, own.first / "trusted.pem"), client_factory=clients
        )
        keys.pool.idle_seconds = 120.0  # kept while the server is started again (some 3 s)
        key_id = await keys.create_key(case())
        await asyncio.to_thread(own.crash)
        keys.forget(key_id)

        assert len(await keys.key(key_id)) == 32  # sent again on a new connection
        assert clients.calls["open"] == 2, clients.calls
        await asyncio.to_thread(own.crash)
        made = await keys.create_key(case())  # looked for by name, then made
        assert clients.calls["open"] == 3 and clients.calls["locate"] == 1, clients.calls
        await keys.destroy(made)
        keys.close()
    finally:
        await asyncio.to_thread(own.run, "stop")


async def test_a_destroyed_key_cannot_be_read_by_anyone_and_says_why() -> None:
    intake, _ = service("intake")
    key_id = await intake.create_key(case())
    reports, _ = service("reports")
    assert len(await reports.key(key_id)) == 32  # reports holds a copy

    await intake.destroy(key_id)

    for reader in (intake, service("review")[0]):
        with pytest.raises(KeyUnavailable, match=f"key {key_id} is unknown .* or was destroyed"):
            await reader.key(key_id)
    with pytest.raises(KeyUnavailable):
        await intake.destroy(key_id)  # a second destruction says the key is already gone
    # reports still holds its copy until it forgets it (the erasure event will tell it to)
    assert key_id in reports.cache
    reports.forget(key_id)
    with pytest.raises(KeyUnavailable):
        await reports.key(key_id)


async def test_an_unknown_key_id_is_a_clear_error() -> None:
    review, _ = service("review")
    with pytest.raises(KeyUnavailable, match="key 999999999 is unknown"):
        await review.key("999999999")


def foreign_certificates(folder: Path) -> Path:
    """A CA of its own and certificates with our services' names, made by the same script as the
    stack's: only the CA differs."""
    subprocess.run(
        [sys.executable, str(ROOT / "deploy/kms/certs.py"), str(folder)], check=True, cwd=ROOT
    )
    return folder


async def test_a_client_whose_certificate_our_ca_did_not_sign_is_refused(tmp_path: Path) -> None:
    intake, _ = service("intake")
    key_id = await intake.create_key(case())
    foreign = foreign_certificates(tmp_path / "foreign")
    impostor = KmipKeyService(kms.endpoint("review", folder=foreign))

    with pytest.raises(KeyServiceError, match="could not agree on TLS"):
        await impostor.key(key_id)
    with pytest.raises(KeyServiceError):
        await impostor.create_key(case())
    assert len(impostor.cache) == 0


async def test_a_client_without_a_certificate_is_refused() -> None:
    intake, _ = service("intake")
    key_id = await intake.create_key(case())
    ours = kms.endpoint("review")
    anonymous = KmipKeyService(
        KmipEndpoint(
            host=ours.host, port=ours.port, cert_file="", key_file="", ca_file=ours.ca_file
        )
    )
    with pytest.raises(KeyServiceError, match="could not agree on TLS"):
        await anonymous.key(key_id)
