"""A KMIP server in memory for KmipKeyService's client factory: keys by id, every connection and
request counted, and the ways a connection fails (the server hangs up, an answer is lost)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from kmip.core import enums
from kmip.pie.exceptions import KmipOperationFailure

from avis.shared.keys import KmipEndpoint


def failure(reason: enums.ResultReason) -> KmipOperationFailure:
    return KmipOperationFailure(enums.ResultStatus.OPERATION_FAILED, reason, "refused")


class Key:
    def __init__(self, value: bytes) -> None:
        self.value = value


class Names:
    """PyKMIP's attribute factory, for a look-up by name: the name itself."""

    def create_attribute(self, kind: Any, value: str) -> str:
        return value


class FakeServer:
    """The server, and its client factory (`KmipKeyService(..., client_factory=server)`)."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.names: dict[str, str] = {}  # key id -> its name
        self.active: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.order: list[str] = []
        self.revoke_fails: enums.ResultReason | None = None
        self.open_fails: Exception | None = None
        self.answer_lost: str = ""  # a request done, its answer lost (the connection breaks)
        self.clients: list[FakeClient] = []
        self.request_seconds = 0.0  # how long each request takes (operations at once overlap)

    def __call__(self, endpoint: KmipEndpoint) -> FakeClient:
        return FakeClient(self)

    def hang_up(self) -> None:
        """Close every open connection from the server's side (a restart, an idle limit)."""
        for client in self.clients:
            client.hung_up = True

    @property
    def open_now(self) -> int:
        return sum(1 for c in self.clients if c.is_open)

    def request(self, client: FakeClient, name: str) -> None:
        if client.hung_up or not client.is_open:
            raise EOFError("No data read from socket")
        self.calls[name] += 1
        self.order.append(name)
        if self.request_seconds:
            time.sleep(self.request_seconds)

    def answered(self, client: FakeClient, name: str) -> None:
        if self.answer_lost == name:
            self.answer_lost = ""
            client.hung_up = True
            raise EOFError("No data read from socket")


class FakeClient:
    """One connection to the fake server, as PyKMIP's ProxyKmipClient is used."""

    attribute_factory = Names()

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.is_open = False
        self.hung_up = False

    def open(self) -> None:
        if self.server.open_fails:
            raise self.server.open_fails
        self.server.calls["open"] += 1
        self.server.clients.append(self)
        self.is_open = True

    def close(self) -> None:
        if self.is_open:
            self.server.calls["close"] += 1
        self.is_open = False

    def create(self, *args: Any, name: str, **kwargs: Any) -> str:
        self.server.request(self, "create")
        key_id = str(len(self.server.keys) + 1)
        self.server.keys[key_id] = bytes([len(self.server.keys) + 1]) * 32
        self.server.names[key_id] = name
        self.server.answered(self, "create")
        return key_id

    def activate(self, key_id: str) -> None:
        self.server.request(self, "activate")
        if key_id in self.server.active:
            raise failure(enums.ResultReason.PERMISSION_DENIED)
        self.server.active.add(key_id)
        self.server.answered(self, "activate")

    def locate(self, attributes: list[str]) -> list[str]:
        self.server.request(self, "locate")
        return [k for k, name in self.server.names.items() if name in attributes]

    def get(self, key_id: str) -> Key:
        self.server.request(self, "get")
        if key_id not in self.server.keys:
            raise failure(enums.ResultReason.ITEM_NOT_FOUND)
        self.server.answered(self, "get")
        return Key(self.server.keys[key_id])

    def revoke(self, reason: Any, key_id: str) -> None:
        self.server.request(self, "revoke")
        if self.server.revoke_fails:
            raise failure(self.server.revoke_fails)

    def destroy(self, key_id: str) -> None:
        self.server.request(self, "destroy")
        if key_id not in self.server.keys:
            raise failure(enums.ResultReason.ITEM_NOT_FOUND)
        del self.server.keys[key_id]
        self.server.names.pop(key_id, None)
        self.server.answered(self, "destroy")
