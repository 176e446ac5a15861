"""Fixtures for the store contract suite: a fresh database per test, on MongoDB or FerretDB.

The store is whatever `AVIS_MONGO_URL` points at. Where FerretDB is known to differ from
MongoDB, a test carries `@pytest.mark.ferretdb_differs(reason=..., strict=...)`: it asserts
MongoDB's semantics and is turned into an expected failure only when the store is FerretDB.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

DEFAULT_MONGO_URL = "mongodb://127.0.0.1:27117"
DB_PREFIX = "avis_contract_"

Document = dict[str, Any]
ClientFactory = Callable[[], Awaitable[AsyncMongoClient[Document]]]


def mongo_url() -> str:
    """The store under test, from the environment."""
    return os.environ.get("AVIS_MONGO_URL", DEFAULT_MONGO_URL)


def redacted(url: str) -> str:
    """The URL without its credentials, fit for a report."""
    scheme, sep, rest = url.partition("://")
    _, at, tail = rest.rpartition("@")
    return f"{scheme}{sep}***@{tail}" if at else url


def new_client(**options: Any) -> AsyncMongoClient[Document]:
    """A client with the options the services use (tz-aware datetimes, short selection)."""
    options.setdefault("tz_aware", True)
    options.setdefault("serverSelectionTimeoutMS", 5000)
    return AsyncMongoClient(mongo_url(), **options)


@dataclass
class StoreInfo:
    """What the store says it is, from its `buildInfo` reply."""

    version: str
    ferretdb_version: str | None

    @property
    def is_ferretdb(self) -> bool:
        return self.ferretdb_version is not None

    @property
    def label(self) -> str:
        if self.ferretdb_version is not None:
            return f"FerretDB {self.ferretdb_version} (buildInfo version {self.version})"
        return f"MongoDB {self.version}"


_OBSERVATIONS_KEY = pytest.StashKey[list[str]]()
_STORE_LABEL_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ferretdb_differs(reason, strict=True): assert MongoDB semantics; "
        "expected to fail only when the store is FerretDB",
    )
    config.stash[_OBSERVATIONS_KEY] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    notes = config.stash.get(_OBSERVATIONS_KEY, [])
    label = config.stash.get(_STORE_LABEL_KEY, None)
    if label is None and not notes:
        return
    terminalreporter.section("store contract observations")
    if label is not None:
        terminalreporter.write_line(f"store: {label} at {redacted(mongo_url())}")
    for note in notes:
        terminalreporter.write_line(note)


def ferretdb_version(build_info: dict[str, Any]) -> str | None:
    """FerretDB's version if `buildInfo` came from FerretDB (it adds `ferretdb*` fields)."""
    if not any(key.lower().startswith("ferretdb") for key in build_info):
        return None
    return str(build_info.get("ferretdbVersion", "unknown"))


@pytest.fixture(scope="session")
async def store_info(pytestconfig: pytest.Config) -> StoreInfo:
    """Identify the store once per session."""
    client = new_client()
    try:
        reply = await client.admin.command("buildInfo")
    finally:
        await client.close()
    info = StoreInfo(version=str(reply.get("version")), ferretdb_version=ferretdb_version(reply))
    pytestconfig.stash[_STORE_LABEL_KEY] = info.label
    return info


@pytest.fixture
def observe(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured fact (printed and listed in the terminal summary)."""
    notes = request.config.stash[_OBSERVATIONS_KEY]

    def record(message: str) -> None:
        line = f"{request.node.name}: {message}"
        print(line)
        notes.append(line)

    return record


@pytest.fixture(autouse=True)
def _ferretdb_differences(request: pytest.FixtureRequest) -> None:
    """Turn `ferretdb_differs` into an xfail when, and only when, the store is FerretDB."""
    marker = request.node.get_closest_marker("ferretdb_differs")
    if marker is None:
        return
    info: StoreInfo = request.getfixturevalue("store_info")
    if info.is_ferretdb:
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
        strict = bool(marker.kwargs.get("strict", True))
        request.applymarker(pytest.mark.xfail(strict=strict, reason=f"on FerretDB: {reason}"))


@pytest.fixture
async def client_factory() -> AsyncIterator[ClientFactory]:
    """Make extra clients (separate connection pools); all are closed after the test."""
    clients: list[AsyncMongoClient[Document]] = []

    async def make() -> AsyncMongoClient[Document]:
        client = new_client()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(store_info: StoreInfo) -> AsyncIterator[AsyncMongoClient[Document]]:
    """One client per test, tz-aware like the services'."""
    mongo = new_client()
    try:
        yield mongo
    finally:
        await mongo.close()


@pytest.fixture
def store_url() -> str:
    """The URL of the store under test."""
    return mongo_url()


@pytest.fixture
def db_name() -> str:
    """A database name no other test (or engineer) uses."""
    return f"{DB_PREFIX}{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def db(
    client: AsyncMongoClient[Document], db_name: str
) -> AsyncIterator[AsyncDatabase[Document]]:
    """A fresh database, dropped after the test."""
    try:
        yield client[db_name]
    finally:
        await client.drop_database(db_name)
