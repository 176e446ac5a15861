"""The key service's parts that need no key server: the bounded cache, what PyKMIP's failures
become, the order of a destruction, and where the settings come from (its kept connections:
test_key_connections.py)."""

from __future__ import annotations

import os

import pytest
from kmip.core import enums
from pydantic_settings import SettingsConfigDict

from avis.shared.keys import (
    KeyCache,
    KeyServiceError,
    KeyUnavailable,
    KmipEndpoint,
    KmipKeyService,
)
from avis.shared.settings import CommonSettings
from tests.support.fake_kmip import FakeServer

ENDPOINT = KmipEndpoint(
    host="127.0.0.1", port=5696, cert_file="c.pem", key_file="c.key", ca_file="ca.pem"
)


def test_the_cache_never_holds_more_than_its_bound() -> None:
    cache = KeyCache(3)
    for i in range(10):
        cache.put(str(i), bytes(32))
        assert len(cache) <= 3
    assert len(cache) == 3
    assert [k for k in map(str, range(10)) if k in cache] == ["7", "8", "9"]


def test_the_cache_drops_the_least_recently_used_not_the_oldest() -> None:
    cache = KeyCache(2)
    cache.put("a", b"A" * 32)
    cache.put("b", b"B" * 32)
    assert cache.get("a") == b"A" * 32  # a is now the most recently used
    cache.put("c", b"C" * 32)
    assert "a" in cache
    assert "b" not in cache
    assert cache.get("b") is None


def test_a_key_is_held_no_longer_than_the_cache_says() -> None:
    clock = [0.0]
    cache = KeyCache(4, seconds=300, clock=lambda: clock[0])
    cache.put("k", bytes(32))
    clock[0] = 299.0
    assert cache.get("k") == bytes(32), "read again within the time: still held"
    clock[0] = 300.0
    assert cache.get("k") is None and "k" not in cache, "held from its read, not its last use"


def test_a_cache_holds_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyCache(0)


async def test_a_key_pushed_out_of_the_bounded_cache_is_asked_for_again() -> None:
    server = FakeServer()
    creator = KmipKeyService(ENDPOINT, client_factory=server)
    ids = [await creator.create_key(f"case-{i}") for i in range(3)]
    server.calls.clear()
    reader = KmipKeyService(ENDPOINT, cache_keys=2, client_factory=server)

    for key_id in ids:
        await reader.key(key_id)
    assert server.calls["get"] == 3
    assert len(reader.cache) == 2
    await reader.key(ids[2])  # still held
    assert server.calls["get"] == 3
    await reader.key(ids[0])  # pushed out by the third
    assert server.calls["get"] == 4


async def test_a_made_key_is_activated_and_held_at_once() -> None:
    server = FakeServer()
    keys = KmipKeyService(ENDPOINT, client_factory=server)
    key_id = await keys.create_key("case-1")
    assert server.order == ["create", "activate", "get"]
    assert await keys.key(key_id) == server.keys[key_id]
    assert server.calls["get"] == 1


async def test_a_destruction_revokes_then_destroys_and_drops_the_copy() -> None:
    server = FakeServer()
    keys = KmipKeyService(ENDPOINT, client_factory=server)
    key_id = await keys.create_key("case-1")
    server.order.clear()
    await keys.destroy(key_id)
    assert server.order == ["revoke", "destroy"]
    assert key_id not in keys.cache
    with pytest.raises(KeyUnavailable, match=f"key {key_id} is unknown"):
        await keys.key(key_id)


async def test_a_key_that_is_not_active_is_still_destroyed() -> None:
    server = FakeServer()
    keys = KmipKeyService(ENDPOINT, client_factory=server)
    key_id = await keys.create_key("case-1")
    server.revoke_fails = enums.ResultReason.ILLEGAL_OPERATION
    await keys.destroy(key_id)
    assert key_id not in server.keys


async def test_a_refusal_other_than_not_found_is_a_key_service_error() -> None:
    server = FakeServer()
    keys = KmipKeyService(ENDPOINT, client_factory=server)
    key_id = await keys.create_key("case-1")
    server.revoke_fails = enums.ResultReason.PERMISSION_DENIED
    with pytest.raises(KeyServiceError, match="refused"):
        await keys.destroy(key_id)
    assert key_id in server.keys


async def test_an_unreachable_key_service_is_a_key_service_error() -> None:
    server = FakeServer()
    server.open_fails = ConnectionRefusedError(111, "Connection refused")
    keys = KmipKeyService(ENDPOINT, client_factory=server)
    with pytest.raises(KeyServiceError, match=r"cannot reach the key service at 127\.0\.0\.1:5696"):
        await keys.key("1")


async def test_a_key_of_the_wrong_size_is_refused() -> None:
    server = FakeServer()
    server.keys["1"] = bytes(16)
    keys = KmipKeyService(ENDPOINT, client_factory=server)
    with pytest.raises(KeyServiceError, match="not a 256-bit"):
        await keys.key("1")
    assert "1" not in keys.cache


def test_the_endpoint_comes_from_a_kmip_url() -> None:
    endpoint = KmipEndpoint.from_url(
        "kmip://kms.example:5697", cert_file="c", key_file="k", ca_file="ca"
    )
    assert (endpoint.host, endpoint.port) == ("kms.example", 5697)
    assert (
        KmipEndpoint.from_url("kmip://kms", cert_file="c", key_file="k", ca_file="ca").port == 5696
    )
    with pytest.raises(ValueError, match="is not kmip://"):
        KmipEndpoint.from_url("https://kms", cert_file="c", key_file="k", ca_file="ca")
    with pytest.raises(ValueError, match="needs a client cert, key file"):
        KmipEndpoint.from_url("kmip://kms", cert_file="", key_file="", ca_file="ca")


class IntakeLike(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="AVIS_INTAKE_", extra="ignore", populate_by_name=True
    )


class NotifyLike(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="AVIS_NOTIFY_", extra="ignore", populate_by_name=True
    )


def test_the_service_certificate_is_the_services_own_and_the_url_is_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The test stack exports its own (deploy/kms/install.sh env): none of them counts here.
    for name in [n for n in os.environ if n.startswith("AVIS_") and "_KMS_" in f"_{n[5:]}"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AVIS_KMS_URL", "kmip://kms.hospital.example")
    monkeypatch.setenv("AVIS_KMS_CA_FILE", "/kms/ca.pem")
    monkeypatch.setenv("AVIS_INTAKE_KMS_CERT_FILE", "/kms/intake.pem")
    monkeypatch.setenv("AVIS_INTAKE_KMS_KEY_FILE", "/kms/intake.key")
    monkeypatch.setenv("AVIS_REVIEW_KMS_CERT_FILE", "/kms/review.pem")
    monkeypatch.setenv("AVIS_KMS_CACHE_KEYS", "7")
    # no shared certificate: a variable without the service's prefix names nobody's
    monkeypatch.setenv("AVIS_KMS_CERT_FILE", "/kms/everyone.pem")
    monkeypatch.setenv("AVIS_KMS_KEY_FILE", "/kms/everyone.key")

    keys = KmipKeyService.from_settings(IntakeLike())

    assert keys.endpoint == KmipEndpoint(
        host="kms.hospital.example",
        port=5696,
        cert_file="/kms/intake.pem",
        key_file="/kms/intake.key",
        ca_file="/kms/ca.pem",
    )
    assert keys.cache.size == 7
    notify = NotifyLike()
    assert (notify.kms_cert_file, notify.kms_key_file) == ("", "")
    with pytest.raises(ValueError, match="needs a client cert, key file"):
        KmipKeyService.from_settings(notify)
