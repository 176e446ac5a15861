"""What wraps every page: the session cookie, the security headers, and plain words in place of
any problem body the platform's own layers answer with (a 404, a 413, a 500)."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avis.shared.problems import Problem
from avis.shared.ratelimit import TOO_MANY, WriteLimits
from avis.shared.runtime import DOCS_ASSETS
from avis.web import rules
from avis.web.store import Session, Sessions

COOKIE = "avis_session"
STATIC = "/static"
# Not pages: the operations doors keep their JSON and open no session.
NOT_PAGES = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/asyncapi.json",
    "/openapi.json",
    "/docs",
    "/redoc",
    DOCS_ASSETS,
    STATIC,
)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def is_page(path: str) -> bool:
    """Whether a path is one of the pages (not an operations door, not a static file)."""
    return not any(path == p or path.startswith(p + "/") for p in NOT_PAGES)


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                return None
            morsel = jar.get(COOKIE)
            return morsel.value if morsel else None
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


class SecurityHeaders:
    """Every response: a strict Content-Security-Policy and friends; every page: no-store.

    With people signing in at the provider, forms may also lead there: the sign-in button and
    the sign-out form (on every page) are answered by a redirect to the provider, and the
    identity server's form posts to it; browsers hold a form's redirects to `form-action` too.
    """

    def __init__(self, app: ASGIApp, form_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        csp = rules.signin_csp(CSP, *form_origins) if form_origins else CSP
        self.headers = SECURITY_HEADERS | {"Content-Security-Policy": csp}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(STATIC + "/")

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    # A route may set a stricter policy of its own (a record: a sandbox).
                    headers.setdefault(name, value)
                headers["Cache-Control"] = "no-cache" if static else "no-store"
            await send(message)

        await self.app(scope, receive, secured)


class SessionCookies:
    """Finds the page's session from its signed cookie (or opens one) and sets the cookie when
    the session is new, renewed at sign-in, or ended."""

    def __init__(self, app: ASGIApp, sessions: Sessions, secure: bool) -> None:
        self.app = app
        self.sessions = sessions
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return
        cookie = _cookie(scope)
        # A page's own live updates are not the person using it: they keep no session alive.
        polling = _header(scope, b"hx-request") is not None and scope["method"] == "GET"
        session = self.sessions.find(cookie, touch=not polling)
        if session is None:
            session = self.sessions.new()
            if cookie:
                session.notify("error", "session.ended")
        state = scope.setdefault("state", {})
        state["session"] = session

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                final: Session = state["session"]
                value = self.sessions.cookie(final) if final in self.sessions else None
                if value != cookie:
                    MutableHeaders(scope=message).append("Set-Cookie", self._set(value))
            await send(message)

        await self.app(scope, receive, with_cookie)

    def _set(self, value: str | None) -> str:
        attributes = "; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if self.secure else "")
        if value is None:
            return f"{COOKIE}=; Max-Age=0" + attributes
        return f"{COOKIE}={value}" + attributes


# What a problem's answer says beyond its body, which its page says too: the methods a 405
# allows (RFC 9110 requires it), when to come back after a 429 or a 503.
KEPT_HEADERS = frozenset({b"allow", b"retry-after"})


class PlainErrors:
    """A page that ends in a problem body (a 404, 405, 413, 500 of the platform's layers) shows
    an error page in plain words instead: never the raw problem, never a stack trace (but the
    problem's `Allow` and `Retry-After`)."""

    def __init__(self, app: ASGIApp, render: Callable[[Scope, int, str], bytes]) -> None:
        self.app = app
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        body: list[bytes] = []

        async def plain(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                kind = MutableHeaders(scope=message).get("content-type", "")
                if kind.startswith("application/problem+json"):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                kept = [(k, v) for k, v in held.get("headers", []) if k.lower() in KEPT_HEADERS]
                await self._replace(scope, send, held["status"], b"".join(body), kept)
                return
            await send(message)

        await self.app(scope, receive, plain)

    async def _replace(
        self,
        scope: Scope,
        send: Send,
        status: int,
        problem: bytes,
        kept: list[tuple[bytes, bytes]],
    ) -> None:
        try:
            decoded = json.loads(problem)
            kind = decoded.get("type") if isinstance(decoded, dict) else None
        except ValueError:
            kind = None
        page = self.render(scope, status, rules.problem_message(status, kind))
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(page)).encode()),
            *kept,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": page})


# The steps of a sign-in a caller may take only so often: web's sign-in button, the identity
# server's form (each wrong password returns to it) and the provider's login request.
SIGNIN_PATHS = frozenset({"/signin", "/signin/password", "/oidc/login", "/signin/callback"})


class SignInRateLimit:
    """Answers a caller's sign-in step over AVIS_WEB_SIGNIN_RATE_LIMIT with a 429 problem and
    `Retry-After`. The caller is the client's address (nobody is signed in yet); the counts are
    in this copy's memory. A GET of /signin (the page alone) is not counted."""

    def __init__(self, app: ASGIApp, limits: WriteLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        counted = path in SIGNIN_PATHS and not (path == "/signin" and scope["method"] == "GET")
        if scope["type"] != "http" or not counted:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        retry = self.limits.hit(f"addr:{client[0] if client else 'unknown'}")
        if retry is None:
            await self.app(scope, receive, send)
            return
        problem = Problem(
            429,
            TOO_MANY,
            "Too Many Requests",
            f"more sign-in steps than web takes from one caller ({self.limits.text}); "
            f"retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )
        await problem.to_response(path)(scope, receive, send)
