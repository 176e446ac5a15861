"""A store that is only busy (SQLite's write lock, MongoDB's write conflict) gets a clear 503
with a retry hint, never a 500; any other refusal of the store stays a fault of ours."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter
from pymongo.errors import DuplicateKeyError, OperationFailure

from avis.shared.case_keys import CaseKeyDestroyed
from avis.shared.keys import KeyServiceError
from avis.shared.mongo import store_busy
from avis.shared.runtime import Runtime
from avis.shared.settings import CommonSettings

# What FerretDB 1.24 answers when SQLite's busy timeout ran out (InternalError, code 1).
SQLITE_BUSY = OperationFailure(
    "[lazyerrors.go:125 sqlite.(*collection).UpdateAll] database is locked (5) (SQLITE_BUSY)",
    code=1,
)


@pytest.mark.parametrize(
    ("error", "busy"),
    [
        (SQLITE_BUSY, True),
        (OperationFailure("WriteConflict error", code=112), True),
        (
            OperationFailure("x", code=251, details={"errorLabels": ["TransientTransactionError"]}),
            True,
        ),
        (OperationFailure("Unknown modifier: $bad", code=9), False),
        (DuplicateKeyError("E11000 duplicate key", code=11000), False),
        (ValueError("database is locked"), False),
    ],
)
def test_what_counts_as_busy(error: Exception, busy: bool) -> None:
    assert store_busy(error) is busy


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An app whose routes meet the store's refusals; its lifespan never runs."""
    router = APIRouter()

    @router.post("/busy")
    async def busy() -> None:
        raise SQLITE_BUSY

    @router.post("/refused")
    async def refused() -> None:
        raise OperationFailure("Unknown modifier: $bad", code=9)

    @router.get("/keys-away")
    async def keys_away() -> None:
        raise KeyServiceError("cannot reach the key service at kms:5696: refused")

    @router.get("/erased")
    async def erased() -> None:
        raise CaseKeyDestroyed()

    settings = CommonSettings(service_name="busy-check", log_format="json", jwt_secret="s" * 40)
    app = Runtime(settings).create_app("Busy check", [router])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://avis.test") as client:
        yield client


async def test_a_busy_store_is_a_503_with_retry_after(http: httpx.AsyncClient) -> None:
    response = await http.post("/busy")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 503
    assert problem["type"].endswith("store-busy")
    assert "SQLITE" not in response.text  # the store's own words stay in the logs


async def test_another_refusal_stays_a_500(http: httpx.AsyncClient) -> None:
    response = await http.post("/refused")
    assert response.status_code == 500


async def test_the_key_service_away_is_a_503_and_an_erased_case_a_410(
    http: httpx.AsyncClient,
) -> None:
    away = await http.get("/keys-away")
    assert away.status_code == 503 and away.headers["retry-after"] == "5"
    assert away.json()["type"].endswith("key-service-unavailable")
    erased = await http.get("/erased")
    assert erased.status_code == 410 and erased.json()["type"].endswith("case-erased")
