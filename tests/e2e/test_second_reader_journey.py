"""A second reader, end to end on loopback over the real broker and store: a coordinator sets
oncology to be read twice; the first specialist's opinion is kept in review while a second
specialist, matched like the first (never the first, never one with a conflict of interest),
reads it; the second returns comments, the first answers with a new version, the second agrees,
and only then is the report issued, naming both. Each is emailed when work waits for them (the
second reader each version to read, the first the comments to answer), in the first of their
languages, with a link to the page in web (emails read from the SMTP sink). The comments and the
specialists' addresses are in clear nowhere: not on the topics, not at rest, not in the logs;
every read of the comments is in the case's access trail. Bad input on the way gets a clear
4xx."""

import asyncio
import subprocess
from datetime import datetime
from typing import Any

import httpx
import pytest

from avis.notify.main import create_app as create_notify_app
from avis.reports.main import create_app as create_reports_app
from avis.review.main import create_app as create_review_app
from avis.shared.security import Role
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from tests.support.basics import MONGO_URL, eventually, serve, skip_history, unique
from tests.support.intake import running_intake
from tests.support.notify import body_text, mailbox, notify_settings
from tests.support.privacy import assert_absent, record_bytes, stored_bytes
from tests.support.reports import reports_settings
from tests.support.review import bearer_client, review_settings
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra

COMMENTS = "Le stade TNM retenu ne correspond pas au compte rendu du scanner de janvier."
INSTITUTION = case_body()["physician"]["institution_code"]


async def test_a_second_reader_reads_comments_and_agrees_before_the_report(
    capfd: pytest.CaptureFixture[str],
) -> None:
    review_config = review_settings()
    reports_config = reports_settings()
    notify_config = notify_settings()
    await skip_history(f"avis-{review_config.service_name}", [CASE_SUBMITTED])
    await skip_history(f"avis-{reports_config.service_name}", [CASE_SUBMITTED, REVIEW_COMPLETED])
    await skip_history(
        f"avis-{notify_config.service_name}",
        [CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
    )
    review_app = create_review_app(review_config)
    reports_app = create_reports_app(reports_config)
    notify_app = create_notify_app(notify_config)
    topics = await TopicReader(
        CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY
    ).mark()

    def client(url: str, sub: str, role: Role) -> httpx.AsyncClient:
        return bearer_client(review_config, url, sub, role)

    async with (
        running_intake() as intake,
        serve(review_app) as review_url,
        serve(reports_app) as reports_url,
        serve(notify_app),
    ):
        for app in (review_app, reports_app, notify_app):
            await eventually(lambda app=app: app.state.runtime.kafka_started, timeout=60)
        # By id: the conflicted one would be chosen first, then the first, then the second.
        conflicted, first_id, second_id = unique("0-onc"), unique("a-onc"), unique("b-onc")
        # The first writes in French first, the second in English first.
        first_email, second_email = f"{first_id}@hopital.example", f"{second_id}@chu.example"
        async with client(review_url, "coord-e2e", "coordinator") as coordinator:
            for rid, institution, languages, email in (
                (conflicted, INSTITUTION, ["fr", "en"], None),
                (first_id, None, ["fr", "en"], first_email),
                (second_id, None, ["en", "fr"], second_email),
            ):
                created = await coordinator.post(
                    "/v1/reviewers",
                    json={
                        "id": rid,
                        "display_name": f"Dr {rid}",
                        "specialties": ["oncology"],
                        "languages": languages,
                        "capacity": 5,
                        "institution_code": institution,
                    }
                    | ({"email": email} if email else {}),
                )
                assert created.status_code == 201, created.text
                assert "@" not in created.text, "the address is never shown back"
            bad = await coordinator.put(
                "/v1/second-reading-rules", json={"specialties": ["astrology"]}
            )
            assert bad.status_code == 422, bad.text
            set_ = await coordinator.put(
                "/v1/second-reading-rules", json={"specialties": ["oncology"], "urgencies": []}
            )
            assert set_.status_code == 200, set_.text
            assert set_.json()["specialties"] == ["oncology"]
            assert (await coordinator.get("/v1/second-reading-rules")).json()["updated_by"]
        async with client(review_url, first_id, "reviewer") as someone:
            refused = await someone.put("/v1/second-reading-rules", json={"specialties": []})
            assert refused.status_code == 403, refused.text

        patient = intake.client(role="patient")
        draft = await patient.post("/v1/cases", json=case_body(specialty="oncology"))
        assert draft.status_code == 201, draft.text
        case_id = draft.json()["case_id"]
        assert (await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))).is_success
        submitted = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
        assert submitted.status_code == 200, submitted.text

        async with (
            client(review_url, first_id, "reviewer") as first,
            client(review_url, second_id, "reviewer") as second,
            client(review_url, conflicted, "reviewer") as stranger,
            client(review_url, "coord-e2e", "coordinator") as coordinator,
        ):

            async def assignment() -> dict[str, Any] | None:
                items = (await first.get("/v1/assignments")).json()["items"]
                return next((a for a in items if a["case_id"] == case_id), None)

            assigned = await eventually(assignment, timeout=60)
            url = f"/v1/assignments/{assigned['id']}"
            reading_url = f"/v1/second-readings/{assigned['id']}"
            assert (await first.post(f"{url}/accept")).status_code == 200
            assert (await first.get(reading_url)).status_code == 404  # nothing to read yet
            written = await first.post(f"{url}/opinion", json=OPINION)
            assert written.status_code == 201, written.text
            held = (await first.get(url)).json()
            assert held["status"] == "completed" and held["second_reading"] == "reading"

            # Matched like the first: the conflicted reviewer and the first are left out.
            explained = await coordinator.get(reading_url, headers={"X-Avis-Reason": "audit"})
            assert explained.status_code == 200, explained.text
            reading = explained.json()
            assert reading["second_reader_id"] == second_id
            assert reading["reason"] == "coordinator_rule" and reading["version"] == 1
            why = {c["reviewer_id"]: c["excluded"] for c in reading["rationale"]["candidates"]}
            assert why[conflicted] == "institution_conflict"
            assert why[first_id] == "first_reader"
            assert why[second_id] is None
            assert (await coordinator.get(reading_url)).status_code == 428  # no reason given
            assert (await stranger.get(reading_url)).status_code == 403
            mine = (await second.get("/v1/second-readings")).json()["items"]
            assert [r["assignment_id"] for r in mine] == [assigned["id"]]
            assert (await second.get(f"/v1/reviewers/{second_id}")).json()["load"] == 1

            # The second reader comments; only they may, and not with an empty text.
            comments_url = f"{reading_url}/comments"
            assert (await first.post(comments_url, json={"text": COMMENTS})).status_code == 403
            assert (await first.post(f"{reading_url}/agreement")).status_code == 403
            empty = await second.post(comments_url, json={"text": "  "})
            assert empty.status_code == 422, empty.text
            sent = await second.post(comments_url, json={"text": COMMENTS})
            assert sent.status_code == 201, sent.text
            assert sent.json()["state"] == "commented"
            early = await second.post(f"{reading_url}/agreement")
            assert early.status_code == 409, early.text

            # The first reads the comments and answers with a new version.
            seen = (await first.get(reading_url)).json()
            assert seen["comments"][0]["text"] == COMMENTS
            answered = OPINION | {"further_tests": "Scanner thoraco-abdominal de restadification."}
            corrected = await first.put(f"{url}/opinion", json=answered)
            assert corrected.status_code == 200, corrected.text
            assert corrected.json()["version"] == 2
            again = (await second.get(reading_url)).json()
            assert again["state"] == "reading" and again["version"] == 2
            assert again["opinion"]["further_tests"] == answered["further_tests"]
            assert again["comments"][0]["answered_by_version"] == 2

            # Nothing was released so far: no opinion of this case on review-completed.
            await topics.caught_up()
            assert not topics.of(case_id, "avis.review.completed.v1")

            agreed = await second.post(f"{reading_url}/agreement")
            assert agreed.status_code == 200, agreed.text
            assert agreed.json()["state"] == "agreed"
            twice = await second.post(f"{reading_url}/agreement")
            assert twice.status_code == 200 and twice.json()["state"] == "agreed"
            assert (await second.get(f"/v1/reviewers/{second_id}")).json()["load"] == 0

            trail = await coordinator.get(f"/v1/cases/{case_id}/access-log")
            assert trail.status_code == 200, trail.text
            said = str(trail.json())
            for words in ("returned comments", "agreed with the specialist's opinion", "second"):
                assert words in said, words

        async with client(reports_url, patient.sub, "patient") as reader:  # type: ignore[attr-defined]

            async def report() -> dict[str, Any] | None:
                response = await reader.get(f"/v1/cases/{case_id}/report")
                return response.json() if response.status_code == 200 else None

            issued = await eventually(report, timeout=60)
            assert issued["version"] == 1, "one report: the agreed version"
            assert issued["reviewer"]["name"] == f"Dr {first_id}"
            assert issued["reviewer"]["second_reader"] == f"Dr {second_id}"
            assert f"Dr {second_id}" in issued["reviewer"]["second_reader_text"]

            async def printed() -> bytes | None:
                response = await reader.get(
                    f"/v1/cases/{case_id}/report", headers={"Accept": "application/pdf"}
                )
                return response.content if response.status_code == 200 else None

            text = " ".join(_pdftotext(await eventually(printed, timeout=60)).split())
            assert f"Dr {first_id}" in text and f"Dr {second_id}" in text
        case = await eventually(lambda: _agreed_and_ready(patient, case_id), timeout=60)
        kinds = [e["kind"] for e in case["timeline"]]
        assert kinds.count("second_reading") == 2, kinds  # version 1, then the answer
        # In the order of the facts, not of their arrival: the agreement and the report come on
        # two topics, with no order between them.
        at = {e["kind"]: datetime.fromisoformat(e["at"]) for e in case["timeline"]}
        assert at["second_reading_agreed"] <= at["report_ready"], case["timeline"]
        assert COMMENTS not in str(case), "the case view carries no clinical text"

        # The emails: to the second reader, in English, one per version to read; to the first,
        # in French, one for the comments; each links to its page, none holds the comments.
        assignment_id = assigned["id"]
        await eventually(lambda: len(mailbox(second_email)) >= 2, timeout=60)
        await eventually(lambda: len(mailbox(first_email)) >= 1, timeout=60)
        await asyncio.sleep(1.0)  # nothing more arrives: one email per event
        to_second, to_first = mailbox(second_email), mailbox(first_email)
        assert len(to_second) == 2 and len(to_first) == 1
        assert {m["Content-Language"] for m in to_second} == {"en"}
        assert all("waits for your second reading" in str(m["Subject"]) for m in to_second)
        assert all(f"/second-readings/{assignment_id}" in body_text(m) for m in to_second)
        (comments_mail,) = to_first
        assert comments_mail["Content-Language"] == "fr"
        assert "a commenté votre avis" in str(comments_mail["Subject"])
        assert f"/review/{assignment_id}" in body_text(comments_mail)
        assert all(COMMENTS not in body_text(m) for m in [*to_second, *to_first])

        # The comments are in clear nowhere: not on the topics, not at rest, not in the logs.
        await topics.caught_up()
        completed = topics.of(case_id, "avis.review.completed.v1")
        assert len(completed) == 1, "the opinion is released once, after the agreement"
        haystacks = {"topics": record_bytes(topics.records)}
        for name, database in (
            ("intake", intake.settings.database),
            ("review", review_config.database),
            ("reports", reports_config.database),
            ("notify", notify_config.database),
        ):
            haystacks[f"{name} store"] = await stored_bytes(MONGO_URL, database)
        assert case_id.encode() in haystacks["review store"]
    logs = capfd.readouterr()
    haystacks["logs"] = (logs.out + logs.err).encode()
    assert_absent(
        {"comments": COMMENTS, "first's email": first_email, "second's email": second_email},
        haystacks,
    )


def _pdftotext(content: bytes) -> str:
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-", "-"], input=content, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")


async def _agreed_and_ready(patient: httpx.AsyncClient, case_id: str) -> dict[str, Any] | None:
    """The case once its report is ready and its timeline holds the second reader's agreement."""
    case = await _status(patient, case_id, "report_ready")
    kinds = [e["kind"] for e in case["timeline"]] if case else []
    return case if "second_reading_agreed" in kinds else None


async def _status(patient: httpx.AsyncClient, case_id: str, status: str) -> dict[str, Any] | None:
    response = await patient.get(f"/v1/cases/{case_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()) if response.json()["status"] == status else None
