"""The write rate limit per caller, and answers kept out of caches: the policy alone, through a
small app, and in the four services' apps as the runtime builds them."""

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from avis.intake.main import create_app as intake_app
from avis.intake.settings import Settings as IntakeSettings
from avis.notify.main import create_app as notify_app
from avis.notify.settings import Settings as NotifySettings
from avis.reports.main import create_app as reports_app
from avis.reports.settings import Settings as ReportsSettings
from avis.review.main import create_app as review_app
from avis.review.settings import Settings as ReviewSettings
from avis.shared.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from avis.shared.ratelimit import WriteLimits, limit_writes
from avis.shared.sealing import generate_key
from avis.shared.security import TokenVerifier, mint_token
from avis.shared.settings import CommonSettings

SECRET = "rate-limit-test-" + secrets.token_urlsafe(32)  # not committed: made per run
SETTINGS = CommonSettings(avis_env="development", jwt_secret=SECRET)  # type: ignore[arg-type]


# --- the policy -------------------------------------------------------------------------------


def test_a_caller_may_write_up_to_the_limit_then_waits() -> None:
    limits = WriteLimits("3/minute")
    assert [limits.hit("sub:a") for _ in range(3)] == [None, None, None]
    retry = limits.hit("sub:a")
    assert retry is not None
    assert 1 <= retry <= 60


def test_callers_are_counted_apart() -> None:
    limits = WriteLimits("1/minute")
    assert limits.hit("sub:a") is None
    assert limits.hit("sub:a") is not None
    assert limits.hit("sub:b") is None
    assert limits.hit("addr:127.0.0.1") is None


def test_every_rate_holds_and_a_refused_write_is_not_counted() -> None:
    limits = WriteLimits("2/second;3/hour")
    assert limits.hit("c") is None
    assert limits.hit("c") is None
    short = limits.hit("c")  # the per-second rate refuses: a second at most
    assert short == 1
    assert limits.hit("c") is not None
    assert limits.text == "2 per 1 second; 3 per 1 hour"


def test_the_longest_wait_is_told() -> None:
    limits = WriteLimits("1/second;1/hour")
    assert limits.hit("c") is None
    retry = limits.hit("c")
    assert retry is not None
    assert retry > 3000  # the hour's window, not the second's


@pytest.mark.parametrize("rates", ["lots", "60 per fortnight", ""])
def test_a_rate_that_does_not_read_is_refused_at_start(rates: str) -> None:
    with pytest.raises(ValueError, match="AVIS_RATE_LIMIT_WRITES"):
        CommonSettings(rate_limit_writes=rates)


# --- through an app -------------------------------------------------------------------------


def small_app(rates: str) -> FastAPI:
    """One write and one read, behind the limit."""
    app = FastAPI()
    install_problem_handlers(app)
    limit_writes(app, WriteLimits(rates), TokenVerifier.from_settings(SETTINGS))

    @app.post("/v1/things")
    async def write() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/v1/things")
    async def read() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def bearer(sub: str) -> dict[str, str]:
    """The Authorization header of a patient `sub`."""
    return {"Authorization": f"Bearer {mint_token(SETTINGS, sub, 'patient')}"}


async def test_the_429_is_a_problem_with_retry_after_and_reads_go_on() -> None:
    transport = httpx.ASGITransport(app=small_app("2/minute"))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(2):
            assert (await client.post("/v1/things", headers=bearer("p-1"))).status_code == 200
        refused = await client.post("/v1/things", headers=bearer("p-1"))
        assert refused.status_code == 429
        assert refused.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        body = refused.json()
        assert body["type"].endswith("/too-many-requests")
        assert body["status"] == 429
        assert "2 per 1 minute" in body["detail"]
        assert (await client.get("/v1/things", headers=bearer("p-1"))).status_code == 200
        assert (await client.post("/v1/things", headers=bearer("p-2"))).status_code == 200


async def test_without_a_valid_token_the_address_is_the_caller() -> None:
    transport = httpx.ASGITransport(app=small_app("2/minute"), client=("192.0.2.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        forged = {"Authorization": "Bearer " + mint_token(SETTINGS, "p-1", "patient") + "x"}
        assert (await client.post("/v1/things")).status_code == 200
        assert (await client.post("/v1/things", headers=forged)).status_code == 200
        assert (await client.post("/v1/things")).status_code == 429
        # a valid token is counted as its subject, not as the address
        assert (await client.post("/v1/things", headers=bearer("p-1"))).status_code == 200


def test_openapi_declares_429_on_writes_only() -> None:
    schema = small_app("2/minute").openapi()
    post = schema["paths"]["/v1/things"]["post"]["responses"]
    assert "429" in post
    assert "Retry-After" in post["429"]["headers"]
    assert list(post["429"]["content"]) == [PROBLEM_MEDIA_TYPE]
    assert "429" not in schema["paths"]["/v1/things"]["get"]["responses"]


# --- the four services ------------------------------------------------------------------------

SERVICES: dict[str, tuple[Callable[[Any], FastAPI], type[CommonSettings], str]] = {
    "intake": (intake_app, IntakeSettings, "/v1/cases"),
    "review": (review_app, ReviewSettings, "/v1/assignments"),
    "reports": (reports_app, ReportsSettings, "/v1/reports/0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
    "notify": (notify_app, NotifySettings, "/v1/subscriptions"),
}


def service_app(service: str, **overrides: Any) -> FastAPI:
    """A service's app called in process; its lifespan never runs, so nothing connects."""
    make, settings_class, _ = SERVICES[service]
    values: dict[str, Any] = {
        "avis_env": "development",
        "jwt_secret": SECRET,
        "sealing_keys": f"k1:{generate_key()}",
        "log_format": "json",
        # A key service named, never reached: nothing connects here.
        "kms_url": "kmip://127.0.0.1:5696",
        "kms_ca_file": "ca.pem",
        "kms_cert_file": "service.pem",
        "kms_key_file": "service.key",
    }
    return make(settings_class(**(values | overrides)))


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_service_keeps_its_answers_out_of_caches_and_limits_writes(
    service: str,
) -> None:
    path = SERVICES[service][2]
    app = service_app(service, rate_limit_writes="2/minute")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        read = await client.get(path)
        assert read.status_code == 401
        assert read.headers["cache-control"] == "no-store"
        for _ in range(2):
            assert (await client.post(path, json={})).status_code != 429
        refused = await client.post(path, json={})
        assert refused.status_code == 429
        assert refused.headers["cache-control"] == "no-store"
        assert int(refused.headers["retry-after"]) >= 1
    writes = [
        (method, route)
        for route, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if method in ("post", "put", "patch", "delete")
    ]
    assert writes or service == "reports"  # reports takes no writes
    for method, route in writes:
        assert "429" in app.openapi()["paths"][route][method]["responses"], (method, route)


@pytest.mark.parametrize("service", list(SERVICES))
def test_production_service_with_the_development_secret_does_not_start(service: str) -> None:
    with pytest.raises(ValueError, match="AVIS_JWT_SECRET"):
        service_app(service, avis_env="production", kafka_password="its-kafka-password")


@pytest.mark.parametrize("service", list(SERVICES))
def test_production_service_without_a_key_service_does_not_start(service: str) -> None:
    with pytest.raises(ValueError, match="AVIS_KMS_URL is empty"):
        service_app(service, avis_env="production", jwt_secret="", kafka_password="k", kms_url="")


@pytest.mark.parametrize("service", list(SERVICES))
def test_production_service_without_its_kafka_identity_does_not_start(service: str) -> None:
    with pytest.raises(ValueError, match=f"AVIS_{service.upper()}_KAFKA_PASSWORD is not set"):
        service_app(service, avis_env="production", jwt_secret="", kafka_password="")
