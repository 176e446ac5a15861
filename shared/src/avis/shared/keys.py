"""Per-case data keys: made, read and destroyed in a key-management service, held here only in
memory.

`KeyService` is what a service asks for; `KmipKeyService` speaks KMIP (the protocol of hardware
security modules and hospitals' key managers) through PyKMIP's client, over TLS with the
service's own client certificate. A key's bytes never leave this process's memory: they are
kept in a bounded cache (least recently used dropped first) and never written anywhere. The
services reach it through `avis.shared.case_keys`.

Connections are kept open and reused (`ClientPool`): a TLS handshake, both sides in Python, costs
about three times the request it opens the way for.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, ParamSpec, Protocol, TypeVar

from cachetools import TLRUCache
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure
from kmip.services.kmip_protocol import RequestLengthMismatch

from avis.shared.settings import CommonSettings

KEY_BYTES = 32
# The operation policy the local key server defines for our keys (deploy/kms/policies): any
# client whose certificate our CA signed may read or destroy them.
POLICY = "avis-case-key"
DEFAULT_PORT = 5696
# A connection that breaks under a request: the server closed it (a restart, its own idle
# limit), or the network did. PyKMIP says so with the socket's error, or with EOFError or a
# short read when the server hung up.
BROKEN = (OSError, EOFError, RequestLengthMismatch)
T = TypeVar("T")
P = ParamSpec("P")


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

    def close(self) -> None:
        """Close what this process keeps open to the key service (it stops)."""
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
        self._keys: TLRUCache[str, bytes] = TLRUCache(
            size, ttu=lambda _key, _value, now: now + seconds, timer=clock
        )
        self._lock = threading.Lock()  # the key service's calls run in worker threads

    def get(self, key_id: str) -> bytes | None:
        """The cached key, now the most recently used; None when not held or held too long."""
        with self._lock:
            return self._keys.get(key_id)

    def put(self, key_id: str, value: bytes) -> None:
        """Hold `value` for `key_id`, dropping the least recently used beyond the bound."""
        with self._lock:
            self._keys[key_id] = value

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


class ClientPool:
    """Open KMIP clients kept between operations: `take` one (one thread at a time uses it),
    `give` it back after, or `discard` it when its connection failed. At most `size` wait here
    (0: none, a connection per operation); more at once open more, closed when given back. One
    left unused `idle_seconds` is closed: the local key server logs a connection silent for 10 s
    as a failure every 10 s, and a key service may drop one it deems idle anyway."""

    def __init__(
        self,
        open_client: Callable[[], Any],
        size: int = 4,
        idle_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_client = open_client
        self.size = size
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._idle: list[tuple[Any, float]] = []  # (client, given back at), the latest last
        self._lock = threading.Lock()
        self._sweep: threading.Timer | None = None
        self._closed = False
        self.opened = 0  # connections opened so far

    def open(self) -> Any:
        """A client on a new connection (PyKMIP's `open`: the TLS handshake)."""
        client = self._open_client()
        client.open()
        with self._lock:
            self.opened += 1
        return client

    def take(self) -> tuple[Any, bool]:
        """An open client, and whether it was used before: the one given back last, else new."""
        with self._lock:
            held = self._idle.pop()[0] if self._idle else None
        return (held, True) if held is not None else (self.open(), False)

    def give(self, client: Any) -> None:
        """`client` back, its connection sound, for the next operation (closed if none waits)."""
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append((client, self._clock()))
                if self._sweep is None:
                    self._sweep_in(self.idle_seconds)
                return
        _close(client)

    def discard(self, client: Any) -> None:
        """Close `client`, whose connection failed or is in doubt."""
        _close(client)

    def close(self) -> None:
        """Close every client held; those in use are closed when given back."""
        with self._lock:
            self._closed = True
            if self._sweep is not None:
                self._sweep.cancel()
            held, self._idle = self._idle, []
        for client, _ in held:
            _close(client)

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)

    def _sweep_in(self, seconds: float) -> None:
        # With self._lock held.
        self._sweep = threading.Timer(seconds, self.close_idle)
        self._sweep.daemon = True
        self._sweep.start()

    def close_idle(self) -> None:
        """Close the clients unused `idle_seconds` or longer; look again when the next is due."""
        now = self._clock()
        with self._lock:
            stale = [c for c, at in self._idle if now - at >= self.idle_seconds]
            self._idle = [(c, at) for c, at in self._idle if now - at < self.idle_seconds]
            self._sweep = None
            if self._idle and not self._closed:
                self._sweep_in(self._idle[0][1] + self.idle_seconds - now)
        for client in stale:
            _close(client)


def _close(client: Any) -> None:
    """Close a client's connection; one already broken is gone all the same."""
    with suppress(Exception):
        client.close()


class KmipKeyService:
    """KeyService over a KMIP server. PyKMIP's calls block, so each runs in a worker thread of
    the service's own, `connections` of them, on a connection kept open between operations
    (`ClientPool`, as many): operations beyond that wait for a thread, not for a connection
    opened and closed for them alone (the TLS handshake is the dear part, both sides in
    Python). A key read once is served from the cache afterwards.

    A request on a reused connection that turns out broken (the server closed it) is sent again
    once on a new one; a timeout is not (the key service is slow, not gone). A read, a look-up
    and a destruction are safe to send again. A creation is not: the server may have made the
    key and lost only its answer. So it is retried as `CaseKeys.made` does: the key named after
    the case, found by its name, else a new one; never a second key for the case.
    """

    def __init__(
        self,
        endpoint: KmipEndpoint,
        *,
        cache_keys: int = 1024,
        cache_seconds: float = 300.0,
        connections: int = 4,
        client_factory: Callable[[KmipEndpoint], Any] = proxy_client,
    ) -> None:
        self.endpoint = endpoint
        self.cache = KeyCache(cache_keys, cache_seconds)
        self.pool = ClientPool(lambda: client_factory(endpoint), size=connections)
        # 0 connections kept: a connection per operation, on as many threads as asyncio's own.
        self._threads = ThreadPoolExecutor(connections or None, thread_name_prefix="kmip")

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
        create, made = partial(_create, case_id=case_id), partial(_made, case_id=case_id)
        key_id, value = await self._in_thread(self._run, create, retry=made)
        self.cache.put(key_id, value)
        return key_id

    async def find_key(self, case_id: str) -> str | None:
        """The key named after the case (the one `create_key` made), found by its name; the
        key server looks through its keys for it, so this is for a one-off, not a hot path."""
        found = await self.named(case_id)
        return found[0] if found else None

    async def named(self, case_id: str) -> list[str]:
        """The ids of every key named after the case (one, unless a second was made)."""
        locate = partial(_locate, case_id=case_id)
        return await self._in_thread(self._run, locate, retry=locate)

    async def key(self, key_id: str) -> bytes:
        """The key's bytes, from the cache or else from the key service."""
        cached = self.cache.get(key_id)
        if cached is not None:
            return cached
        get = partial(_get, key_id=key_id)
        value = await self._in_thread(self._run, get, key_id, retry=get)
        self.cache.put(key_id, value)
        return value

    async def destroy(self, key_id: str) -> None:
        """Revoke and destroy the key in the key service; this process's copy goes first, and
        again after, in case a read in flight held it meanwhile."""
        self.cache.drop(key_id)
        destroy = partial(_destroy, key_id=key_id)
        try:
            await self._in_thread(self._run, destroy, key_id, retry=destroy)
        finally:
            self.cache.drop(key_id)

    def forget(self, key_id: str) -> None:
        """Drop this process's copy of the key."""
        self.cache.drop(key_id)

    def close(self) -> None:
        """Close the connections kept open (the service stops)."""
        self.pool.close()
        self._threads.shutdown(wait=False)

    async def _in_thread(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`function` on one of the service's threads, in this task's context (as
        `asyncio.to_thread` does on the loop's shared ones)."""
        call = partial(contextvars.copy_context().run, function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def _run(
        self, operation: Callable[[Any], T], key_id: str = "", *, retry: Callable[[Any], T]
    ) -> T:
        """`operation` on a client from the pool; on a reused connection that broke, `retry` on
        a new one."""
        with self._errors(key_id):
            client, reused = self.pool.take()
            try:
                return self._on(client, operation)
            except BROKEN as error:
                if not reused or isinstance(error, TimeoutError):
                    raise
            return self._on(self.pool.open(), retry)

    def _on(self, client: Any, operation: Callable[[Any], T]) -> T:
        """`operation` on `client`, given back to the pool after it if the server answered."""
        try:
            result = operation(client)
        except (KmipOperationFailure, KeyServiceError):
            self.pool.give(client)  # a refusal, or an answer we refuse: the connection is sound
            raise
        except BaseException:
            self.pool.discard(client)
            raise
        self.pool.give(client)
        return result

    @contextmanager
    def _errors(self, key_id: str = "") -> Iterator[None]:
        """PyKMIP's and the network's errors as ours."""
        try:
            yield
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
        except BROKEN as error:
            raise KeyServiceError(
                f"cannot reach the key service at {self.endpoint.host}:{self.endpoint.port}: "
                f"{type(error).__name__}: {error}"
            ) from error


def _locate(client: Any, case_id: str) -> list[str]:
    name = client.attribute_factory.create_attribute(enums.AttributeType.NAME, key_name(case_id))
    return [str(key_id) for key_id in client.locate(attributes=[name])]


def _create(client: Any, case_id: str) -> tuple[str, bytes]:
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
    return key_id, _get(client, key_id)


def _made(client: Any, case_id: str) -> tuple[str, bytes]:
    """The key a creation whose answer was lost made (activated now if it was not yet), else a
    new one."""
    found = _locate(client, case_id)
    if not found:
        return _create(client, case_id)
    key_id = found[0]
    try:
        client.activate(key_id)
    except KmipOperationFailure as failure:
        # Active already (the server refuses to activate a key that is not pre-active).
        if failure.reason != enums.ResultReason.PERMISSION_DENIED:
            raise
    return key_id, _get(client, key_id)


def _get(client: Any, key_id: str) -> bytes:
    return _key_bytes(client.get(key_id), key_id)


def _destroy(client: Any, key_id: str) -> None:
    try:
        client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, key_id)
    except KmipOperationFailure as failure:
        # Not active (never activated, or revoked by a destroy that failed after it): it can be
        # destroyed as it is.
        if failure.reason != enums.ResultReason.ILLEGAL_OPERATION:
            raise
    client.destroy(key_id)


def _key_bytes(managed: Any, key_id: str) -> bytes:
    """The bytes of a symmetric key read from the key service, checked to be 32 of them."""
    value = getattr(managed, "value", None)
    if not isinstance(value, bytes) or len(value) != KEY_BYTES:
        raise KeyServiceError(f"key {key_id} is not a {KEY_BYTES * 8}-bit symmetric key")
    return value
