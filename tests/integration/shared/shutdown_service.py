"""A service process for the shutdown tests, built like the four (`Runtime`, `runtime.serve`):
its consumer of `SHUTDOWN_TOPIC` takes `SHUTDOWN_HANDLER_SECONDS` per event and then counts its
effect in the store; `GET /v1/slow` notes in the store that it started, then takes
`SHUTDOWN_REQUEST_SECONDS`. Settings come from the environment as for any service (`AVIS_*`,
plus `SERVICE_NAME`, `HTTP_PORT`)."""

import asyncio
import os
from typing import Any

from fastapi import APIRouter, FastAPI

from avis.shared.envelope import Event
from avis.shared.runtime import Runtime, serve
from avis.shared.settings import CommonSettings


def create_app(settings: CommonSettings) -> FastAPI:
    runtime = Runtime(settings)
    effects = runtime.db["effects"]
    handler_seconds = float(os.environ["SHUTDOWN_HANDLER_SECONDS"])
    request_seconds = float(os.environ["SHUTDOWN_REQUEST_SECONDS"])

    async def handle(event: Event, _: Any) -> None:
        await effects.update_one({"_id": f"started:{event.id}"}, {"$inc": {"n": 1}}, upsert=True)
        await asyncio.sleep(handler_seconds)
        await effects.update_one({"_id": f"done:{event.id}"}, {"$inc": {"n": 1}}, upsert=True)

    runtime.subscribe(os.environ["SHUTDOWN_TOPIC"], handle)
    router = APIRouter()

    @router.get("/v1/slow")
    async def slow() -> dict[str, str]:
        await effects.update_one({"_id": "slow:started"}, {"$inc": {"n": 1}}, upsert=True)
        await asyncio.sleep(request_seconds)
        return {"status": "finished"}

    return runtime.create_app("shutdown test", [router])


if __name__ == "__main__":
    serve(create_app, CommonSettings())
