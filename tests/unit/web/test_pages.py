"""The pages in process, over a fake of the services' APIs: the session cookie, CSRF on every
form, the security headers, plain words for a refusal, and the idle end of a session."""

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from avis.web.main import create_app
from avis.web.settings import Settings

CASE_ID = "0b6f1d3e-8c55-4d0e-9a43-7f3e2d1c0a99"
CASE = {
    "case_id": CASE_ID,
    "reference": "AV-2026-000001",
    "status": "draft",
    "specialty": "cardiology",
    "urgency": "routine",
    "created_at": "2026-01-01T10:00:00Z",
    "updated_at": "2026-01-01T10:00:00Z",
    "questions": ["further_tests"],
    "documents": [],
    "timeline": [{"id": "e1", "kind": "created", "status": "draft", "at": "2026-01-01T10:00:00Z"}],
}


def fake_services(request: httpx.Request) -> httpx.Response:
    """Intake as the pages see it: one draft case, and a refused upload."""
    assert request.headers["authorization"].startswith("Bearer ")
    if request.url.path.endswith("/documents"):
        problem = {"type": "https://avis.health/problems/unsupported-document-type", "status": 415}
        return httpx.Response(
            415, content=json.dumps(problem), headers={"content-type": "application/problem+json"}
        )
    if request.url.path == f"/v1/cases/{CASE_ID}":
        return httpx.Response(200, json=CASE)
    if request.url.path == "/v1/cases":
        return httpx.Response(200, json={"items": [CASE], "next_cursor": None})
    return httpx.Response(404, json={"type": "https://avis.health/problems/not-found"})


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(avis_env="development", jwt_secret="s" * 40, intake_url="http://intake")
    app = create_app(settings, transport=httpx.MockTransport(fake_services))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as client,
    ):
        yield client


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(browser: httpx.AsyncClient) -> str:
    page = await browser.get("/signin")
    done = await browser.post("/signin", data={"csrf": csrf_of(page), "identity": "patient-1"})
    assert done.status_code == 303 and done.headers["location"] == "/cases"
    return csrf_of(await browser.get("/cases"))


async def test_the_cookie_holds_only_a_signed_id_and_sign_in_renews_it(
    browser: httpx.AsyncClient,
) -> None:
    page = await browser.get("/signin")
    before = page.headers["set-cookie"]
    assert "HttpOnly" in before and "SameSite=Lax" in before and "Path=/" in before
    value = before.split(";")[0].split("=", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[0-9a-f]{64}", value)
    done = await browser.post("/signin", data={"csrf": csrf_of(page), "identity": "patient-1"})
    assert done.headers["set-cookie"].split(";")[0] != before.split(";")[0]


async def test_a_form_without_the_sessions_csrf_token_is_refused(
    browser: httpx.AsyncClient,
) -> None:
    csrf = await sign_in(browser)
    for path in ("/signout", "/language", f"/cases/{CASE_ID}/withdraw", "/cases/new/specialty"):
        refused = await browser.post(path, data={"language": "en", "confirm": "yes"})
        assert refused.status_code == 403, path
        assert "text/html" in refused.headers["content-type"]
        assert "problem" not in refused.text
        forged = await browser.post(path, data={"csrf": csrf + "x", "language": "en"})
        assert forged.status_code == 403, path
    assert (await browser.get("/cases")).status_code == 200  # still signed in


async def test_every_page_is_no_store_under_a_strict_policy(browser: httpx.AsyncClient) -> None:
    await sign_in(browser)
    for path in ("/signin", "/cases", f"/cases/{CASE_ID}", "/cases/new", "/no-such-page"):
        page = await browser.get(path)
        assert page.headers["cache-control"] == "no-store", path
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert "<script>" not in page.text and " on" + "click=" not in page.text
    script = await browser.get("/static/htmx.min.js")
    assert script.status_code == 200 and len(script.content) < 100 * 1024


async def test_a_refused_file_is_said_in_plain_words(browser: httpx.AsyncClient) -> None:
    csrf = await sign_in(browser)
    sent = await browser.post(
        f"/cases/{CASE_ID}/documents",
        data={"csrf": csrf, "kind": "other"},
        files={"files": ("notes.exe", b"MZ\x90\x00", "application/octet-stream")},
    )
    assert sent.status_code == 303
    page = await browser.get(sent.headers["location"])
    assert "This kind of file is not accepted" in page.text or "type de fichier" in page.text
    assert "unsupported-document-type" not in page.text


async def test_an_error_never_shows_a_problem_body(browser: httpx.AsyncClient) -> None:
    await sign_in(browser)
    missing = await browser.get("/cases/not-a-case-id")
    assert missing.status_code in (404, 422)
    assert missing.headers["content-type"].startswith("text/html")
    assert "avis.health/problems" not in missing.text and "Traceback" not in missing.text
    probe = await browser.get("/healthz")
    assert probe.json()["status"] == "ok" and "set-cookie" not in probe.headers


async def test_an_invalid_id_names_no_page_even_before_sign_in(
    browser: httpx.AsyncClient,
) -> None:
    """Nobody signed in: a page's valid path asks for a sign-in; an invalid id is 404 at once."""
    for path in (f"/cases/{CASE_ID}", "/translations/t-1", "/board/cases/" + CASE_ID):
        asked = await browser.get(path)
        assert (asked.status_code, asked.headers["location"]) == (303, "/signin"), path
    for path in ("/cases/not-a-case-id", "/translations/a%20b", "/board/cases/x"):
        missing = await browser.get(path)
        assert missing.status_code == 404, path
        assert "sign in" not in missing.headers.get("location", ""), path


async def test_the_language_follows_the_browser_then_the_persons_choice(
    browser: httpx.AsyncClient,
) -> None:
    page = await browser.get("/signin", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert '<html lang="en">' in page.text
    chosen = await browser.post(
        "/language", data={"csrf": csrf_of(page), "language": "fr", "back": "/signin"}
    )
    assert chosen.headers["location"] == "/signin"
    page = await browser.get("/signin", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert '<html lang="fr">' in page.text


async def test_a_session_ends_after_its_idle_time() -> None:
    clock = [1000.0]
    settings = Settings(avis_env="development", jwt_secret="s" * 40, session_idle_minutes=1)
    app = create_app(settings, transport=httpx.MockTransport(fake_services))
    app.state.web.sessions._clock = lambda: clock[0]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as client,
    ):
        await sign_in(client)
        clock[0] += 59
        assert (await client.get("/cases")).status_code == 200
        clock[0] += 30
        # A page's live update does not count as use...
        assert (
            await client.get(f"/cases/{CASE_ID}/timeline", headers={"HX-Request": "true"})
        ).status_code == 200
        clock[0] += 31
        # ...so the session has now been idle for a minute.
        ended = await client.get("/cases")
        assert ended.status_code == 303 and ended.headers["location"] == "/signin"


async def test_the_patient_reads_and_answers_a_request_for_more_information() -> None:
    """A case awaiting information shows the specialist's question, takes records, and sends
    the answer to intake; an empty answer is refused in plain words."""
    answers: list[dict[str, str]] = []
    waiting = CASE | {"status": "awaiting_information"}
    request_id = "5d0c7f0e-0001-q01"

    def services(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == f"/v1/cases/{CASE_ID}":
            return httpx.Response(200, json=waiting)
        if path == f"/v1/cases/{CASE_ID}/clinical":
            asked = {"id": request_id, "state": "open", "question": "Your 2024 operative report?"}
            asked |= {"requested_at": "2026-01-02T10:00:00Z", "expires_at": "2026-01-16T10:00:00Z"}
            return httpx.Response(200, json={"information_requests": [asked]})
        if path == f"/v1/cases/{CASE_ID}/information-requests/{request_id}/answer":
            answers.append(json.loads(request.content))
            return httpx.Response(200, json=waiting)
        return httpx.Response(404, json={"type": "https://avis.health/problems/not-found"})

    settings = Settings(avis_env="development", jwt_secret="s" * 40, intake_url="http://intake")
    app = create_app(settings, transport=httpx.MockTransport(services))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as web,
    ):
        await sign_in(web)
        page = await web.get(f"/cases/{CASE_ID}")
        assert "Your 2024 operative report?" in page.text and "2026-01-16" in page.text
        assert f"/cases/{CASE_ID}/documents" in page.text, "records may be added meanwhile"
        answer = f"/cases/{CASE_ID}/requests/{request_id}/answer"
        empty = await web.post(answer, data={"csrf": csrf_of(page), "text": " "})
        assert "Écrivez votre réponse" in (await web.get(empty.headers["location"])).text
        sent = await web.post(answer, data={"csrf": csrf_of(page), "text": "Attached above."})
        assert sent.status_code == 303
        assert "Votre réponse a été envoyée" in (await web.get(sent.headers["location"])).text
    assert answers == [{"text": "Attached above."}]
