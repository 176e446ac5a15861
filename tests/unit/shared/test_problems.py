"""Problem details: every error is application/problem+json and never echoes what was sent."""

from typing import Annotated

import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel, field_validator
from structlog.testing import capture_logs

from avis.shared.problems import (
    PROBLEM_MEDIA_TYPE,
    FieldError,
    Problem,
    ProblemDetail,
    install_problem_handlers,
    problem_responses,
    problem_type,
)
from tests.support.problems import assert_problem

SECRET_LOOKING = "Jeanne-Martin-1984-05-02-diabete-type-2"


class Draft(BaseModel):
    specialty: str
    age: int
    language: str = "fr"

    @field_validator("language")
    @classmethod
    def known_language(cls, value: str) -> str:
        if value not in ("fr", "en"):
            # A careless validator: quotes the value it refuses.
            raise ValueError(f"language {value} is not supported")
        return value


class Answer(BaseModel):
    count: int


@pytest.fixture
def app() -> FastAPI:
    """A tiny app with one route per kind of failure."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/drafts", status_code=201, responses=problem_responses(409, 422))
    def create(draft: Draft) -> dict[str, str]:
        if draft.specialty == "taken":
            raise Problem(
                409,
                "case-exists",
                "Case exists",
                "A case with this idempotency key exists.",
                errors=[{"field": "specialty", "message": "already used"}],
                headers={"Location": "/drafts/1"},
            )
        return {"status": "created"}

    @app.get("/search")
    def search(limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, int]:
        return {"limit": limit}

    @app.get("/boom")
    def boom() -> dict[str, str]:
        raise RuntimeError(f"database said: patient {SECRET_LOOKING} not found")

    @app.get("/legacy")
    def legacy() -> dict[str, str]:
        raise HTTPException(status_code=404, detail="case not found")

    @app.get("/bad-answer")
    def bad_answer() -> Answer:
        return {"count": SECRET_LOOKING}  # type: ignore[return-value]

    return app


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    """A client that sees the responses the server sends, not the server's exceptions."""
    return TestClient(app, raise_server_exceptions=False)


def test_problem_raised_by_a_route(client: TestClient) -> None:
    response = client.post("/drafts", json={"specialty": "taken", "age": 40})
    body = assert_problem(response, 409, "case-exists")
    assert body["detail"] == "A case with this idempotency key exists."
    assert body["errors"] == [{"field": "specialty", "message": "already used"}]
    assert body["instance"] == "/drafts"
    assert response.headers["location"] == "/drafts/1"


def test_validation_lists_fields_without_the_values(client: TestClient) -> None:
    response = client.post(
        "/drafts", json={"specialty": ["not", "a", "string"], "age": SECRET_LOOKING}
    )
    body = assert_problem(response, 422, "validation")
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"body.specialty", "body.age"}
    assert SECRET_LOOKING not in response.text


def test_validation_drops_a_message_that_quotes_the_value(client: TestClient) -> None:
    response = client.post(
        "/drafts", json={"specialty": "cardio", "age": 40, "language": SECRET_LOOKING}
    )
    body = assert_problem(response, 422, "validation")
    assert body["errors"] == [{"field": "body.language", "message": "Invalid value"}]
    assert SECRET_LOOKING not in response.text


def test_validation_of_missing_fields_and_query(client: TestClient) -> None:
    body = assert_problem(client.post("/drafts", json={}), 422, "validation")
    assert {e["field"] for e in body["errors"]} == {"body.specialty", "body.age"}
    body = assert_problem(client.get("/search", params={"limit": "0"}), 422, "validation")
    assert body["errors"] == [
        {"field": "query.limit", "message": "Input should be greater than or equal to 1"}
    ]


def test_malformed_json_body(client: TestClient) -> None:
    response = client.post(
        "/drafts",
        content=b'{"specialty": "' + SECRET_LOOKING.encode() + b'", ',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 422, "validation")
    assert SECRET_LOOKING not in response.text


def test_unknown_route_and_method(client: TestClient) -> None:
    body = assert_problem(client.get("/nowhere"), 404, "not-found")
    assert body["instance"] == "/nowhere"
    response = client.delete("/drafts")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"


def test_http_exception_keeps_its_detail(client: TestClient) -> None:
    body = assert_problem(client.get("/legacy"), 404, "not-found")
    assert body["detail"] == "case not found"


def test_unhandled_exception_is_a_generic_500(client: TestClient) -> None:
    with capture_logs() as logs:
        response = client.get("/boom")
    body = assert_problem(response, 500, "internal")
    assert SECRET_LOOKING not in response.text
    assert "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    assert body["detail"]
    [entry] = [e for e in logs if e["event"] == "unhandled_exception"]
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is True
    assert entry["error_type"] == "RuntimeError"
    assert entry["path"] == "/boom"


def test_unhandled_exception_does_not_escape_to_the_server(app: FastAPI) -> None:
    # The default client re-raises what reaches the server; nothing does.
    response = TestClient(app).get("/boom")
    assert response.status_code == 500


def test_invalid_response_is_a_500_logged_without_content(client: TestClient) -> None:
    with capture_logs() as logs:
        response = client.get("/bad-answer")
    assert_problem(response, 500, "internal")
    assert SECRET_LOOKING not in response.text
    [entry] = [e for e in logs if e["event"] == "response_validation_failed"]
    assert SECRET_LOOKING not in repr(entry)
    assert entry["errors"] == [{"loc": "response.count", "type": "int_parsing"}]


def test_error_in_outer_middleware_is_still_a_problem() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.middleware("http")
    async def broken(request: object, call_next: object) -> None:
        raise RuntimeError(SECRET_LOOKING)

    @app.get("/ok")
    def ok() -> dict[str, str]:
        return {}

    response = TestClient(app, raise_server_exceptions=False).get("/ok")
    assert_problem(response, 500, "internal")
    assert SECRET_LOOKING not in response.text


def test_openapi_documents_problems(app: FastAPI) -> None:
    schema = TestClient(app).get("/openapi.json").json()
    responses = schema["paths"]["/drafts"]["post"]["responses"]
    ref = {"$ref": "#/components/schemas/ProblemDetail"}
    for status in ("409", "422"):
        assert responses[status]["content"] == {PROBLEM_MEDIA_TYPE: {"schema": ref}}
    # FastAPI's own 422 body is replaced where a route did not declare one.
    search_422 = schema["paths"]["/search"]["get"]["responses"]["422"]
    assert search_422["content"] == {PROBLEM_MEDIA_TYPE: {"schema": ref}}
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert "ValidationError" not in components
    assert set(components["ProblemDetail"]["required"]) == {"type", "title", "status"}
    assert "FieldError" in components
    # Generated once: a second request is served the same document.
    assert TestClient(app).get("/openapi.json").json() == schema


def test_problem_responses_rejects_success_statuses() -> None:
    with pytest.raises(ValueError, match="not an error status"):
        problem_responses(200)


def test_problem_type_and_defaults() -> None:
    assert problem_type("case-not-found") == "https://avis.health/problems/case-not-found"
    assert problem_type("about:blank") == "about:blank"
    problem = Problem(404, "case-not-found")
    assert problem.title == "Not Found"
    assert problem.to_detail("/cases/1") == ProblemDetail(
        type="https://avis.health/problems/case-not-found",
        title="Not Found",
        status=404,
        instance="/cases/1",
    )
    assert Problem(422, "validation", errors=[FieldError(field="a", message="b")]).errors == [
        FieldError(field="a", message="b")
    ]


def test_method_not_allowed_lists_every_method_of_the_path() -> None:
    app = FastAPI()
    router = APIRouter(prefix="/v1")

    @router.get("/things/{thing_id}")
    def read(thing_id: str) -> dict[str, str]:
        return {}

    @router.delete("/things/{thing_id}")
    def delete(thing_id: str) -> dict[str, str]:
        return {}

    app.include_router(router)
    install_problem_handlers(app)
    response = TestClient(app).put("/v1/things/t-1")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD"
    assert response.headers["content-type"].startswith("application/problem+json")
