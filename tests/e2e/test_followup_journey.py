"""Follow-up questions, end to end on loopback over the real broker, store and SMTP sink: a
partner files a case for its patient, the specialist answers, reports issues version 1; the
partner asks a follow-up question, which goes back to the same specialist with its own due date
(the case back in review); the specialist reads and answers it, and reports issues version 2
with the answer in an addendum (JSON and PDF) while version 1 stays served as it was. Three
questions are asked in all and a fourth is refused (409, saying why). The patient is told in
their language that each question was received and answered, and the specialist, in the first of
their languages, that each waits for them, with a link to it (emails read from the sink); the
partner's webhooks for both events are verified; the question and the answer are in clear in
no store, on no topic and in no log, nor is the specialist's address."""

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from avis.notify.main import create_app as create_notify_app
from avis.reports.main import create_app as create_reports_app
from avis.review.main import create_app as create_review_app
from avis.shared.security import Role, mint_token
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from tests.support.basics import MONGO_URL, eventually, serve, skip_history, unique
from tests.support.intake import running_intake
from tests.support.notify import body_text, hook_receiver, mailbox, notify_settings, stub_resolver
from tests.support.privacy import assert_absent, record_bytes, stored_bytes
from tests.support.reports import reports_settings
from tests.support.review import review_settings
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra

QUESTION = "Puis-je reprendre le vélo d'appartement avant l'intervention prévue en juin ?"
ANSWER = "Oui, à intensité modérée, trente minutes au plus, en arrêtant en cas d'essoufflement."
HOOK_TYPES = ["avis.review.follow-up-asked.v1", "avis.review.follow-up-answered.v1"]


@dataclass
class Stack:
    """Intake, review, reports and notify on loopback, ready."""

    intake: Any
    review_url: str
    reports_url: str
    notify_url: str
    configs: list[Any]

    def client(
        self, url: str, sub: str, role: Role, partner_id: str | None = None
    ) -> httpx.AsyncClient:
        token = mint_token(self.configs[0], sub, role, partner_id)
        return httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )


@contextlib.asynccontextmanager
async def four_services() -> AsyncIterator[Stack]:
    """The four services in this process."""
    review_config = review_settings(follow_up_due_days=5.0)
    reports_config = reports_settings()
    notify_config = notify_settings()
    await skip_history(f"avis-{review_config.service_name}", [CASE_SUBMITTED, REPORT_READY])
    await skip_history(f"avis-{reports_config.service_name}", [CASE_SUBMITTED, REVIEW_COMPLETED])
    await skip_history(
        f"avis-{notify_config.service_name}",
        [CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
    )
    review_app = create_review_app(review_config)
    reports_app = create_reports_app(reports_config)
    notify_app = create_notify_app(notify_config)
    notify_app.state.notify.webhooks.resolver = stub_resolver
    async with (
        running_intake() as intake,
        serve(review_app) as review_url,
        serve(reports_app) as reports_url,
        serve(notify_app) as notify_url,
    ):
        for app in (review_app, reports_app, notify_app):
            await eventually(lambda app=app: app.state.runtime.kafka_started, timeout=60)
        configs = [review_config, reports_config, notify_config, intake.settings]
        yield Stack(intake, review_url, reports_url, notify_url, configs)


def pdftotext(pdf_bytes: bytes) -> str:
    """The text of a PDF, on one line (poppler-utils)."""
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf_bytes, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.decode("utf-8").split())


async def test_three_follow_up_questions_each_answered_in_an_addendum(
    capfd: pytest.CaptureFixture[str],
) -> None:
    email = f"{unique('patient')}@exemple.fr"
    partner = unique("insurer")
    partner_sub = f"{partner}-api"
    reviewer_id = unique("onc")
    specialist_email = f"{reviewer_id}@hopital.example"
    topics = await TopicReader(
        CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY
    ).mark()
    async with four_services() as stack, hook_receiver() as (hooks, hooks_port):
        async with stack.client(stack.review_url, "coord-e2e", "coordinator") as coordinator:
            created = await coordinator.post(
                "/v1/reviewers",
                json={
                    "id": reviewer_id,
                    "display_name": "Dr Claire Fontaine",
                    "specialties": ["oncology"],
                    "languages": ["fr", "en"],
                    "capacity": 5,
                    "email": specialist_email,
                },
            )
            assert specialist_email not in created.text
            assert created.status_code == 201, created.text

        # The partner subscribes to the follow-ups' events, then files the case for its patient.
        async with stack.client(stack.notify_url, partner_sub, "partner", partner) as http:
            subscribed = await http.post(
                "/v1/subscriptions",
                json={"url": f"http://127.0.0.1:{hooks_port}/avis", "event_types": HOOK_TYPES},
            )
            assert subscribed.status_code == 201, subscribed.text
            secret = subscribed.json()["secret"]
        body = case_body(specialty="oncology", partner_reference="INS-FU-1")
        body["patient"] |= {"email": email, "preferred_language": "fr"}
        filer = stack.intake.client(partner_sub, role="partner", partner_id=partner)
        draft = await filer.post("/v1/cases", json=body)
        assert draft.status_code == 201, draft.text
        case_id, reference = draft.json()["case_id"], draft.json()["reference"]
        assert (await filer.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))).is_success
        submitted = await filer.post(
            f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_partner")
        )
        assert submitted.status_code == 200, submitted.text

        async with (
            stack.client(stack.review_url, reviewer_id, "reviewer") as reviewer,
            stack.client(stack.review_url, partner_sub, "partner", partner) as asker,
            stack.client(stack.review_url, unique("patient"), "patient") as stranger,
            stack.client(stack.reports_url, partner_sub, "partner", partner) as reader,
        ):

            async def assignment() -> dict[str, Any] | None:
                items = (await reviewer.get("/v1/assignments")).json()["items"]
                return next((a for a in items if a["case_id"] == case_id), None)

            url = f"/v1/assignments/{(await eventually(assignment, timeout=60))['id']}"
            ask = f"/v1/cases/{case_id}/follow-ups"
            # Before the report: a 409 saying so.
            assert (await reviewer.post(f"{url}/accept")).status_code == 200
            early = await asker.post(ask, json={"text": QUESTION})
            assert early.status_code == 409 and early.json()["type"].endswith("no-report")
            assert (await reviewer.post(f"{url}/opinion", json=OPINION)).status_code == 201

            async def latest() -> dict[str, Any] | None:
                got = await reader.get(f"/v1/cases/{case_id}/report")
                return got.json() if got.status_code == 200 else None

            first = await eventually(latest, timeout=60)
            assert first["version"] == 1 and first["addenda"] == []
            report_url = f"/v1/reports/{first['report_id']}"

            async def report(version: int) -> dict[str, Any] | None:
                got = await reader.get(report_url, params={"version": version})
                return got.json() if got.status_code == 200 else None

            # The report's first version opens the period (review hears of it): ask.
            async def asked_once() -> httpx.Response | None:
                answer = await asker.post(ask, json={"text": QUESTION})
                return None if answer.status_code == 409 else answer

            asked = await eventually(asked_once, timeout=60)
            assert asked.status_code == 201, asked.text
            follow_up = asked.json()
            assert follow_up["number"] == 1 and follow_up["state"] == "open"
            assert follow_up["reviewer_id"] == reviewer_id and follow_up["question"] is None
            assert QUESTION not in asked.text
            # Nobody else asks: a patient who is not the case's, an empty text.
            assert (await stranger.post(ask, json={"text": QUESTION})).status_code == 404
            assert (await asker.post(ask, json={"text": " "})).status_code == 422

            # Back to review, with the question in the specialist's list and its own due date.
            async def in_review() -> bool:
                case = (await filer.get(f"/v1/cases/{case_id}")).json()
                return bool(case["status"] == "in_review")

            await eventually(in_review, timeout=60)
            waiting = (await reviewer.get("/v1/follow-ups")).json()["items"]
            assert [f["id"] for f in waiting] == [follow_up["id"]]
            read = (await reviewer.get(f"/v1/follow-ups/{follow_up['id']}")).json()
            assert read["question"] == QUESTION and read["due_at"] == follow_up["due_at"]
            answered = await reviewer.post(
                f"/v1/follow-ups/{follow_up['id']}/answer", json={"text": ANSWER}
            )
            assert answered.status_code == 200, answered.text
            again = await reviewer.post(
                f"/v1/follow-ups/{follow_up['id']}/answer", json={"text": ANSWER}
            )
            assert again.status_code == 409, again.text
            assert (await reviewer.get("/v1/follow-ups")).json()["items"] == []

            # Version 2 carries the addendum; version 1 is served as it was.
            second = await eventually(lambda: report(2), timeout=60)
            (addendum,) = second["addenda"]
            assert (addendum["question"], addendum["answer"]) == (QUESTION, ANSWER)
            assert "Dr Claire Fontaine" in addendum["signature"]
            assert second["sections"] == first["sections"]
            assert await report(1) == first
            printed = await reader.get(
                report_url,
                params={"version": 2},
                headers={"Accept": "application/pdf"},
            )
            assert printed.status_code == 200, printed.text
            text = pdftotext(printed.content)
            assert "Addendum 1" in text and "trente minutes au plus" in text

            # Two more, then a fourth is refused saying why.
            for _ in range(2):
                more = await asker.post(ask, json={"text": QUESTION})
                assert more.status_code == 201, more.text
            asked_ids = [follow_up["id"]] + [
                f["id"] for f in (await reviewer.get("/v1/follow-ups")).json()["items"]
            ]
            fourth = await asker.post(ask, json={"text": QUESTION})
            assert fourth.status_code == 409, fourth.text
            assert fourth.json()["type"].endswith("follow-up-limit")
            assert "3 follow-up questions" in fourth.json()["detail"]

        # The patient's emails, in French, from the sink: three received, one answered.
        def told() -> list[Any] | None:
            mails = mailbox(email)
            subjects = [str(m["Subject"]) for m in mails]
            received = [s for s in subjects if "question complémentaire" in s and "reçue" in s]
            answered = [s for s in subjects if "a répondu" in s]
            return mails if len(received) == 3 and len(answered) == 1 else None

        mails = await eventually(told, timeout=60)
        assert all(reference in str(m["Subject"]) for m in mails)
        assert {m["Content-Language"] for m in mails} == {"fr"}
        assert all(QUESTION not in body_text(m) and ANSWER not in body_text(m) for m in mails)

        # The specialist's emails, in French (the first of their languages): one per question,
        # each with the link to it in web, and neither the question nor the patient's address.
        pro_mails = await eventually(
            lambda: len(mailbox(specialist_email)) >= 3 and mailbox(specialist_email), timeout=60
        )
        await asyncio.sleep(1.0)  # nothing more arrives: one email per event
        pro_mails = mailbox(specialist_email)
        assert len(pro_mails) == 3
        assert {m["Content-Language"] for m in pro_mails} == {"fr"}
        assert all("question de suivi vous attend" in str(m["Subject"]) for m in pro_mails)
        assert all(reference in str(m["Subject"]) for m in pro_mails)
        links = [t for m in pro_mails for t in body_text(m).split() if "/follow-ups/" in t]
        assert sorted(t.rsplit("/follow-ups/", 1)[1] for t in links) == sorted(asked_ids)
        assert all(QUESTION not in body_text(m) and email not in body_text(m) for m in pro_mails)

        # The partner's webhooks: three asked and one answered, each verified.
        await eventually(lambda: len(hooks.at("/avis", 204)) >= 4, timeout=60)
        await asyncio.sleep(1.0)  # nothing more arrives
        bodies = [Webhook(secret).verify(r.body, r.headers) for r in hooks.at("/avis", 204)]
        assert sorted(b["type"] for b in bodies) == sorted([HOOK_TYPES[0]] * 3 + [HOOK_TYPES[1]])
        assert {b["subject"] for b in bodies} == {case_id}
        assert {b["data"]["partner_reference"] for b in bodies} == {"INS-FU-1"}
        assert QUESTION.encode() not in b"".join(r.body for r in hooks.received)

        # The question and the answer in clear nowhere: topics, stores, logs.
        await topics.caught_up()
        haystacks = {"topics": record_bytes(topics.records)}
        for config in stack.configs:
            haystacks[config.database] = await stored_bytes(MONGO_URL, config.database)
    logs = capfd.readouterr()
    haystacks["logs"] = (logs.out + logs.err).encode()
    assert_absent(
        {"question": QUESTION, "answer": ANSWER, "specialist email": specialist_email}, haystacks
    )


async def test_two_open_questions_a_retried_ask_and_a_correction_after_the_addenda() -> None:
    """Two questions open at once: answering the first issues its version, and the case stays
    in review until the second is answered. A retried ask (the same Idempotency-Key) is the
    same question, not a second one. A correction issued while a question is open keeps the
    case in review too; a correction of the opinion after the addenda keeps them."""
    partner = unique("insurer")
    partner_sub = f"{partner}-api"
    reviewer_id = unique("onc")
    async with four_services() as stack:
        async with stack.client(stack.review_url, "coord-e2e", "coordinator") as coordinator:
            created = await coordinator.post(
                "/v1/reviewers",
                json={
                    "id": reviewer_id,
                    "display_name": "Dr Paul Girard",
                    "specialties": ["oncology"],
                    "languages": ["fr"],
                    "capacity": 5,
                },
            )
            assert created.status_code == 201, created.text
        body = case_body(specialty="oncology", partner_reference="INS-FU-2")
        body["patient"] |= {"preferred_language": "fr"}
        filer = stack.intake.client(partner_sub, role="partner", partner_id=partner)
        draft = await filer.post("/v1/cases", json=body)
        assert draft.status_code == 201, draft.text
        case_id = draft.json()["case_id"]
        assert (await filer.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))).is_success
        submitted = await filer.post(
            f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_partner")
        )
        assert submitted.status_code == 200, submitted.text

        async def intake_case(reports: int) -> dict[str, Any] | None:
            case = (await filer.get(f"/v1/cases/{case_id}")).json()
            kinds = [e["kind"] for e in case["timeline"]]
            return case if kinds.count("report_ready") >= reports else None

        async with (
            stack.client(stack.review_url, reviewer_id, "reviewer") as reviewer,
            stack.client(stack.review_url, partner_sub, "partner", partner) as asker,
            stack.client(stack.reports_url, partner_sub, "partner", partner) as reader,
        ):

            async def assignment() -> dict[str, Any] | None:
                items = (await reviewer.get("/v1/assignments")).json()["items"]
                return next((a for a in items if a["case_id"] == case_id), None)

            url = f"/v1/assignments/{(await eventually(assignment, timeout=60))['id']}"
            assert (await reviewer.post(f"{url}/accept")).status_code == 200
            assert (await reviewer.post(f"{url}/opinion", json=OPINION)).status_code == 201
            await eventually(lambda: intake_case(1), timeout=60)

            async def report(version: int) -> dict[str, Any] | None:
                got = await reader.get(f"/v1/cases/{case_id}/report")
                found = got.json() if got.status_code == 200 else None
                return found if found and found["version"] == version else None

            # The first question, retried with its key: the same question (200), no second one;
            # the same key with another text is refused.
            ask = f"/v1/cases/{case_id}/follow-ups"
            key = {"Idempotency-Key": unique("ask")}

            async def asked_once() -> httpx.Response | None:
                answer = await asker.post(ask, json={"text": QUESTION}, headers=key)
                return None if answer.status_code == 409 else answer

            first = await eventually(asked_once, timeout=60)
            assert first.status_code == 201, first.text
            retried = await asker.post(ask, json={"text": QUESTION}, headers=key)
            assert retried.status_code == 200, retried.text
            assert retried.json()["id"] == first.json()["id"]
            other = await asker.post(ask, json={"text": "Autre chose ?"}, headers=key)
            assert other.status_code == 422 and other.json()["type"].endswith("key-reused")
            second = await asker.post(
                ask, json={"text": "Et la natation ?"}, headers={"Idempotency-Key": unique("ask")}
            )
            assert second.status_code == 201, second.text
            assert second.json()["number"] == 2
            waiting = (await reviewer.get("/v1/follow-ups")).json()["items"]
            assert sorted(f["id"] for f in waiting) == sorted(
                [first.json()["id"], second.json()["id"]]
            )

            # The first answered: its version comes, and the case stays in review.
            one = await reviewer.post(
                f"/v1/follow-ups/{first.json()['id']}/answer", json={"text": ANSWER}
            )
            assert one.status_code == 200, one.text
            await eventually(lambda: report(2), timeout=60)
            case = await eventually(lambda: intake_case(2), timeout=60)
            await asyncio.sleep(1.0)  # the answer's own entry, on another topic, changes nothing
            case = (await filer.get(f"/v1/cases/{case_id}")).json()
            assert case["status"] == "in_review", case["timeline"]

            # A correction while the second is open: its version comes, the case stays in review.
            mended = OPINION | {"risk_benefit": "Favorable, sous surveillance."}
            fixed = await reviewer.put(f"{url}/opinion", json=mended)
            assert fixed.status_code == 200, fixed.text
            third = await eventually(lambda: report(3), timeout=60)
            assert [a["answer"] for a in third["addenda"]] == [ANSWER]
            await eventually(lambda: intake_case(3), timeout=60)
            await asyncio.sleep(1.0)  # its `completed`, on another topic, changes nothing either
            case = (await filer.get(f"/v1/cases/{case_id}")).json()
            assert case["status"] == "in_review", case["timeline"]

            # The second answered: the case's report is ready again.
            two = await reviewer.post(
                f"/v1/follow-ups/{second.json()['id']}/answer", json={"text": "Oui."}
            )
            assert two.status_code == 200, two.text
            await eventually(lambda: report(4), timeout=60)
            case = await eventually(lambda: intake_case(4), timeout=60)
            assert case["status"] == "report_ready", case["timeline"]

            # A correction of the opinion after the addenda: its version keeps them.
            corrected = OPINION | {"further_tests": "Une scintigraphie osseuse."}
            again = await reviewer.put(f"{url}/opinion", json=corrected)
            assert again.status_code == 200, again.text
            fifth = await eventually(lambda: report(5), timeout=60)
            assert [a["answer"] for a in fifth["addenda"]] == [ANSWER, "Oui."]
            printed = await reader.get(
                f"/v1/reports/{fifth['report_id']}",
                params={"version": 5},
                headers={"Accept": "application/pdf"},
            )
            assert printed.status_code == 200, printed.text
            assert "trente minutes au plus" in pdftotext(printed.content)
