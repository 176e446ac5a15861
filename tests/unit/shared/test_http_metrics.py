"""HTTP metrics: one series per route template, method and status, never per raw path."""

from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from avis.shared.observability import HttpMetrics


def _count(service: str, route: str, status: str) -> float:
    labels = {"service": service, "method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("avis_http_requests_total", labels) or 0.0


def test_requests_are_counted_by_route_template_and_status() -> None:
    app = FastAPI()

    @app.get("/cases/{case_id}")
    async def case(case_id: str) -> dict[str, str]:
        if case_id == "missing":
            raise HTTPException(404)
        return {"id": case_id}

    app.add_middleware(HttpMetrics, service="unit-http")
    client = TestClient(app)
    before = _count("unit-http", "/cases/{case_id}", "200")
    client.get("/cases/c-1")
    client.get("/cases/c-2")
    client.get("/cases/missing")
    client.get("/nowhere")
    assert _count("unit-http", "/cases/{case_id}", "200") == before + 2
    assert _count("unit-http", "/cases/{case_id}", "404") >= 1
    assert _count("unit-http", "unmatched", "404") >= 1
    seconds = REGISTRY.get_sample_value(
        "avis_http_request_seconds_count",
        {"service": "unit-http", "method": "GET", "route": "/cases/{case_id}"},
    )
    assert seconds is not None and seconds >= 3
