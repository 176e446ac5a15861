"""Every protected operation of every service, called with no token and with each kind of bad
one (expired, forged, another audience, `alg: none`, garbage, a valid token of no known role):
a 401 problem that the operation documents and that matches its documented schema, a Bearer
challenge, never the token echoed back, and nothing written to the service's store.

Schemathesis fuzzes each API with valid tokens of every role (tests/integration/*/); a bad token
is refused before any input is read, so one request per operation and token says it all, here,
cheaply: the refusal must not depend on the path, the method or the body.
"""

import time
from functools import partial
from typing import Any

import httpx
import jsonschema_rs
import jwt
import pytest
from pymongo import AsyncMongoClient

from avis.notify.store import cursor_key
from tests.support.basics import JWT_SECRET, MONGO_URL, eventually, serve, skip_history
from tests.support.services import FILLER, READS, SERVICES

pytestmark = pytest.mark.infra


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "p", "role": "patient", "aud": "avis", "iat": now, "exp": now + 600} | overrides


def bad_tokens() -> dict[str, str | None]:
    """Each kind of bad token, made when the test runs (a long suite outlives an `exp`)."""
    return {
        "none": None,
        "expired": jwt.encode(claims(exp=int(time.time()) - 3600), JWT_SECRET, algorithm="HS256"),
        "forged": jwt.encode(claims(), "another-secret-" + "y" * 40, algorithm="HS256"),
        "other-audience": jwt.encode(claims(aud="elsewhere"), JWT_SECRET, algorithm="HS256"),
        "alg-none": jwt.encode(claims(), None, algorithm="none"),
        "garbage": "not-a-jwt",
        "unknown-role": jwt.encode(claims(role="administrator"), JWT_SECRET, algorithm="HS256"),
    }


# What a service writes by itself once connected, asked nothing: notify's sender and webhook
# worker each place their due-queue cursor on their first pass. The count taken before the
# requests waits for those, so a first pass running late is not taken for a request's write.
STARTUP_WRITES = {"notify": [("due", cursor_key("email")), ("due", cursor_key("webhook"))]}


def protected(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if op.get("security")
    ]


def documented_schema(spec: dict[str, Any], op: dict[str, Any], status: int) -> dict[str, Any]:
    response = op["responses"].get(str(status))
    assert response is not None, f"{status} is not documented"
    content = response["content"]
    media = content.get("application/problem+json") or content["application/json"]
    return {**media["schema"], "components": spec["components"]}


async def stored_counts(database: str) -> dict[str, int]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        db = mongo[database]
        return {
            name: await db[name].count_documents({})
            for name in await db.list_collection_names()
            # the runtime's own: inbox markers, and leases its copies claim whenever they may
            if not name.startswith("inbox_") and name != "leases"
        }
    finally:
        await mongo.close()


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_protected_operation_refuses_every_bad_token(service: str) -> None:
    make, settings_of = SERVICES[service]
    settings = settings_of()
    await skip_history(f"avis-{settings.service_name}", READS[service])  # its own writes only
    app = make(settings)
    runtime = app.state.runtime
    try:
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            await eventually(lambda: runtime.store_initialised and runtime.kafka_started, 60)
            for collection, doc_id in STARTUP_WRITES.get(service, []):
                await eventually(partial(runtime.db[collection].find_one, {"_id": doc_id}), 60)
            spec = (await http.get("/openapi.json")).json()
            operations = protected(spec)
            assert len(operations) >= 3, "the service documents its protected operations"
            before = await stored_counts(settings.database)
            for method, path, op in operations:
                target = path
                for param in op.get("parameters", []):
                    if param["in"] == "path":
                        target = target.replace("{" + param["name"] + "}", FILLER)
                schema = documented_schema(spec, op, 401)
                for name, token in bad_tokens().items():
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    answer = await http.request(method, target, headers=headers)
                    where = f"{method} {path} with {name} token"
                    assert answer.status_code == 401, (where, answer.status_code, answer.text)
                    assert answer.headers["content-type"].startswith("application/problem+json"), (
                        where
                    )
                    assert answer.headers["www-authenticate"].startswith("Bearer"), where
                    jsonschema_rs.validate(schema, answer.json())
                    assert token is None or token not in answer.text, where
            assert await stored_counts(settings.database) == before, "nothing written"
    finally:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
        await mongo.drop_database(settings.database)
        await mongo.close()
