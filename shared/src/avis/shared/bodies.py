"""Request bodies at every service's door: how large one may be (413) and how long it may take
to arrive (408), both answered as problems before any route, authentication included, looks at
the request. The runtime installs both for every service (`Runtime.create_app`) and declares
both answers on every operation that takes a body.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avis.shared.problems import Problem, problem_responses

# The methods whose bodies a route reads; the others' bodies are never read, so never bounded.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DRAIN_LIMIT = 64 * 1024 * 1024  # read (and drop) this much of a refused body before answering
_PARAMETER = re.compile(r"\{[^/}]+\}")


class BodyLimits:
    """The largest request body a service takes, in bytes: `default` for every POST, PUT and
    PATCH, and `routes` (a path template as the route declares it -> bytes) for a route that
    takes another size (an upload)."""

    def __init__(self, default: int, routes: Mapping[str, int] | None = None) -> None:
        self.default = default
        self.routes = [
            (re.compile("[^/]+".join(re.escape(part) for part in _PARAMETER.split(path))), limit)
            for path, limit in (routes or {}).items()
        ]

    def of(self, method: str, path: str) -> int | None:
        """The limit of a request's body (None: a method whose body no route reads)."""
        if method not in BODY_METHODS:
            return None
        for pattern, limit in self.routes:
            if pattern.fullmatch(path):
                return limit
        return self.default


class BodyLimit:
    """Refuses a request body over its route's limit with a 413 problem.

    The size is known from Content-Length, or counted while the body streams (chunked), so a
    refused body is never spooled whole first. A route that answers before it has read the
    whole body (a missing token, a route that takes no body) has its answer held until the rest
    is read: an oversized body is refused whatever the route does. The rest of a refused body
    is read and dropped (up to `DRAIN_LIMIT`) so that the client, still sending, gets to read
    the answer instead of a reset connection.
    """

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request within its body's limit."""
        limit = self.limits.of(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(limit, 0, scope, receive, send)
            return
        body = _CountedBody(limit, scope, receive, send)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.refused:
                raise
            # The app met the end of a body we cut off; the client already has its 413.


class _CountedBody:
    """One request's body as the app reads it, counted against its limit."""

    def __init__(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        self.limit = limit
        self.scope = scope
        self._receive = receive
        self._send = send
        self.received = 0
        self.complete = self.refused = False

    async def receive(self) -> Message:
        """The next part of the body; a disconnect once the body went over its limit."""
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] != "http.request":
            self.complete = True
            return message
        more = message.get("more_body", False)
        self.complete = not more
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            self.refused = True
            await _refuse(
                self.limit, self.received if more else -1, self.scope, self._receive, self._send
            )
            return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        """Pass the app's answer on, once the whole body is known to be within its limit."""
        if message["type"] == "http.response.start":
            while not self.complete and not self.refused:
                await self.receive()
        if self.refused:
            return  # our 413 is already out; whatever the app says after is dropped
        await self._send(message)


async def _refuse(limit: int, already: int, scope: Scope, receive: Receive, send: Send) -> None:
    """Drop the rest of the body (`already` bytes read; -1 if it is all read), then answer 413."""
    drained = already
    while 0 <= drained <= DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            break
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> Response:
    return Problem(
        413,
        "request-too-large",
        "Request too large",
        f"the request body exceeds {limit} bytes",
        headers={"Connection": "close", "Cache-Control": "no-store"},
    ).to_response()


class BodyDeadline:
    """Bounds how long a request's body may take to arrive: `idle` seconds between two parts, and
    `total` seconds in all. A body dripped slower (a slow or stalled client, a slowloris) gets a
    408 problem and the connection is closed, rather than holding a worker forever; the app sees
    the client gone, so nothing it would have written from the body is written.

    Only the body is bounded: once it is complete, waiting for a disconnect (a streamed
    response) is left alone.
    """

    def __init__(self, app: ASGIApp, idle: float, total: float) -> None:
        self.app = app
        self.idle = idle
        self.total = total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with its body's arrival bounded."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total
        complete = timed_out = started = False

        async def bounded_receive() -> Message:
            nonlocal complete, timed_out
            if complete:
                return await receive()
            if timed_out:
                return {"type": "http.disconnect"}
            try:
                async with asyncio.timeout(min(self.idle, max(0.0, deadline - loop.time()))):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                if not started:
                    await _too_slow(self.idle, self.total)(scope, receive, send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # the 408 is out; whatever the app says after is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
            # The app met the end of a body that never came; the client has its 408.


def _too_slow(idle: float, total: float) -> Response:
    return Problem(
        408,
        "request-timeout",
        "Request Timeout",
        f"the request body did not arrive in time ({idle:g} s without data at most, "
        f"{total:g} s in all)",
        headers={"Connection": "close"},
    ).to_response()


def bound_bodies(app: FastAPI, limits: BodyLimits, *, idle: float, total: float) -> None:
    """Bound `app`'s request bodies in size (`limits`) and in time (`idle` seconds without a
    byte, `total` in all), and declare the 413 and 408 that follow."""
    # The size guard sits inside the deadline, so that draining a refused body is bounded too.
    app.add_middleware(BodyLimit, limits=limits)
    app.add_middleware(BodyDeadline, idle=idle, total=total)
    declare_body_answers(app)


def declare_body_answers(app: FastAPI) -> None:
    """Declare 413 and 408 in `app`'s OpenAPI document on every operation whose body the two
    guards bound (an operation's own declaration of either stays)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path_item in schema.get("paths", {}).values():
            for method, operation in path_item.items():
                if method.upper() in BODY_METHODS and isinstance(operation, dict):
                    responses = operation.setdefault("responses", {})
                    for status, answer in problem_responses(408, 413).items():
                        responses.setdefault(str(status), answer)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
