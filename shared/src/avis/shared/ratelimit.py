"""Rate limits per caller on writes: at most AVIS_RATE_LIMIT_WRITES POST, PUT, PATCH and DELETE
requests per caller, counted in a moving window, then a 429 problem with `Retry-After`.

The caller is the subject (`sub`) of a valid bearer token; a request without one is counted
against its client address, so refused tokens cannot be sent without end either. The limit is
checked before the route (and before authentication answers), so a throttled write does no
work. Counters live in the memory of each copy of a service (the `limits` package's moving
window): N copies let a caller write up to N times the limit. The local store loses concurrent
`$inc` counts, so a shared counter there would not be worth more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from avis.shared.problems import Problem, problem_responses
from avis.shared.security import InvalidToken, KeysUnavailable, TokenVerifier

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOO_MANY = "too-many-requests"


class WriteLimits:
    """The policy: how many writes one caller may make, each rate in its own moving window."""

    def __init__(self, rates: str) -> None:
        self.rates: list[RateLimitItem] = parse_many(rates)
        if not self.rates:
            raise ValueError(f"no rate in {rates!r}")
        self.text = "; ".join(str(rate) for rate in self.rates)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, caller: str) -> int | None:
        """Count one write of `caller`: None if it may go on, else the seconds (at least 1) until
        it may write again. A refused write is not counted."""
        refused = [rate for rate in self.rates if not self._limiter.test(rate, caller)]
        if not refused:
            for rate in self.rates:
                self._limiter.hit(rate, caller)
            return None
        now = time.time()  # the clock the library's windows keep
        reset = max(self._limiter.get_window_stats(rate, caller).reset_time for rate in refused)
        return max(1, math.ceil(reset - now))


async def caller_of(scope: Scope, verifier: TokenVerifier) -> str:
    """Who is writing: `sub:<subject>` of a valid bearer token, else `addr:<client address>`."""
    headers = dict(scope.get("headers") or [])
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            principal = await verifier.principal_of(token.strip())
            return f"sub:{principal.sub}"
        except (InvalidToken, KeysUnavailable):
            pass
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


class WriteRateLimit:
    """Answers a caller's write over its limit with a 429 problem and `Retry-After`."""

    def __init__(self, app: ASGIApp, limits: WriteLimits, verifier: TokenVerifier) -> None:
        self.app = app
        self.limits = limits
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, unless it is a write over its caller's limit."""
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        retry = self.limits.hit(await caller_of(scope, self.verifier))
        if retry is None:
            await self.app(scope, receive, send)
            return
        problem = Problem(
            429,
            TOO_MANY,
            "Too Many Requests",
            f"more writes than this service takes from one caller ({self.limits.text}); "
            f"retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )
        await problem.to_response(scope["path"])(scope, receive, send)


def limit_writes(app: FastAPI, limits: WriteLimits, verifier: TokenVerifier) -> None:
    """Limit `app`'s writes per caller and declare the 429 on every write operation."""
    app.add_middleware(WriteRateLimit, limits=limits, verifier=verifier)
    generate: Callable[[], dict[str, Any]] = app.openapi
    answer = problem_responses(429)[429] | {
        "description": "Too many writes from this caller; retry after `Retry-After` seconds",
        "headers": {
            "Retry-After": {
                "description": "Seconds until this caller may write again",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path_item in schema.get("paths", {}).values():
            for method, operation in path_item.items():
                if method.upper() in WRITE_METHODS and isinstance(operation, dict):
                    operation.setdefault("responses", {}).setdefault("429", answer)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
