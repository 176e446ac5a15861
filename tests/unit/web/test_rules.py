"""Web's pure decisions: plain words for a refusal, the page's language, the CSRF check, idle
sessions, safe redirects, what a case's page offers, which step of a request comes next, and how a
coordinator confirms an erasure."""

from datetime import UTC, date, datetime

import pytest

from avis.shared.events import Language, Question, Specialty
from avis.web import rules
from avis.web.models import CaseView, Draft
from avis.web.texts import Texts


@pytest.mark.parametrize(
    ("status", "problem_type", "key"),
    [
        (413, "https://avis.health/problems/document-too-large", "error.document_too_large"),
        (413, "https://avis.health/problems/request-too-large", "error.document_too_large"),
        (
            415,
            "https://avis.health/problems/unsupported-document-type",
            "error.unsupported_document_type",
        ),
        (400, "https://avis.health/problems/empty-document", "error.empty_document"),
        (409, "https://avis.health/problems/too-many-documents", "error.too_many_documents"),
        (409, "https://avis.health/problems/case-not-draft", "error.case_not_draft"),
        (404, "https://avis.health/problems/case-not-found", "error.not_found"),
        (409, "https://avis.health/problems/something-new", "error.conflict"),
        (415, None, "error.unsupported_document_type"),
        (503, "https://avis.health/problems/store-unavailable", "error.unavailable"),
        (500, "https://avis.health/problems/internal", "error.unexpected"),
        (418, "about:blank", "error.unexpected"),
    ],
)
def test_a_refusal_gets_plain_words_from_its_type_then_its_status(
    status: int, problem_type: str | None, key: str
) -> None:
    assert rules.problem_message(status, problem_type) == key


@pytest.mark.parametrize(
    ("chosen", "header", "expected"),
    [
        ("en", "fr-FR,fr;q=0.9", Language.EN),
        (None, "en-GB,en;q=0.9,fr;q=0.8", Language.EN),
        (None, "de-DE,de;q=0.9,fr;q=0.5,en;q=0.4", Language.FR),
        (None, "en;q=0.2, fr;q=0.8", Language.FR),
        (None, "fr, en", Language.FR),
        (None, "de, es", rules.DEFAULT_LANGUAGE),
        (None, "en;q=0, fr;q=0", rules.DEFAULT_LANGUAGE),
        (None, "en;q=abc", rules.DEFAULT_LANGUAGE),
        (None, None, rules.DEFAULT_LANGUAGE),
        ("xx", "en", Language.EN),
    ],
)
def test_the_persons_choice_wins_then_the_browsers_preference(
    chosen: str | None, header: str | None, expected: Language
) -> None:
    assert rules.choose_language(chosen, header) == expected


def test_a_form_holds_only_with_this_sessions_csrf_token() -> None:
    assert rules.csrf_valid("token-a", "token-a")
    assert not rules.csrf_valid("token-a", "token-b")
    assert not rules.csrf_valid("token-a", "")
    assert not rules.csrf_valid("token-a", None)
    assert not rules.csrf_valid("", "")


def test_a_session_ends_after_its_idle_time() -> None:
    assert not rules.idle_expired(100.0, 100.0 + 1799, 1800)
    assert rules.idle_expired(100.0, 100.0 + 1800, 1800)


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("/cases/123", "/cases/123"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/cases?x=1", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_a_redirect_stays_on_this_site(candidate: str | None, expected: str) -> None:
    assert rules.local_path(candidate) == expected


def test_what_a_case_page_offers_follows_its_status() -> None:
    draft = rules.case_actions("draft", 0)
    assert draft.upload and not draft.submit and draft.withdraw and not draft.live
    assert rules.case_actions("draft", 2).submit
    submitted = rules.case_actions("submitted", 2)
    assert not submitted.upload and not submitted.submit and submitted.withdraw
    assert submitted.live and not submitted.report
    ready = rules.case_actions("report_ready", 2)
    assert ready.report and not ready.withdraw and not ready.live
    withdrawn = rules.case_actions("withdrawn", 2)
    assert not withdrawn.withdraw and not withdrawn.live and not withdrawn.report
    waiting = rules.case_actions("awaiting_information", 2)
    assert waiting.upload and not waiting.submit and waiting.withdraw and waiting.live
    assert waiting.answer and not submitted.answer and not ready.answer
    assert not rules.case_actions("awaiting_information", 2, erased=True).answer


def test_a_request_resumes_at_its_first_missing_step() -> None:
    draft = Draft(key="k")
    assert rules.first_missing_step(draft) == "specialty"
    draft = draft.model_copy(update={"specialty": Specialty.CARDIOLOGY})
    assert rules.first_missing_step(draft) == "questions"
    draft = draft.model_copy(update={"questions": [Question.FURTHER_TESTS]})
    assert rules.first_missing_step(draft) == "summary"
    draft = draft.model_copy(update={"clinical_summary": "Chest pain."})
    assert rules.first_missing_step(draft) == "people"
    draft = draft.model_copy(
        update={
            "given_name": "Ada",
            "family_name": "Martin",
            "birth_date": date(1980, 1, 2),
            "email": "ada@example.org",
        }
    )
    assert rules.first_missing_step(draft) is None


def test_a_refused_hold_or_erasure_says_what_was_wrong() -> None:
    hold = "https://avis.health/problems/legal-hold"
    assert (
        rules.reasoned_refusal(409, hold) == rules.problem_message(409, hold) == "error.legal_hold"
    )
    assert rules.reasoned_refusal(410, "https://avis.health/problems/case-erased") == (
        "error.case_erased"
    )
    assert rules.reasoned_refusal(422, "https://avis.health/problems/validation") == (
        "board.keep.reason_invalid"
    )


def test_a_refused_re_enabling_of_a_fhir_endpoint_says_what_was_wrong() -> None:
    missing = "https://avis.health/problems/not-found"
    assert rules.fhir_refusal(404, missing) == "board.fhir.unknown"
    assert rules.fhir_refusal(403, "https://avis.health/problems/forbidden") == "error.forbidden"
    assert rules.fhir_refusal(503, None) == "error.unavailable"


@pytest.mark.parametrize(
    ("typed", "confirmed"),
    [
        ("AV-2026-000001", True),
        ("  av-2026-000001 ", True),
        ("AV-2026-00000", False),
        ("AV-2026-000001x", False),
        ("", False),
    ],
)
def test_an_erasure_is_confirmed_by_the_cases_reference_typed_out(
    typed: str, confirmed: bool
) -> None:
    assert rules.erasure_confirmed(typed, "AV-2026-000001") is confirmed
    assert not rules.erasure_confirmed(typed, "")


def test_lifting_a_hold_over_a_pending_erasure_is_confirmed_first() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    case = CaseView(
        case_id="c",
        reference="AV-1",
        status="submitted",
        specialty="haematology",
        urgency="routine",
        created_at=at,
        updated_at=at,
        legal_hold=True,
    )
    assert rules.release_confirmed(case, ticked=False)  # nothing waits to be erased
    asked = case.model_copy(update={"erasure_requested_at": at})
    assert not rules.release_confirmed(asked, ticked=False)
    assert rules.release_confirmed(asked, ticked=True)
    assert rules.release_confirmed(asked.model_copy(update={"erased_at": at}), ticked=False)


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("Europe/Paris", "Europe/Paris"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        ("Etc/GMT+5", "Etc/GMT+5"),
        (None, "UTC"),
        ("", "UTC"),
        ("Mars/Olympus_Mons", "UTC"),  # shaped as a zone, but none
        ("../../etc/passwd", "UTC"),
        ("/usr/share/zoneinfo/UTC", "UTC"),
        ("Europe/Paris\x00", "UTC"),
        ("A" * 65, "UTC"),
    ],
)
def test_the_pages_write_times_in_the_browsers_zone_when_it_is_one(
    cookie: str | None, expected: str
) -> None:
    assert str(rules.zone_of(cookie)) == expected


def test_a_time_says_in_which_zone_it_is_written() -> None:
    moment = datetime(2026, 12, 4, 16, 30, tzinfo=UTC)
    paris = rules.zone_of("Europe/Paris")
    assert Texts(Language.FR).when(moment) == "4 déc. 2026, 16:30 TU"
    assert Texts(Language.FR, paris).when(moment) == "4 déc. 2026, 17:30 +0100"
    assert Texts(Language.EN, paris).when(moment.replace(month=7)) == "4 Jul 2026, 18:30 +0200"
    assert Texts(Language.EN, rules.zone_of("America/New_York")).when(moment) == (
        "4 Dec 2026, 11:30 EST"
    )


def test_the_board_lists_the_open_rounds_unless_all_or_one_status_is_chosen() -> None:
    assert rules.assignments_listed(None) == ["accepted", "assigned"]
    assert rules.assignments_listed("all") is None
    assert rules.assignments_listed("declined") == ["declined"]
