"""RFC 9457 problem details: every HTTP error of every service, rendered and documented one way.

Error bodies never carry what the client sent (it may be health data) nor what the server was
doing when it failed (exception text, tracebacks): a stable `type`, a human `detail` and, for
validation, the offending fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://avis.health/problems/"
_REF_PREFIX = "#/components/schemas/"

# Slugs the platform itself produces; services add their own (`case-not-found`, ...).
VALIDATION = "validation"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
INTERNAL = "internal"

_log = structlog.get_logger(__name__)

_DESCRIPTIONS = {
    400: "The request is malformed",
    401: "Missing, malformed, forged or expired bearer token",
    403: "The caller's role may not do this",
    404: "No such resource",
    409: "The request conflicts with the resource's current state",
    422: "The request failed validation; `errors` lists the offending fields",
    500: "Unexpected server error",
    503: "A dependency is unavailable; retry later",
}


def problem_type(slug: str) -> str:
    """The stable type URI of a problem slug; absolute URIs and `about:blank` pass through."""
    if slug == "about:blank" or "://" in slug:
        return slug
    return PROBLEM_TYPE_BASE + slug


def _status_slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return "error" if status < 500 else INTERNAL


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class FieldError(BaseModel):
    """One offending field of a request: its location, dot-joined, and what is wrong."""

    field: str
    message: str


class ProblemDetail(BaseModel):
    """An RFC 9457 problem details body, served as application/problem+json."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """Raise to answer with a problem: status, type slug, title, detail, field errors, headers."""

    def __init__(
        self,
        status: int,
        type: str,
        title: str | None = None,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError | Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.type = problem_type(type)
        self.title = title or _phrase(status)
        self.detail = detail
        self.errors = (
            [e if isinstance(e, FieldError) else FieldError.model_validate(e) for e in errors]
            if errors is not None
            else None
        )
        self.headers = dict(headers or {})
        super().__init__(f"{status} {self.title}: {detail}" if detail else f"{status} {self.title}")

    def to_detail(self, instance: str | None = None) -> ProblemDetail:
        """The response body of this problem."""
        return ProblemDetail(
            type=self.type,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
        )

    def to_response(self, instance: str | None = None) -> Response:
        """This problem as an application/problem+json response."""
        return ProblemResponse(self.to_detail(instance), headers=self.headers)


class ProblemResponse(JSONResponse):
    """A JSON response with the problem media type; unset members are left out."""

    media_type = PROBLEM_MEDIA_TYPE

    def __init__(self, problem: ProblemDetail, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(
            problem.model_dump(mode="json", exclude_none=True),
            status_code=problem.status,
            headers=headers,
        )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` entries declaring these statuses as problem+json answers."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if not 400 <= status <= 599:
            raise ValueError(f"{status} is not an error status")
        responses[status] = {
            "description": _DESCRIPTIONS.get(status, _phrase(status)),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _REF_PREFIX + "ProblemDetail"}}},
        }
    return responses


def _instance(request: Request) -> str:
    # The path only: query strings may carry filters worth keeping out of error bodies.
    return request.url.path


def _safe_message(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "Invalid value"))
    value = error.get("input")
    # Validator messages are written by us, but one that quotes the value it rejected would
    # echo health data back; drop such a message rather than trust every validator.
    if isinstance(value, str) and len(value) >= 3 and value in message:
        return "Invalid value"
    return message


def _field_errors(errors: Sequence[Any]) -> list[FieldError]:
    out = []
    for error in errors:
        loc = ".".join(str(part) for part in error.get("loc", ())) or "request"
        out.append(FieldError(field=loc, message=_safe_message(error)))
    return out


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.to_response(_instance(request))


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problem = Problem(
        422,
        VALIDATION,
        "Request validation failed",
        "The request does not match the schema; see errors.",
        errors=_field_errors(exc.errors()),
    )
    return problem.to_response(_instance(request))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code in (204, 304) or exc.status_code < 200:
        return Response(status_code=exc.status_code, headers=headers)
    phrase = _phrase(exc.status_code)
    # HTTPException details are written by our own code (or Starlette's phrase), so they may be
    # shown; anything other than a string is replaced by the phrase.
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    if exc.status_code == 405:
        # Starlette's Allow names one route's methods; a path can have several routes.
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed here; allowed: {', '.join(allowed)}."
    problem = Problem(
        exc.status_code, _status_slug(exc.status_code), phrase, detail, headers=headers
    )
    return problem.to_response(_instance(request))


def _allowed_methods(request: Request) -> list[str]:
    """The methods the app's OpenAPI declares for every path template `request` matches, and
    those its routes take there (a route outside the document too: a web page)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m.upper() in _HTTP_METHODS}
    for method in _HTTP_METHODS - methods:
        scope = dict(request.scope, method=method)
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


_HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})


def _internal_problem() -> Problem:
    return Problem(
        500,
        INTERNAL,
        "Internal Server Error",
        "The server failed to handle the request; it has been logged.",
    )


async def _on_response_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ResponseValidationError)
    # The exception text quotes the response being built, which may be health data: log only
    # where and why it failed.
    _log.error(
        "response_validation_failed",
        method=request.method,
        path=request.url.path,
        errors=[
            {"loc": ".".join(str(p) for p in e.get("loc", ())), "type": e.get("type")}
            for e in exc.errors()
        ],
    )
    return _internal_problem().to_response(_instance(request))


async def _on_unhandled(request: Request, exc: Exception) -> Response:
    _log.exception(
        "unhandled_exception",
        method=request.method,
        path=request.url.path,
        error_type=type(exc).__name__,
    )
    return _internal_problem().to_response(_instance(request))


class UnhandledErrorMiddleware:
    """Answers an exception nothing else handled with a 500 problem, and stops it there.

    Starlette's own last-resort handler re-raises after responding, so the server would log the
    exception a second time with its message, outside our structlog redaction.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; turn an escaping exception into a problem if no response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                # Half a response is on the wire: let the last-resort handler log it and the
                # server drop the connection.
                raise
            request = Request(scope)
            if isinstance(exc, Problem):
                response = exc.to_response(_instance(request))
            else:
                response = await _on_unhandled(request, exc)
            await response(scope, receive, send)


def _document_problems(app: FastAPI) -> None:
    # FastAPI documents its own 422 body (HTTPValidationError, application/json), which is not
    # what these handlers send; rewrite the generated schema so it tells the truth.
    generate: Callable[[], dict[str, Any]] = app.openapi
    rewritten: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if rewritten and rewritten[0] is schema:
            return schema
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        problem_schema = ProblemDetail.model_json_schema(ref_template=_REF_PREFIX + "{model}")
        schemas.update(problem_schema.pop("$defs", {}))
        schemas["ProblemDetail"] = problem_schema
        fastapi_422 = {"$ref": _REF_PREFIX + "HTTPValidationError"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict):
                    continue
                for response in operation.get("responses", {}).values():
                    content = response.get("content", {})
                    if content.get("application/json", {}).get("schema") == fastapi_422:
                        response.update(problem_responses(422)[422])
        for name in ("HTTPValidationError", "ValidationError"):
            rest = {k: v for k, v in schemas.items() if k != name}
            if name in schemas and f'"{_REF_PREFIX}{name}"' not in json.dumps(
                [schema.get("paths"), schema.get("webhooks"), rest]
            ):
                del schemas[name]
        rewritten[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of `app` as application/problem+json and document it so in OpenAPI."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ResponseValidationError, _on_response_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    # The middleware answers from inside the stack; this handler covers exceptions raised by
    # middleware added after it (outside it), where Starlette's last resort is all that is left.
    app.add_exception_handler(Exception, _on_unhandled)
    app.add_middleware(UnhandledErrorMiddleware)
    _document_problems(app)


def not_found(what: str, slug: str = "not-found") -> Problem:
    """The one 404: the same answer whether `what` does not exist or the caller may not see it."""
    return Problem(
        404,
        slug,
        f"{what[:1].upper()}{what[1:]} not found",
        f"No {what} with that id is visible to you.",
    )
