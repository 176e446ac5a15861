"""Composition root of the web pages: the runtime's doors, the pages, the sessions in memory,
the sign-in seam and the services' APIs."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Scope

from avis.shared.bodies import BodyLimits
from avis.shared.ratelimit import WriteLimits
from avis.shared.runtime import Runtime, serve
from avis.web import (
    api,
    board,
    claim,
    fhir_endpoints,
    followups,
    live,
    oidc,
    partner,
    physician,
    rules,
    second_reading,
    specialist,
    trail,
    translation,
)
from avis.web.middleware import (
    STATIC,
    PlainErrors,
    SecurityHeaders,
    SessionCookies,
    SignInRateLimit,
)
from avis.web.oidc_signin import OidcSignIn, SignInUnavailable
from avis.web.service import Platform, Refused
from avis.web.settings import Settings
from avis.web.signin import DevelopmentSignIn, NoSignIn, SignIn
from avis.web.store import Sessions
from avis.web.texts import Texts

HERE = pathlib.Path(__file__).resolve().parent
MULTIPART_SLACK = 64 * 1024
DESCRIPTION = (
    "The people's pages: server-rendered, in French and English, over the four services' APIs "
    "with the signed-in person's own token. Web keeps no health data."
)


def create_app(
    settings: Settings | None = None,
    *,
    signin: SignIn | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the web app (no store, no broker: only the other services' APIs)."""
    settings = settings or Settings()
    runtime = Runtime(settings, connects=False)
    sessions = Sessions(
        idle_seconds=settings.session_idle_minutes * 60, max_sessions=settings.max_sessions
    )
    templates = Jinja2Templates(directory=HERE / "templates")
    web = api.Web(
        settings=settings,
        sessions=sessions,
        platform=Platform(settings, transport),
        signin=signin or signin_of(settings),
        templates=templates,
    )
    upload = settings.max_upload_bytes * api.FILES_PER_FORM + MULTIPART_SLACK
    limits = BodyLimits(settings.http_max_body_bytes, {api.UPLOAD_PATH: upload})
    app = runtime.create_app(
        "Avis web", [api.router, claim.router, trail.router], DESCRIPTION, body_limits=limits
    )
    app.state.web = web
    app.include_router(board.router)
    app.include_router(fhir_endpoints.router)
    app.include_router(partner.router)
    app.include_router(oidc.router)
    app.include_router(live.router)
    live.attach(app, web, settings)
    specialist.attach(app, settings)
    app.include_router(second_reading.router)
    app.include_router(followups.router)
    app.include_router(translation.router)
    app.include_router(physician.router)
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="static")
    _close_with(app, web)
    _handle_errors(app, web)

    def render_error(scope: Scope, status: int, key: str) -> bytes:
        request = Request(scope)
        texts = Texts(api.language_of(request), api.zone_of(request))
        page = templates.get_template("error.html").render(
            t=texts,
            lang=texts.language.value,
            languages=rules.LANGUAGES,
            session=None,
            notices=[],
            path="/",
            status=status,
            message=key,
        )
        return page.encode()

    app.add_middleware(PlainErrors, render=render_error)
    app.add_middleware(SessionCookies, sessions=sessions, secure=settings.cookie_secure)
    # Outside the plain-words pages: a throttled sign-in step is a 429 problem with Retry-After.
    app.add_middleware(SignInRateLimit, limits=WriteLimits(settings.signin_rate_limit))
    origins = web.signin.form_origins if isinstance(web.signin, OidcSignIn) else ()
    app.add_middleware(SecurityHeaders, form_origins=origins)
    return app


def signin_of(settings: Settings) -> SignIn:
    """The sign-in AVIS_WEB_SIGNIN names (the development one only with AVIS_ENV=development)."""
    kind = settings.signin_kind
    if kind == "oidc":
        return OidcSignIn(settings)
    if kind == "development" and settings.development:
        return DevelopmentSignIn(settings)
    return NoSignIn()


def _close_with(app: FastAPI, web: api.Web) -> None:
    """Close the services' connections when the app stops (after the runtime's own stop)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        async with inner(application):
            try:
                yield
            finally:
                await web.platform.close()
                if isinstance(web.signin, OidcSignIn):
                    await web.signin.close()

    app.router.lifespan_context = lifespan


def _handle_errors(app: FastAPI, web: api.Web) -> None:
    async def not_signed_in(request: Request, exc: Exception) -> Response:
        if not api.path_holds(request):
            return web.render(
                request, "error.html", status=404, message=rules.problem_message(404, None)
            )
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": "/signin"})
        session = api.session_of(request)
        if session is not None and request.method == "GET":
            # An emailed link opens its own page once the person has signed in.
            session.after = rules.local_path(request.url.path, "/cases")
        return RedirectResponse("/signin", status_code=303)

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return web.render(request, "error.html", status=403, message="error.csrf")

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        session = api.session_of(request)
        if exc.status == 401 and session is not None:
            # The token expired or was withdrawn: sign in again.
            web.sessions.end(session)
            return await not_signed_in(request, exc)
        message = rules.problem_message(exc.status, exc.problem_type)
        status = exc.status if exc.status in (403, 404, 409, 410, 503) else 502
        return web.render(request, "error.html", status=status, message=message)

    async def signin_unavailable(request: Request, exc: Exception) -> Response:
        return web.render(request, "error.html", status=503, message=rules.UNAVAILABLE)

    app.add_exception_handler(SignInUnavailable, signin_unavailable)
    app.add_exception_handler(api.NotSignedIn, not_signed_in)
    app.add_exception_handler(api.CsrfRefused, csrf_refused)
    app.add_exception_handler(Refused, refused)


def run() -> None:
    """Serve the web pages (`avis-web`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
