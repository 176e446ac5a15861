"""Every bad input of the issue gets a clear 4xx problem, and nothing is half written: the store
is checked to hold exactly what it held before."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from tests.support.basics import JWT_SECRET, eventually, unique
from tests.support.intake import TEST_DOCUMENT_LIMIT, Intake
from tests.support.problems import assert_problem
from tests.support.samples import birth, case_body, consent_body, pdf, png, upload

pytestmark = pytest.mark.infra


def fields(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors") or []}


# Fields events from other services may change once a case is submitted: the topics are shared,
# and a review service under test elsewhere may assign one of its reviewers to our cases.
REVIEW_FIELDS = (
    "status",
    "timeline",
    "reviewer_id",
    "assignment_id",
    "assignment_at",
    "updated_at",
)


async def snapshot(intake: Intake, case_id: str) -> tuple[Any, ...]:
    """Everything intake holds about a case, once its outbox is published."""
    await eventually(lambda: intake.store.cases.find_one({"_id": case_id, "outbox_pending": 0}))
    case = await intake.store.cases.find_one({"_id": case_id})
    assert case is not None
    if case["status"] not in ("draft", "withdrawn"):
        case = {k: v for k, v in case.items() if k not in REVIEW_FIELDS}
    documents = await intake.store.documents.find({"case_id": case_id}).to_list()
    blobs = await intake.store.chunks.find({"case_id": case_id}).to_list()
    return case, documents, [b["_id"] for b in blobs]


async def draft(intake: Intake, patient: httpx.AsyncClient, records: int = 0) -> str:
    created = await patient.post("/v1/cases", json=case_body())
    assert created.status_code == 201, created.text
    case_id: str = created.json()["case_id"]
    for _ in range(records):
        stored = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
        assert stored.status_code == 201, stored.text
    return case_id


async def cases_of(intake: Intake, sub: str) -> int:
    return await intake.store.cases.count_documents({"created_by.sub": sub})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"specialty": "astrology"}, "body.specialty"),
        ({"urgency": "yesterday"}, "body.urgency"),
        ({"questions": []}, "body.questions"),
        ({"questions": ["what_is_life"]}, "body.questions.0"),
        ({"clinical_summary": "   "}, "body.clinical_summary"),
        ({"patient": {**case_body()["patient"], "email": "not-an-email"}}, "body.patient.email"),
        (
            {"patient": {**case_body()["patient"], "preferred_language": "de"}},
            "body.patient.preferred_language",
        ),
        (
            {"patient": {**case_body()["patient"], "birth_date": birth(-1)}},
            "body.patient.birth_date",
        ),
        ({"partner_reference": "INS-1"}, "body.partner_reference"),
        ({"unexpected": True}, "body.unexpected"),
    ],
)
async def test_bad_draft_is_refused_and_nothing_is_stored(
    intake: Intake, change: dict[str, Any], field: str
) -> None:
    patient = intake.client()
    response = await patient.post(
        "/v1/cases", json=case_body(**change), headers={"Idempotency-Key": unique("k")}
    )
    body = assert_problem(response, 422)
    assert field in fields(body)
    # Every message is words: a regular expression is no reason a person can act on.
    assert all("should match pattern" not in e["message"] for e in body["errors"]), body
    assert await cases_of(intake, patient.sub) == 0  # type: ignore[attr-defined]
    assert await intake.store.idempotency.count_documents({"case_id": {"$exists": True}}) == (
        await intake.store.idempotency.count_documents({})
    )


async def test_validation_errors_do_not_echo_what_was_sent(intake: Intake) -> None:
    patient = intake.client()
    secret = "Éloïse-private-summary"
    body = case_body(clinical_summary="\x00" + secret, specialty=secret)
    response = await patient.post("/v1/cases", json=body)
    assert_problem(response, 422)
    assert secret not in response.text


@pytest.mark.parametrize(
    ("submission", "status", "slug", "field"),
    [
        ({}, 422, "validation", "body.consent"),
        (consent_body("share_with_partner"), 422, "consent-required", "body.consent.scopes"),
        (
            consent_body(accepted_at=datetime.now(UTC) + timedelta(days=1)),
            422,
            "validation",
            "body.consent.accepted_at",
        ),
        (
            {"consent": {"text_version": "v1", "scopes": ["review"]}},
            422,
            "validation",
            "body.consent.accepted_at",
        ),
    ],
)
async def test_submit_without_valid_consent_changes_nothing(
    intake: Intake, submission: dict[str, Any], status: int, slug: str, field: str
) -> None:
    patient = intake.client()
    case_id = await draft(intake, patient, records=1)
    before = await snapshot(intake, case_id)
    body = assert_problem(
        await patient.post(f"/v1/cases/{case_id}/submit", json=submission), status, slug
    )
    assert field in fields(body)
    assert await snapshot(intake, case_id) == before


async def test_submit_without_records_is_refused(intake: Intake) -> None:
    patient = intake.client()
    case_id = await draft(intake, patient)
    before = await snapshot(intake, case_id)
    response = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
    assert_problem(response, 409, "no-documents")
    after = await snapshot(intake, case_id)
    assert after == before
    assert after[0]["status"] == "draft" and after[0]["outbox"] == []


@pytest.mark.parametrize(
    ("kwargs", "status", "slug"),
    [
        (upload(b"PK\x03\x04zipped", filename="a.zip"), 415, "unsupported-document-type"),
        (upload(b"GIF89a\x01\x00\x01\x00", filename="a.gif"), 415, "unsupported-document-type"),
        (upload(b"\xff\xfe\x00binary\x00", filename="a.bin"), 415, "unsupported-document-type"),
        (
            upload(pdf(), filename="a.png", content_type="image/png"),
            415,
            "unsupported-document-type",
        ),
        (upload(png(), filename="a.pdf", content_type="application/pdf"), 415, None),
        (upload(pdf(), filename="a.pdf", content_type="application/zip"), 415, None),
        (upload(b"", filename="empty.pdf"), 422, "empty-document"),
        (upload(b"%PDF-" + b"0" * TEST_DOCUMENT_LIMIT, filename="big.pdf"), 413, None),
        (
            upload(b"%PDF-" + b"0" * (TEST_DOCUMENT_LIMIT + 200 * 1024), filename="huge.pdf"),
            413,
            "request-too-large",
        ),
        (upload(pdf(), filename="../../etc/passwd.pdf"), 422, "invalid-filename"),
        (upload(pdf(), filename="scans/report.pdf"), 422, "invalid-filename"),
        (upload(pdf(), filename="..\\report.pdf"), 422, "invalid-filename"),
        (upload(pdf(), filename="..pdf"), 422, "invalid-filename"),
        (upload(pdf(), kind="selfie"), 422, "validation"),
    ],
    ids=[
        "zip",
        "gif",
        "binary",
        "pdf-declared-png",
        "png-declared-pdf",
        "declared-zip",
        "empty",
        "over-limit",
        "far-over-limit",
        "path-traversal",
        "path",
        "windows-parent",
        "dot-dot",
        "unknown-kind",
    ],
)
async def test_bad_record_is_refused_and_nothing_is_stored(
    intake: Intake, kwargs: dict[str, Any], status: int, slug: str | None
) -> None:
    patient = intake.client()
    case_id = await draft(intake, patient, records=1)
    before = await snapshot(intake, case_id)
    response = await patient.post(f"/v1/cases/{case_id}/documents", **kwargs)
    assert_problem(response, status, slug)
    assert await snapshot(intake, case_id) == before


async def test_a_windows_path_in_the_file_name_is_not_kept(intake: Intake) -> None:
    # The multipart parser itself cuts a drive-letter path down to its last part, so what
    # reaches intake is a bare name: the path is never kept.
    patient = intake.client()
    case_id = await draft(intake, patient)
    response = await patient.post(
        f"/v1/cases/{case_id}/documents", **upload(pdf(), filename="C:\\Users\\me\\report.pdf")
    )
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "report.pdf"


async def test_oversize_json_body_is_refused(intake: Intake) -> None:
    patient = intake.client()
    response = await patient.post(
        "/v1/cases", json=case_body(clinical_summary="x" * (intake.settings.max_json_bytes + 1))
    )
    assert_problem(response, 413, "request-too-large")
    assert await cases_of(intake, patient.sub) == 0  # type: ignore[attr-defined]


def forged(claims: dict[str, Any], key: str = "another-secret-" + "y" * 40) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def claims(**overrides: Any) -> dict[str, Any]:
    now, day = int(time.time()), 86400  # a day: parametrized tokens are made at collection
    return {"sub": "p", "role": "patient", "aud": "avis", "iat": now, "exp": now + day} | overrides


@pytest.mark.parametrize(
    "token",
    [
        forged(claims()),
        jwt.encode(claims(exp=int(time.time()) - 3600), JWT_SECRET, algorithm="HS256"),
        jwt.encode(claims(aud="elsewhere"), JWT_SECRET, algorithm="HS256"),
        jwt.encode(claims(), None, algorithm="none"),
        "not-a-jwt",
    ],
    ids=["forged", "expired", "other-audience", "alg-none", "garbage"],
)
async def test_bad_token_is_refused(intake: Intake, token: str) -> None:
    client = intake.anonymous()
    headers = {"Authorization": f"Bearer {token}"}
    before = await intake.store.cases.count_documents({})
    body = assert_problem(await client.post("/v1/cases", json=case_body(), headers=headers), 401)
    assert (
        "invalid_token"
        in (await client.get("/v1/cases", headers=headers)).headers["www-authenticate"]
    )
    assert body["type"].endswith("/unauthorized")
    assert await intake.store.cases.count_documents({}) == before


async def test_missing_token_is_refused(intake: Intake) -> None:
    response = await intake.anonymous().get("/v1/cases")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_another_patients_case_does_not_exist_for_you(intake: Intake) -> None:
    owner = intake.client()
    case_id = await draft(intake, owner, records=1)
    document_id = (await owner.get(f"/v1/cases/{case_id}")).json()["documents"][0]["document_id"]
    before = await snapshot(intake, case_id)
    missing = "01a21000-0000-7000-8000-000000000000"
    reads = [("GET", "", {}), ("GET", "/clinical", {}), ("GET", f"/documents/{document_id}", {})]
    writes = [
        ("POST", "/documents", upload(pdf())),
        ("DELETE", f"/documents/{document_id}", {}),
        ("POST", "/submit", {"json": consent_body()}),
        ("POST", "/withdraw", {}),
    ]
    attempts = [(intake.client(), op) for op in reads + writes]
    attempts += [(intake.client(role="partner"), op) for op in reads + writes]
    attempts += [(intake.client(role="reviewer"), op) for op in reads]  # not assigned to it
    for caller, (method, path, kwargs) in attempts:
        theirs = await caller.request(method, f"/v1/cases/{case_id}{path}", **kwargs)
        nobody = await caller.request(method, f"/v1/cases/{missing}{path}", **kwargs)
        shown = assert_problem(theirs, 404, "case-not-found")
        absent = assert_problem(nobody, 404, "case-not-found")
        assert shown["title"] == absent["title"], "another's case and no case look alike"
        assert shown["detail"] == absent["detail"].replace(missing, case_id)
    assert await snapshot(intake, case_id) == before


async def test_roles_that_may_never_do_something_get_403(intake: Intake) -> None:
    owner = intake.client()
    case_id = await draft(intake, owner, records=1)
    before = await snapshot(intake, case_id)
    reviewer = intake.client(role="reviewer")
    coordinator = intake.client(role="coordinator")
    service = intake.client(role="service")
    assert_problem(await reviewer.post("/v1/cases", json=case_body()), 403, "forbidden")
    assert_problem(await coordinator.post(f"/v1/cases/{case_id}/withdraw"), 403, "forbidden")
    assert_problem(await reviewer.post(f"/v1/cases/{case_id}/submit", json=consent_body()), 403)
    assert_problem(await service.get(f"/v1/cases/{case_id}/clinical"), 403, "forbidden")
    seen_by_service = await service.get(f"/v1/cases/{case_id}")
    assert seen_by_service.status_code == 200
    assert seen_by_service.json()["documents"][0]["filename"] is None, "a file name can name"
    why = {"X-Avis-Reason": "quality check"}  # a coordinator's clinical read gives a reason
    assert (await coordinator.get(f"/v1/cases/{case_id}/clinical", headers=why)).status_code == 200
    assert await snapshot(intake, case_id) == before


async def test_state_conflicts(intake: Intake) -> None:
    patient = intake.client()
    case_id = await draft(intake, patient, records=1)
    document_id = (await patient.get(f"/v1/cases/{case_id}")).json()["documents"][0]["document_id"]
    assert (await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())).is_success
    submitted = await snapshot(intake, case_id)
    more = await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
    assert_problem(more, 409, "case-not-draft")
    assert_problem(await patient.delete(f"/v1/cases/{case_id}/documents/{document_id}"), 409)
    assert await snapshot(intake, case_id) == submitted

    assert (await patient.post(f"/v1/cases/{case_id}/withdraw")).is_success
    withdrawn = await snapshot(intake, case_id)
    again = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
    assert_problem(again, 409, "case-withdrawn")
    assert await snapshot(intake, case_id) == withdrawn


async def test_malformed_ids_are_422(intake: Intake) -> None:
    patient = intake.client()
    assert_problem(await patient.get("/v1/cases/not-a-case"), 422, "validation")
    assert_problem(await patient.get("/v1/cases", params={"cursor": "'; drop"}), 422, "validation")
    assert_problem(await patient.get("/v1/cases", params={"limit": 0}), 422, "validation")
    case_id = await draft(intake, patient)
    assert_problem(await patient.get(f"/v1/cases/{case_id}/documents/xyz"), 422, "validation")


async def test_a_method_not_allowed_lists_every_allowed_one(intake: Intake) -> None:
    patient = intake.client()
    response = await patient.request("PUT", "/v1/cases")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, HEAD, POST"
    case_id = await draft(intake, patient)
    record = await patient.request("PATCH", f"/v1/cases/{case_id}/documents/{'0' * 64}")
    assert record.headers["allow"] == "DELETE, GET, HEAD"
