"""The web pages on the test stack: the four services and web as processes, the way `make run`
starts them (development sign-in on), and a person's browser over HTTP that follows forms."""

import asyncio
import contextlib
import copy
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from pymongo import MongoClient

from avis.shared import topics
from avis.web.main import create_app
from avis.web.settings import Settings
from tests.support.basics import (
    BOOTSTRAP,
    JWT_SECRET,
    MONGO_URL,
    SEALING_KEYS,
    kafka_passwords,
    skip_history,
)
from tests.support.kms import kms_env
from tests.support.stack import SERVICES, ServiceStack, free_port

# A fake of the services' APIs: what each request gets, at once or awaited.
Answers = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)
# The institution whose physicians get the report as a FHIR document: notify posts it to a
# loopback port nobody serves until a test does (`fhir_port`).
FHIR_INSTITUTION = "130000009"
ENDPOINTS = "AVIS_NOTIFY_PHYSICIAN_FHIR_ENDPOINTS"
# What each service consumes: a new consumer group starts at the end, not at the suite's history.
CONSUMES = {
    "intake": [topics.REVIEW_ASSIGNED, topics.REVIEW_COMPLETED, topics.REPORT_READY],
    "review": [topics.CASE_SUBMITTED, topics.REPORT_READY],
    "reports": [topics.CASE_SUBMITTED, topics.REVIEW_COMPLETED],
    "notify": [
        topics.CASE_SUBMITTED,
        topics.REVIEW_ASSIGNED,
        topics.REVIEW_COMPLETED,
        topics.REPORT_READY,
    ],
}


@contextlib.contextmanager
def web_stack(logs: Path) -> Iterator[ServiceStack]:
    """intake, review, reports, notify and web, each its own process and database, ready (the
    web and browser tests that run one after another share one: `web_services`)."""
    suffix = uuid.uuid4().hex[:8]
    databases = {name: f"webtest_{name}_{suffix}" for name in (*SERVICES, "web")}
    stack = ServiceStack({}, logs, databases, services=(*SERVICES, "web"))
    urls = stack.urls
    stack.env = dict(os.environ) | {
        "AVIS_ENV": "development",
        "AVIS_KAFKA_BOOTSTRAP": BOOTSTRAP,
        **kafka_passwords(),
        "AVIS_MONGO_URL": MONGO_URL,
        "AVIS_SMTP_URL": os.environ.get("AVIS_SMTP_URL", "smtp://127.0.0.1:11025"),
        "AVIS_SEALING_KEYS": SEALING_KEYS,
        **kms_env(),
        "AVIS_JWT_SECRET": JWT_SECRET,
        "AVIS_LOG_FORMAT": "json",
        "AVIS_RELAY_POLL_SECONDS": "0.2",
        "AVIS_REVIEW_SEED_REVIEWERS": "true",
        "AVIS_INTAKE_PUBLIC_URL": urls["intake"],
        "AVIS_REVIEW_INTAKE_BASE_URL": urls["intake"],
        "AVIS_REPORTS_PUBLIC_URL": urls["reports"],
        "AVIS_WEB_INTAKE_URL": urls["intake"],
        "AVIS_WEB_REVIEW_URL": urls["review"],
        "AVIS_WEB_REPORTS_URL": urls["reports"],
        "AVIS_WEB_NOTIFY_URL": urls["notify"],
        "AVIS_NOTIFY_PAGES_URL": urls["web"],
        # Partners' endpoints on loopback, and a delivery that fails dies within seconds.
        "AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
        "AVIS_NOTIFY_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "AVIS_NOTIFY_WEBHOOK_RETRY_WINDOW_SECONDS": "3",
        ENDPOINTS: json.dumps({FHIR_INSTITUTION: f"http://127.0.0.1:{free_port()}/fhir"}),
    }
    for name, consumed in CONSUMES.items():
        asyncio.run(skip_history(f"avis-{name}", consumed))
    try:
        asyncio.run(stack.start())
        yield stack
    finally:
        stack.stop()
        with MongoClient(MONGO_URL) as mongo:
            for database in databases.values():
                mongo.drop_database(database)


def fhir_port(stack: ServiceStack) -> int:
    """The loopback port of `FHIR_INSTITUTION`'s endpoint, for a test to serve."""
    url = json.loads(stack.env[ENDPOINTS])[FHIR_INSTITUTION]
    return int(url.rsplit(":", 1)[1].split("/")[0])


class SharedWebStack:
    """One web stack for a run of tests: started on first use, stopped when told."""

    def __init__(self) -> None:
        self._exit = contextlib.ExitStack()
        self._stack: ServiceStack | None = None

    def get(self, logs: Callable[[], Path]) -> ServiceStack:
        """The running stack, started now if it is not."""
        if self._stack is None:
            self._stack = self._exit.enter_context(web_stack(logs()))
        return self._stack

    def stop(self) -> None:
        """Stop the stack, if it runs."""
        self._stack = None
        self._exit.close()
        self._exit = contextlib.ExitStack()


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, f"no form on {page.url}:\n{page.text[:2000]}"
    return found.group(1)


@contextlib.asynccontextmanager
async def in_process(
    services: Answers,
    identity: str,
    **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The web app in this process over a fake of the services' APIs (`services` answers each
    request), with `identity` signed in (development sign-in) and English pages."""
    app = create_app(
        Settings(avis_env="development", jwt_secret="s" * 40, live_events=False, **settings),
        transport=httpx.MockTransport(services),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://web",
            headers={"Accept-Language": "en"},
        ) as client,
    ):
        page = await client.get("/signin")
        done = await client.post("/signin", data={"csrf": csrf_of(page), "identity": identity})
        assert done.status_code == 303, done.text
        yield client


class Browser:
    """A person's browser without a browser: cookies kept, redirects followed, forms posted
    with the CSRF token of the page they are on."""

    def __init__(self, base_url: str, language: str = "en") -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            follow_redirects=True,
            timeout=30.0,
            headers={"Accept-Language": language},
        )
        self.page: httpx.Response | None = None

    async def __aenter__(self) -> "Browser":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def get(self, path: str) -> httpx.Response:
        self.page = await self.http.get(path)
        return self.page

    async def submit(self, action: str, data: dict[str, Any], **kwargs: Any) -> httpx.Response:
        """Post a form of the current page."""
        assert self.page is not None, "open a page first"
        self.page = await self.http.post(
            action, data={"csrf": csrf_of(self.page), **data}, **kwargs
        )
        return self.page

    async def sign_in(self, identity: str = "patient-1") -> httpx.Response:
        await self.get("/signin")
        return await self.submit("/signin", {"identity": identity})


async def reviewer_writes_the_opinion(
    stack: ServiceStack, case_id: str, opinion: dict[str, Any]
) -> None:
    """The assigned reviewer accepts and answers (through review's API: their pages come later)."""
    async with stack.client("review", "coordinator-web", "coordinator") as coordinator:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            page = await coordinator.get("/v1/assignments", params={"case_id": case_id})
            items = page.json().get("items", [])
            if items:
                break
            assert asyncio.get_running_loop().time() < deadline, "no assignment in time"
            await asyncio.sleep(0.3)
    assignment = items[0]
    async with stack.client("review", assignment["reviewer_id"], "reviewer") as reviewer:
        url = f"/v1/assignments/{assignment['id']}"
        accepted = await reviewer.post(f"{url}/accept")
        assert accepted.status_code == 200, accepted.text
        answered = await reviewer.post(f"{url}/opinion", json=opinion)
        assert answered.status_code in (200, 201), answered.text


@contextlib.asynccontextmanager
async def browsing(stack: ServiceStack, language: str = "en") -> AsyncIterator[Browser]:
    """A browser on the stack's web pages."""
    async with Browser(stack.urls["web"], language) as browser:
        yield browser


@contextlib.asynccontextmanager
async def signed_in(stack: ServiceStack, identity: str) -> AsyncIterator[Browser]:
    """A browser on the stack's web pages, `identity` signed in (development sign-in)."""
    async with browsing(stack) as browser:
        await browser.sign_in(identity)
        yield browser


def pages_schema(*routers: APIRouter) -> dict[str, Any]:
    """An OpenAPI document of the pages of web's `routers`, built from copies of their routes
    (web serves its pages outside its OpenAPI document, which holds only its operational doors):
    each page's parameters and form fields as the routes declare them, and every answer a page,
    whatever its status, in HTML (or, the physician's link, the report's PDF)."""
    app = FastAPI()
    for router in routers:
        shown = APIRouter(prefix=router.prefix)
        for route in router.routes:
            if isinstance(route, APIRoute):
                route = copy.copy(route)
                route.include_in_schema = True
            shown.routes.append(route)
        app.include_router(shown)
    document = app.openapi()
    page = {
        "description": "A page",
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"] = {"default": page}
    return document
