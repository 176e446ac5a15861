"""The coordinator's board and the partner console in process, over a fake of the services'
APIs: each page renders in both languages, the reason of a clinical read reaches intake, lifting
a hold over a pending erasure asks for a tick first, the secret is shown once, other roles are
refused, the FHIR endpoints are listed and a disabled one enabled again, and every key the pages
use has its text."""

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avis.shared.events import Language
from avis.web import rules, texts
from avis.web.main import create_app
from avis.web.settings import Settings

CASE_ID = "0b6f1d3e-8c55-4d0e-9a43-7f3e2d1c0a99"
AT = "2026-01-01T10:00:00Z"
CASE = {
    "case_id": CASE_ID,
    "reference": "AV-2026-000001",
    "status": "assigned",
    "specialty": "haematology",
    "urgency": "routine",
    "created_at": AT,
    "updated_at": AT,
    "questions": ["further_tests"],
    "documents": [],
    "timeline": [{"id": "e1", "kind": "created", "status": "draft", "at": AT}],
}
RATIONALE = {
    "rule": "nobody_fits",
    "chosen": None,
    "candidates": [
        {"reviewer_id": "rev-onco-2", "load": 1, "capacity": 4, "excluded": "declined_before"},
        {"reviewer_id": "rev-haem-9", "load": 0, "capacity": 0, "excluded": "at_capacity"},
    ],
    "decided_at": AT,
    "decided_by": "matcher",
}
ASSIGNMENT = {
    "id": "a1",
    "case_id": CASE_ID,
    "reference": "AV-2026-000001",
    "round": 1,
    "reviewer_id": "rev-onco-2",
    "status": "declined",
    "specialty": "haematology",
    "urgency": "routine",
    "language": "en",
    "assigned_at": AT,
    "due_at": AT,
    "overdue": True,
    "decline_reason_code": "outside_expertise",
    "decline_reason": "Not my field",
    "rationale": RATIONALE | {"rule": "only_candidate", "chosen": "rev-onco-2"},
}
QUEUED = {
    "case_id": CASE_ID,
    "reference": "AV-2026-000001",
    "specialty": "haematology",
    "urgency": "routine",
    "language": "en",
    "submitted_at": AT,
    "waiting_since": AT,
    "declined_by": ["rev-onco-2"],
    "last_attempt": RATIONALE,
    "international_review": True,
}
REVIEWER = {
    "id": "rev-haem-9",
    "display_name": "Dr Haem",
    "specialties": ["haematology"],
    "languages": ["en"],
    "institution_code": "HOSP-X",
    "capacity": 0,
    "active": True,
    "load": 0,
}
TRANSLATOR = {
    "id": "tr-1",
    "display_name": "Tom Translator",
    "languages": ["fr", "en"],
    "capacity": 2,
    "active": True,
    "load": 2,
}
TRANSLATION = {
    "id": "a1-t1",
    "assignment_id": "a1",
    "case_id": CASE_ID,
    "reference": "AV-2026-000001",
    "way": "to_specialist",
    "state": "taken",
    "from_language": "fr",
    "to_language": "en",
    "translator_id": "tr-1",
    "translator_display_name": "Tom Translator",
    "queued_at": AT,
    "due_at": AT,
    "overdue": True,
}
WAITING_TRANSLATION = TRANSLATION | {
    "id": "a2-t2",
    "reference": "AV-2026-000002",
    "way": "to_patient",
    "state": "queued",
    "from_language": "en",
    "to_language": "fr",
    "translator_id": None,
    "translator_display_name": None,
    "due_at": "2026-01-05T10:00:00Z",
    "overdue": False,
}
SUBSCRIPTION = {
    "id": "sub-1",
    "partner_id": "partner-1",
    "url": "https://partner.example/hooks",
    "event_types": ["avis.case.submitted.v1"],
    "description": "",
    "enabled": True,
    "consecutive_failures": 0,
    "created_at": AT,
}
DELIVERY = {
    "id": "d1",
    "subscription_id": "sub-1",
    "case_id": CASE_ID,
    "event_type": "avis.case.submitted.v1",
    "webhook_id": "msg_1",
    "status": "dead",
    "created_at": AT,
    "replays": 0,
    "attempts": [
        {"at": AT, "outcome": "transient", "code": 503, "latency_ms": 12, "reason": "503"}
    ],
}
DOWN_ENDPOINT = {
    "institution": "130000002",
    "enabled": False,
    "consecutive_failures": 2,
    "disabled_reason": "2 failed posts in a row (last: 500 from the endpoint)",
    "disabled_at": AT,
    "waiting": 3,
}
FINE_ENDPOINT = DOWN_ENDPOINT | {
    "institution": "130000003",
    "enabled": True,
    "consecutive_failures": 0,
    "disabled_reason": None,
    "disabled_at": None,
    "waiting": 0,
}
SEEN: list[httpx.Request] = []


def page(items: list[Any]) -> dict[str, Any]:
    return {"items": items, "next_cursor": None}


ROUTES: dict[tuple[str, str], Any] = {
    ("GET", "/v1/queue"): page([QUEUED]),
    ("GET", "/v1/assignments"): page([ASSIGNMENT]),
    ("GET", "/v1/reviewers"): page([REVIEWER]),
    ("GET", "/v1/translators"): page([TRANSLATOR]),
    ("GET", "/v1/translations"): page([WAITING_TRANSLATION, TRANSLATION]),
    ("POST", f"/v1/queue/{CASE_ID}/assign"): ASSIGNMENT,
    ("GET", "/v1/cases"): page([CASE]),
    ("GET", f"/v1/cases/{CASE_ID}"): CASE,
    ("GET", f"/v1/cases/{CASE_ID}/access-log"): page(
        [
            {
                "seq": 1,
                "at": AT,
                "role": "coordinator",
                "reader": "r-1",
                "you": True,
                "action": "clinical.read",
                "outcome": "allowed",
                "status": 200,
                "purpose": "break-glass",
                "reason": "triage",
                "text": "...",
            }
        ]
    ),
    ("GET", f"/v1/cases/{CASE_ID}/clinical"): {
        "reference": "AV-2026-000001",
        "clinical_summary": "Anaemia since spring.",
        "age_years": 54,
        "questions": ["further_tests"],
    },
    ("POST", f"/v1/cases/{CASE_ID}/legal-hold/release"): CASE,
    ("GET", "/v1/subscriptions"): page([SUBSCRIPTION]),
    ("POST", "/v1/subscriptions"): SUBSCRIPTION | {"secret": "whsec_c2VjcmV0LW9uY2U="},
    ("GET", "/v1/subscriptions/sub-1"): SUBSCRIPTION,
    ("GET", "/v1/deliveries"): page([DELIVERY]),
    ("POST", "/v1/deliveries/d1/replay"): DELIVERY | {"status": "queued"},
    ("GET", "/v1/fhir-endpoints"): {"items": [DOWN_ENDPOINT, FINE_ENDPOINT]},
    ("POST", "/v1/fhir-endpoints/130000002/enable"): FINE_ENDPOINT | {"institution": "130000002"},
}


def fake_services(request: httpx.Request) -> httpx.Response:
    SEEN.append(request)
    found = ROUTES.get((request.method, request.url.path))
    if found is None:
        return httpx.Response(404, json={"type": "https://avis.health/problems/not-found"})
    return httpx.Response(200, json=found)


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        avis_env="development",
        jwt_secret="s" * 40,
        intake_url="http://intake",
        review_url="http://review",
        notify_url="http://notify",
        live_events=False,
    )
    app = create_app(settings, transport=httpx.MockTransport(fake_services))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://web",
            headers={"Accept-Language": "en"},
        ) as client,
    ):
        yield client


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(browser: httpx.AsyncClient, identity: str) -> httpx.Response:
    page = await browser.get("/signin")
    return await browser.post(
        "/signin", data={"csrf": csrf_of(page), "identity": identity}, follow_redirects=True
    )


async def test_the_coordinator_lands_on_the_board_and_sees_every_part(
    browser: httpx.AsyncClient,
) -> None:
    board = await sign_in(browser, "coordinator-1")
    assert board.url.path == "/board" and board.status_code == 200, board.text
    assert board.headers["cache-control"] == "no-store"
    for words in ("Waiting for a specialist", "Reviews by due date", "Cases by status"):
        assert words in board.text
    assert "Overdue" in board.text and "⚠" in board.text  # said in words, not colour alone
    assert "Dead letters" in board.text
    assert "a specialist abroad accepted, through a translator" in board.text
    listed = [r for r in SEEN if r.url.path == "/v1/assignments"]
    assert listed and listed[-1].url.params["brief"] == "true", "rows only: no reason read"
    # The reviews by due date are the open ones, unless all or one status is chosen.
    assert listed[-1].url.params.get_list("status") == ["accepted", "assigned"]
    for chosen, asked in (("all", []), ("declined", ["declined"]), ("nonsense", None)):
        again = await browser.get("/board", params={"assignment": chosen})
        assert again.status_code == 200, again.text
        sent = [r for r in SEEN if r.url.path == "/v1/assignments"][-1].url.params
        assert sent.get_list("status") == (["accepted", "assigned"] if asked is None else asked)
    case = await browser.get(f"/board/cases/{CASE_ID}")
    assert case.status_code == 200, case.text
    assert "already declined this case" in case.text and "at capacity" in case.text
    assert "Declined: outside their expertise." in case.text
    assert 'value="rev-haem-9"' in case.text
    # The trail says what was done and why in words, never in codes.
    assert "read the medical content" in case.text and "clinical.read" not in case.text
    assert "an exceptional read, with its reason" in case.text and "triage" in case.text
    assert "break-glass" not in case.text
    reviewers = await browser.get("/board/reviewers?specialty=haematology")
    assert (
        'Never given cases from <code class="nowrap">HOSP-X</code>' in reviewers.text
        and "Full" in reviewers.text
    )
    partners = await browser.get("/board/partners?partner_id=partner-1&subscription_id=sub-1")
    assert "https://partner.example/hooks" in partners.text and "Replay" in partners.text


async def test_the_coordinator_sees_the_translators_and_the_translations_by_due_date(
    browser: httpx.AsyncClient,
) -> None:
    await sign_in(browser, "coordinator-1")
    directory = await browser.get("/board/reviewers?language=fr")
    assert directory.status_code == 200, directory.text
    assert "Translators" in directory.text and "Tom Translator" in directory.text
    assert "2 translations of 2" in directory.text and "Full" in directory.text
    asked = [r for r in SEEN if r.url.path == "/v1/translators"]
    assert asked[-1].url.params["language"] == "fr", "the language filter applies to both"
    shown = await browser.get("/board/translations")
    assert shown.status_code == 200, shown.text
    assert 'href="/board/translations" aria-current="page"' in shown.text
    # Soonest due first, the overdue one said in words and a sign, its translator named.
    late, waiting = shown.text.index("AV-2026-000001"), shown.text.index("AV-2026-000002")
    assert late < waiting
    assert "Overdue" in shown.text and "⚠" in shown.text
    assert "Tom Translator" in shown.text and "Nobody yet" in shown.text
    assert "The case, for the specialist" in shown.text and "Français → English" in shown.text
    assert "<script>" not in shown.text
    french = await browser.get("/board/translations", headers={"Accept-Language": "fr"})
    assert "Traductions en cours" in french.text and "En retard" in french.text


async def test_the_board_assigns_and_replays_through_the_services(
    browser: httpx.AsyncClient,
) -> None:
    await sign_in(browser, "coordinator-1")
    case = await browser.get(f"/board/cases/{CASE_ID}")
    done = await browser.post(
        f"/board/cases/{CASE_ID}/assign",
        data={"csrf": csrf_of(case), "reviewer_id": "rev-haem-9"},
        follow_redirects=True,
    )
    assert "The case was given to the specialist." in done.text
    assert SEEN[-1].method == "GET"  # the page read again after the assignment
    posted = [r for r in SEEN if r.method == "POST"]
    assert posted[-1].url.path == f"/v1/queue/{CASE_ID}/assign"
    assert posted[-1].content == b'{"reviewer_id":"rev-haem-9"}'
    partners = await browser.get("/board/partners?partner_id=partner-1&subscription_id=sub-1")
    replayed = await browser.post(
        "/board/deliveries/d1/replay",
        data={"csrf": csrf_of(partners), "partner_id": "partner-1", "subscription_id": "sub-1"},
        follow_redirects=True,
    )
    assert "queued again" in replayed.text
    assert replayed.url.path == "/board/partners"


async def test_the_fhir_endpoints_are_listed_and_a_disabled_one_enabled_again(
    browser: httpx.AsyncClient,
) -> None:
    await sign_in(browser, "coordinator-1")
    shown = await browser.get("/board/fhir-endpoints")
    assert shown.status_code == 200, shown.text
    assert 'href="/board/fhir-endpoints" aria-current="page"' in shown.text
    assert "130000002" in shown.text and "130000003" in shown.text
    assert "Disabled" in shown.text and "2 failed posts in a row" in shown.text
    assert "Enabled" in shown.text and "<td>3</td>" in shown.text
    # The button only for the disabled one.
    assert shown.text.count('action="/board/fhir-endpoints/') == 1
    assert 'action="/board/fhir-endpoints/130000002/enable"' in shown.text
    assert "<script>" not in shown.text
    french = await browser.get("/board/fhir-endpoints", headers={"Accept-Language": "fr"})
    assert "Points d&#39;accès FHIR des médecins" in french.text and "Réactiver" in french.text
    enabled = await browser.post(
        "/board/fhir-endpoints/130000002/enable",
        data={"csrf": csrf_of(shown)},
        follow_redirects=True,
    )
    assert enabled.url.path == "/board/fhir-endpoints"
    assert "The endpoint is enabled again" in enabled.text
    posted = [r for r in SEEN if r.method == "POST"]
    assert posted[-1].url.path == "/v1/fhir-endpoints/130000002/enable"
    assert posted[-1].headers["authorization"].startswith("Bearer ")
    unknown = await browser.post(
        "/board/fhir-endpoints/999999999/enable",
        data={"csrf": csrf_of(enabled)},
        follow_redirects=True,
    )
    assert unknown.status_code == 200 and unknown.url.path == "/board/fhir-endpoints"
    assert "No FHIR endpoint is set for this institution." in unknown.text
    unchecked = await browser.post("/board/fhir-endpoints/130000002/enable")
    assert unchecked.status_code == 403, "the CSRF check"


async def test_a_clinical_read_asks_for_a_reason_and_passes_it(
    browser: httpx.AsyncClient,
) -> None:
    await sign_in(browser, "coordinator-1")
    case = await browser.get(f"/board/cases/{CASE_ID}")
    refused = await browser.post(
        f"/board/cases/{CASE_ID}/clinical",
        data={"csrf": csrf_of(case), "reason": "  "},
        follow_redirects=True,
    )
    assert "Please say why" in refused.text
    read = await browser.post(
        f"/board/cases/{CASE_ID}/clinical",
        data={"csrf": csrf_of(refused), "reason": "Checking the triage"},
    )
    assert read.status_code == 200 and "Anaemia since spring." in read.text
    assert SEEN[-1].headers["x-avis-reason"] == "Checking the triage"


async def test_the_case_page_lists_each_rounds_requests_expired_ones_marked(
    browser: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = {"assignment_id": "a2", "case_id": CASE_ID, "reviewer_id": "rev-haem-9"}
    requests = [
        asked
        | {"id": "q1", "state": "expired", "requested_at": AT}
        | {"expires_at": "2026-01-08T10:00:00Z", "expired_at": "2026-01-08T10:05:00Z"},
        asked
        | {"id": "q2", "state": "answered", "requested_at": "2026-01-09T10:00:00Z"}
        | {"expires_at": "2026-01-16T10:00:00Z", "answered_at": "2026-01-10T09:00:00Z"},
        asked
        | {"id": "q3", "state": "open", "requested_at": "2026-01-11T10:00:00Z"}
        | {"expires_at": "2026-01-18T10:00:00Z"},
    ]
    second = ASSIGNMENT | {"id": "a2", "round": 2, "reviewer_id": "rev-haem-9"}
    second |= {"status": "accepted", "decline_reason_code": None, "decline_reason": None}
    rounds = page([ASSIGNMENT, second | {"information_requests": requests}])
    monkeypatch.setitem(ROUTES, ("GET", "/v1/assignments"), rounds)
    await sign_in(browser, "coordinator-1")
    before = len(SEEN)
    case = await browser.get(f"/board/cases/{CASE_ID}")
    assert case.status_code == 200, case.text
    shown = case.text.split('id="requests-2"', 1)[1].split("</table>", 1)[0]
    assert 'id="requests-1"' not in case.text, "a round without requests shows no table"
    assert shown.index("8 Jan 2026, 10:00 UTC") < shown.index("16 Jan 2026, 10:00 UTC")
    assert '<strong class="overdue">' in shown and "Expired on 8 Jan 2026, 10:05 UTC" in shown
    assert "Answered on 10 Jan 2026, 09:00 UTC" in shown and "Open" in shown
    assert shown.count('class="overdue"') == 1, "only the expired request is marked"
    # Never the question: the page reads no clinical content to show the requests.
    assert not [r for r in SEEN[before:] if r.url.path.endswith("/clinical")]
    french = await browser.get(f"/board/cases/{CASE_ID}", headers={"Accept-Language": "fr"})
    assert "Demandes d&#39;informations complémentaires" in french.text
    assert "Expirée le 8 janv. 2026" in french.text and "Répondue le 10 janv. 2026" in french.text
    assert "Ouverte" in french.text


async def test_lifting_a_hold_over_a_pending_erasure_asks_for_a_tick_first(
    browser: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = CASE | {"legal_hold": True, "legal_hold_since": AT, "erasure_requested_at": AT}
    monkeypatch.setitem(ROUTES, ("GET", f"/v1/cases/{CASE_ID}"), held)
    await sign_in(browser, "coordinator-1")
    case = await browser.get(f"/board/cases/{CASE_ID}")
    assert "A legal hold stands since 1 Jan 2026, 10:00 UTC" in case.text
    assert "Lifting the hold erases it at once" in case.text and "Erase for good" not in case.text
    release = f"/board/cases/{CASE_ID}/release"
    posts = len([r for r in SEEN if r.method == "POST"])
    unticked = await browser.post(
        release, data={"csrf": csrf_of(case), "reason": "Settled"}, follow_redirects=True
    )
    assert "The hold was not lifted: tick the box" in unticked.text
    assert len([r for r in SEEN if r.method == "POST"]) == posts  # intake never asked
    ticked = await browser.post(
        release,
        data={"csrf": csrf_of(unticked), "reason": " Settled\n at last ", "confirm": "yes"},
        follow_redirects=True,
    )
    assert "The legal hold is lifted." in ticked.text
    posted = [r for r in SEEN if r.method == "POST"]
    assert posted[-1].url.path == f"/v1/cases/{CASE_ID}/legal-hold/release"
    assert posted[-1].content == b'{"reason":"Settled at last"}'


async def test_the_partner_sees_the_secret_once(browser: httpx.AsyncClient) -> None:
    console = await sign_in(browser, "partner-1")
    assert console.url.path == "/partner", console.text
    created = await browser.post(
        "/partner/subscriptions",
        data={
            "csrf": csrf_of(console),
            "url": "https://partner.example/hooks",
            "event_types": ["avis.case.submitted.v1"],
        },
    )
    assert created.status_code == 201 and "whsec_c2VjcmV0LW9uY2U=" in created.text
    again = await browser.get("/partner")
    assert "whsec_" not in again.text
    deliveries = await browser.get("/partner/subscriptions/sub-1")
    assert "Failed: can be replayed" in deliveries.text and "HTTP 503" in deliveries.text


@pytest.mark.parametrize(
    ("identity", "path"),
    [
        ("patient-1", "/board"),
        ("patient-1", "/partner"),
        ("patient-1", "/board/fhir-endpoints"),
        ("rev-cardio-1", "/board/fhir-endpoints"),
    ],
)
async def test_other_roles_are_refused(
    browser: httpx.AsyncClient, identity: str, path: str
) -> None:
    await sign_in(browser, identity)
    refused = await browser.get(path)
    assert refused.status_code == 403
    assert "You are not allowed" in refused.text


def test_every_key_of_the_board_and_console_has_its_text() -> None:
    folder = Path(texts.__file__).parent / "templates"
    used: set[str] = set()
    for template in [*folder.glob("board/*.html"), *folder.glob("partner/*.html")]:
        used |= set(
            re.findall(r"""\bt\(\s*["']([a-z_.]*[a-z_])["']\s*[),]""", template.read_text())
        )
    assert len(used) > 100
    for language in Language:
        catalogue = texts.keys(language)
        assert not sorted(k for k in used if not catalogue.get(k)), language


def test_every_action_and_purpose_of_a_trail_is_said_in_words_on_both_pages() -> None:
    for language in Language:
        catalogue = texts.keys(language)
        wanted = [f"access.action.{a}" for a in rules.TRAIL_ACTIONS]
        wanted += [
            f"{page}.purpose.{p}" for p in rules.TRAIL_PURPOSES for page in ("access", "board")
        ]
        wanted += ["access.by.physician", "role.physician"]  # the physician's reads by link
        assert not sorted(k for k in wanted if not catalogue.get(k)), language
