"""Per-case data keys: made, read and destroyed in a key-management service, held here only in
memory.

`KeyService` is what a service asks for; `KmipKeyService` speaks KMIP (the protocol of hardware
security modules and hospitals' key managers) through PyKMIP's client, over TLS with the
service's own client certificate. A key's bytes never leave this process's memory: they are
kept in a bounded cache (least recently used dropped first) and never written anywhere. The
services reach it through `avis.shared.case_keys`.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from kmip.core import enums
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from avis.shared.settings import CommonSettings

KEY_BYTES = 32
# The operation policy the local key server defines for our keys (deploy/kms/policies): any
# client whose certificate our CA signed may read or destroy them.
POLICY = "avis-case-key"
DEFAULT_PORT = 5696


def key_name(case_id: str) -> str:
    """The name a case's key is made under in the key service (how `find_key` finds it)."""
    return f"avis-case:{case_id}"


class KeyUnavailable(LookupError):
    """The key is unknown to the key service, or was destroyed: what it sealed cannot be opened."""


class KeyServiceError(RuntimeError):
    """The key service could not be reached, refused this service, or failed."""


class KeyService(Protocol):
    """Per-case data keys (AES-256), kept in a key-management service."""

    async def create_key(self, case_id: str) -> str:
        """Make a new data key for `case_id`; its key id."""
        ...

    async def find_key(self, case_id: str) -> str | None:
        """The key id of the data key made for `case_id` (None: none was, or it is destroyed)."""
        ...

    async def key(self, key_id: str) -> bytes:
        """The key's 32 bytes; KeyUnavailable when it is unknown or destroyed."""
        ...

    async def destroy(self, key_id: str) -> None:
        """Destroy the key in the key service and drop it here; KeyUnavailable when it is
        already gone."""
        ...

    def forget(self, key_id: str) -> None:
        """Drop this process's copy of the key (another service destroyed it)."""
        ...


class KeyCache:
    """At most `size` keys in memory, the least recently used dropped first, none held longer
    than `seconds` after it was read: a copy of a service that did not hear of an erasure
    stops opening the case by then, as the key service no longer gives the key."""

    def __init__(
        self, size: int, seconds: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if size < 1:
            raise ValueError("a key cache holds at least one key")
        self.size = size
        self.seconds = seconds
        self._clock = clock
        self._keys: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_id: str) -> bytes | None:
        """The cached key, now the most recently used; None when not held or held too long."""
        with self._lock:
            held = self._keys.get(key_id)
            if held is None:
                return None
            if self._clock() - held[1] >= self.seconds:
                del self._keys[key_id]
                return None
            self._keys.move_to_end(key_id)
            return held[0]

    def put(self, key_id: str, value: bytes) -> None:
        """Hold `value` for `key_id`, dropping the least recently used beyond the bound."""
        with self._lock:
            self._keys[key_id] = (value, self._clock())
            self._keys.move_to_end(key_id)
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)

    def drop(self, key_id: str) -> None:
        """Forget `key_id` (nothing happens when it is not held)."""
        with self._lock:
            self._keys.pop(key_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        with self._lock:
            return key_id in self._keys


@dataclass(frozen=True)
class KmipEndpoint:
    """Where the KMIP server is and who this service is there (its certificate and key)."""

    host: str
    port: int
    cert_file: str
    key_file: str
    ca_file: str
    timeout_seconds: float = 10.0

    @classmethod
    def from_url(
        cls, url: str, *, cert_file: str, key_file: str, ca_file: str, timeout_seconds: float = 10
    ) -> KmipEndpoint:
        """An endpoint from `kmip://host[:port]` (the port defaults to KMIP's 5696)."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "kmip" or not parsed.hostname:
            raise ValueError(f"AVIS_KMS_URL {url!r} is not kmip://host[:port]")
        missing = [n for n, v in (("cert", cert_file), ("key", key_file), ("CA", ca_file)) if not v]
        if missing:
            raise ValueError(f"the key service needs a client {', '.join(missing)} file")
        return cls(
            host=parsed.hostname,
            port=parsed.port or DEFAULT_PORT,
            cert_file=cert_file,
            key_file=key_file,
            ca_file=ca_file,
            timeout_seconds=timeout_seconds,
        )


def proxy_client(endpoint: KmipEndpoint) -> Any:
    """PyKMIP's client for `endpoint`: TLS 1.2, the server checked against our CA, this
    service's certificate presented; no PyKMIP configuration file is read."""
    client = ProxyKmipClient(
        hostname=endpoint.host,
        port=endpoint.port,
        cert=endpoint.cert_file,
        key=endpoint.key_file,
        ca=endpoint.ca_file,
        ssl_version="PROTOCOL_TLSv1_2",
        config_file="/dev/null",
    )
    # Its connection's socket timeout (PyKMIP's own default is 30 s).
    client.proxy.timeout = endpoint.timeout_seconds
    return client


class KmipKeyService:
    """KeyService over a KMIP server. PyKMIP's calls block, so each runs in a worker thread on
    a connection of its own; a key read once is served from the cache afterwards."""

    def __init__(
        self,
        endpoint: KmipEndpoint,
        *,
        cache_keys: int = 1024,
        cache_seconds: float = 300.0,
        client_factory: Callable[[KmipEndpoint], Any] = proxy_client,
    ) -> None:
        self.endpoint = endpoint
        self.cache = KeyCache(cache_keys, cache_seconds)
        self._client_factory = client_factory

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> KmipKeyService:
        """The key service named by AVIS_KMS_URL, with this service's own certificate."""
        endpoint = KmipEndpoint.from_url(
            settings.kms_url,
            cert_file=settings.kms_cert_file,
            key_file=settings.kms_key_file,
            ca_file=settings.kms_ca_file,
            timeout_seconds=settings.kms_timeout_seconds,
        )
        return cls(
            endpoint, cache_keys=settings.kms_cache_keys, cache_seconds=settings.kms_cache_seconds
        )

    async def create_key(self, case_id: str) -> str:
        """Make and activate an AES-256 key named after the case; it is cached at once."""
        key_id, value = await asyncio.to_thread(self._create, case_id)
        self.cache.put(key_id, value)
        return key_id

    async def find_key(self, case_id: str) -> str | None:
        """The key named after the case (the one `create_key` made), found by its name; the
        key server looks through its keys for it, so this is for a one-off, not a hot path."""
        found = await asyncio.to_thread(self._locate, case_id)
        return found[0] if found else None

    async def key(self, key_id: str) -> bytes:
        """The key's bytes, from the cache or else from the key service."""
        cached = self.cache.get(key_id)
        if cached is not None:
            return cached
        value = await asyncio.to_thread(self._get, key_id)
        self.cache.put(key_id, value)
        return value

    async def destroy(self, key_id: str) -> None:
        """Revoke and destroy the key in the key service; this process's copy goes first, and
        again after, in case a read in flight held it meanwhile."""
        self.cache.drop(key_id)
        try:
            await asyncio.to_thread(self._destroy, key_id)
        finally:
            self.cache.drop(key_id)

    def forget(self, key_id: str) -> None:
        """Drop this process's copy of the key."""
        self.cache.drop(key_id)

    @contextmanager
    def _connection(self, key_id: str = "") -> Iterator[Any]:
        """An open client; PyKMIP's and the network's errors as ours."""
        try:
            with self._client_factory(self.endpoint) as client:
                yield client
        except KmipOperationFailure as failure:
            if failure.reason == enums.ResultReason.ITEM_NOT_FOUND:
                raise KeyUnavailable(
                    f"key {key_id} is unknown to the key service or was destroyed"
                ) from None
            raise KeyServiceError(f"the key service refused: {failure}") from failure
        except ssl.SSLError as error:
            raise KeyServiceError(
                f"the key service at {self.endpoint.host}:{self.endpoint.port} and this service "
                f"could not agree on TLS (a certificate not signed by the other's CA?): {error}"
            ) from error
        except OSError as error:
            raise KeyServiceError(
                f"cannot reach the key service at {self.endpoint.host}:{self.endpoint.port}: "
                f"{error}"
            ) from error

    def _locate(self, case_id: str) -> list[str]:
        with self._connection() as client:
            name = client.attribute_factory.create_attribute(
                enums.AttributeType.NAME, key_name(case_id)
            )
            return [str(key_id) for key_id in client.locate(attributes=[name])]

    def _create(self, case_id: str) -> tuple[str, bytes]:
        with self._connection() as client:
            key_id = str(
                client.create(
                    enums.CryptographicAlgorithm.AES,
                    KEY_BYTES * 8,
                    operation_policy_name=POLICY,
                    name=key_name(case_id),
                    cryptographic_usage_mask=[
                        enums.CryptographicUsageMask.ENCRYPT,
                        enums.CryptographicUsageMask.DECRYPT,
                    ],
                )
            )
            client.activate(key_id)
            return key_id, _key_bytes(client.get(key_id), key_id)

    def _get(self, key_id: str) -> bytes:
        with self._connection(key_id) as client:
            return _key_bytes(client.get(key_id), key_id)

    def _destroy(self, key_id: str) -> None:
        with self._connection(key_id) as client:
            try:
                client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, key_id)
            except KmipOperationFailure as failure:
                # Not active (never activated, or revoked by a destroy that failed after it):
                # it can be destroyed as it is.
                if failure.reason != enums.ResultReason.ILLEGAL_OPERATION:
                    raise
            client.destroy(key_id)


def _key_bytes(managed: Any, key_id: str) -> bytes:
    """The bytes of a symmetric key read from the key service, checked to be 32 of them."""
    value = getattr(managed, "value", None)
    if not isinstance(value, bytes) or len(value) != KEY_BYTES:
        raise KeyServiceError(f"key {key_id} is not a {KEY_BYTES * 8}-bit symmetric key")
    return value
