"""The treating physician's copy, end to end on loopback over the real broker and store: a case
submitted with the physician's email and the `share_with_physician` consent is matched and
answered in review, reports issues its report, and notify writes to the physician, in the
physician's language, with a link to a page of web that opens the whole report for them, and for
nobody else: not with another secret, not on another case, not without the secret. The patient's
own emails never carry that link, and no store of the four services holds the physician's name,
address or link secret in clear. Where the physician's institution has a FHIR endpoint (a
loopback test server here), the report's FHIR document is posted there instead of the email.
Once its window is over, the page says so in plain words in the physician's language (410), and
reports' own link (the FHIR endpoint's) refuses it with a 410 that says why, in both languages."""

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from unittest.mock import ANY
from urllib.parse import urlsplit

import httpx
import pytest

from avis.notify.main import create_app as create_notify_app
from avis.reports.main import create_app as create_reports_app
from avis.reports.rules import AccessWindows
from avis.review.main import create_app as create_review_app
from avis.shared.events import Language
from avis.shared.security import Role, mint_token
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from avis.web.main import create_app as create_web_app
from avis.web.settings import Settings as WebSettings
from tests.e2e.test_report_journey import OPINIONS, pdftotext
from tests.support.basics import MONGO_URL, eventually, serve, skip_history, unique
from tests.support.intake import running_intake
from tests.support.notify import (
    body_text,
    hook_receiver,
    html_text,
    mailbox,
    notify_settings,
    stub_resolver,
)
from tests.support.privacy import assert_absent, record_bytes, stored_bytes
from tests.support.reports import reports_settings
from tests.support.review import review_settings
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

COPY_SENT = "avis.report.physician-copy-sent.v1"

pytestmark = pytest.mark.infra

LINK = re.compile(r"https?://[^\s\"<>]+/physician/[0-9a-f-]+/[A-Za-z0-9_-]+\?lang=[a-z]+")


@dataclass
class Stack:
    """Intake, review, reports and notify on loopback, ready."""

    intake: Any
    review_url: str
    reports_url: str
    configs: list[Any]
    reports: Any  # the reports service, whose access windows a test may shorten
    web_url: str = ""  # the people's pages, where the physician's link leads

    def client(self, url: str, sub: str, role: Role) -> httpx.AsyncClient:
        token = mint_token(self.configs[0], sub, role)
        return httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )


@contextlib.asynccontextmanager
async def four_services(**notify_overrides: Any) -> AsyncIterator[Stack]:
    """The four services in this process, the report links on the reports actually served."""
    review_config = review_settings()
    reports_config = reports_settings()
    notify_config = notify_settings(**notify_overrides)
    await skip_history(f"avis-{review_config.service_name}", [CASE_SUBMITTED])
    await skip_history(f"avis-{reports_config.service_name}", [CASE_SUBMITTED, REVIEW_COMPLETED])
    await skip_history(
        f"avis-{notify_config.service_name}", [CASE_SUBMITTED, REVIEW_ASSIGNED, REPORT_READY]
    )
    review_app = create_review_app(review_config)
    reports_app = create_reports_app(reports_config)
    notify_app = create_notify_app(notify_config)
    notify_app.state.notify.webhooks.resolver = stub_resolver
    async with (
        running_intake() as intake,
        serve(review_app) as review_url,
        serve(reports_app) as reports_url,
        serve(notify_app),
    ):
        for app in (review_app, reports_app, notify_app):
            await eventually(lambda app=app: app.state.runtime.kafka_started, timeout=60)
        reports_app.state.reports.public_url = reports_url  # where its links lead
        configs = [review_config, reports_config, notify_config, intake.settings]
        web_config = WebSettings(
            avis_env="development", jwt_secret="w" * 40, live_events=False, reports_url=reports_url
        )
        async with serve(create_web_app(web_config)) as web_url:
            notify_config.pages_url = web_url  # where the emails' links lead
            reports = reports_app.state.reports
            yield Stack(intake, review_url, reports_url, configs, reports, web_url)


async def answered(stack: Stack, physician: dict[str, str], patient_email: str) -> tuple[str, str]:
    """A case filed with `physician` and the consent to share, matched, accepted and answered;
    its id and reference."""
    reviewer_id = unique("onc")
    async with stack.client(stack.review_url, "coord-e2e", "coordinator") as coordinator:
        created = await coordinator.post(
            "/v1/reviewers",
            json={
                "id": reviewer_id,
                "display_name": "Dr Claire Fontaine",
                "specialties": ["oncology"],
                "languages": ["fr", "en"],
                "capacity": 5,
            },
        )
        assert created.status_code == 201, created.text
    patient = stack.intake.client(role="patient")
    person = case_body()["patient"] | {"email": patient_email}
    draft = await patient.post("/v1/cases", json=case_body(patient=person, physician=physician))
    assert draft.status_code == 201, draft.text
    case_id, reference = draft.json()["case_id"], draft.json()["reference"]
    assert (await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))).is_success
    submitted = await patient.post(
        f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_physician")
    )
    assert submitted.status_code == 200, submitted.text
    async with stack.client(stack.review_url, reviewer_id, "reviewer") as reviewer:

        async def assignment() -> dict[str, Any] | None:
            items = (await reviewer.get("/v1/assignments")).json()["items"]
            return next((a for a in items if a["case_id"] == case_id), None)

        url = f"/v1/assignments/{(await eventually(assignment, timeout=60))['id']}"
        assert (await reviewer.post(f"{url}/accept")).status_code == 200
        answer = await reviewer.post(f"{url}/opinion", json=OPINIONS[Language.FR])
        assert answer.status_code == 201, answer.text
    return case_id, reference


async def test_the_physician_reads_the_report_through_their_link_only(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # The patient (French) names their physician (English), with the consent to share.
    patient_email = f"{unique('patient')}@exemple.fr"
    physician_email = f"{unique('dr')}@cabinet.example"
    physician = {
        "name": "Dr Owen Price",
        "institution_code": "750712184",
        "email": physician_email,
        "language": "en",
    }
    async with four_services() as stack:
        copies = await TopicReader(REPORT_READY).mark()
        case_id, reference = await answered(stack, physician, patient_email)

        # The physician's email: in English, from the sink, with the link.
        (mail,) = await eventually(lambda: mailbox(physician_email), timeout=60)
        assert mail["Content-Language"] == "en"
        assert reference in str(mail["Subject"])
        text = body_text(mail)
        assert text.startswith("Hello,")
        assert "Camille" not in text and "Martin" not in text, "the email names no one"
        (link,) = set(LINK.findall(text))
        assert link in html_text(mail)
        assert link.startswith(f"{stack.web_url}/physician/{case_id}/"), link
        assert link.endswith("?lang=en"), "the page in the physician's language"
        page = urlsplit(link).path
        secret = page.rsplit("/", 1)[1]
        path = f"/v1/cases/{case_id}/report/physician/{secret}"  # reports' own, the FHIR's

        # The patient's emails, in French, never carry the physician's link.
        patient_mails = await eventually(
            lambda: len(mailbox(patient_email)) >= 3 and mailbox(patient_email), timeout=60
        )
        assert {m["Content-Language"] for m in patient_mails} == {"fr"}
        assert all(secret not in m.as_string() for m in patient_mails)

        async with httpx.AsyncClient(timeout=30.0) as browser:
            # The link opens web's page, which shows the whole report, never cached.
            opened = await browser.get(link)
            assert opened.status_code == 200, opened.text
            assert opened.headers["content-type"] == "application/pdf"
            assert opened.headers["cache-control"] == "no-store"
            assert "default-src 'none'" in opened.headers["content-security-policy"]
            printed = " ".join(pdftotext(opened.content).split())
            assert "Camille Martin" in printed and reference in printed, "the whole report"
            # A wrong secret: web's not-found page, never a problem body.
            wrong = await browser.get(link.replace(secret, "A" * 43))
            assert wrong.status_code == 404 and "text/html" in wrong.headers["content-type"]
            assert "This page does not exist" in wrong.text

        async with httpx.AsyncClient(base_url=stack.reports_url, timeout=30.0) as anyone:
            # Nobody else: another secret, the secret on another case, no secret at all.
            other_secret = "A" * 43
            assert (await anyone.get(path.replace(secret, other_secret))).status_code == 404
            elsewhere = path.replace(case_id, "00000000-0000-4000-8000-000000000000")
            assert (await anyone.get(elsewhere)).status_code == 404
            assert (await anyone.get(f"/v1/cases/{case_id}/report")).status_code == 401
            assert (await anyone.get(path[: -len(secret)] + "short")).status_code in (404, 422)

            # Past its window (the latest version issued longer ago than that), the link is
            # refused with its reason in both languages; anyone else still gets the same 404.
            stack.reports.windows = AccessWindows(physician_link=timedelta(0))
            expired = await anyone.get(path)
            assert expired.status_code == 410, expired.text
            assert expired.headers["content-type"] == "application/problem+json"
            problem = expired.json()
            assert problem["type"].endswith("/physician-link-expired"), problem
            assert "has expired" in problem["detail"] and "a expiré" in problem["detail"]
            assert (await anyone.get(path.replace(secret, other_secret))).status_code == 404
        async with httpx.AsyncClient(timeout=30.0) as browser:
            # The page says it in plain words, in the physician's language (English here).
            gone = await browser.get(link, headers={"Accept-Language": "fr"})
            assert gone.status_code == 410 and "text/html" in gone.headers["content-type"]
            assert "The link to this report has expired" in gone.text, gone.text
            assert "physician-link-expired" not in gone.text
            wrong = await browser.get(link.replace(secret, "A" * 43))
            assert wrong.status_code == 404 and "This page does not exist" in wrong.text

        # The physician's read is in the case's trail, which its patient reads: by whom (their
        # part in the case, never the secret) and why; the refused tries are not reads.
        async with stack.client(stack.reports_url, "coord-e2e", "coordinator") as coordinator:
            trail = (await coordinator.get(f"/v1/cases/{case_id}/access-log")).json()["items"]
        read = [(e["role"], e["action"], e["purpose"]) for e in trail if e["role"] == "physician"]
        assert read == [("physician", "report.read", "physician-copy")], trail
        assert secret not in str(trail)

        # The patient's timeline says their physician got it, as the copy's event told intake;
        # the event names no one.
        told = await copies.wait(case_id, COPY_SENT)
        assert told == [
            {"case_id": case_id, "report_version": 1, "channel": "email", "sent_at": ANY}
        ], told
        assert await timeline_has(stack, case_id, "physician_copy_sent")

        # At rest, on the topic and in the logs: the physician's name, address and secret,
        # nowhere in clear.
        names = [c.mongo_database for c in stack.configs]
        stores = {name: await stored_bytes(MONGO_URL, name) for name in names}
    assert all(stores.values())
    logs = capfd.readouterr()
    secrets = {"name": "Owen Price", "email": physician_email, "link secret": secret}
    topic = record_bytes(copies.of(case_id))
    assert_absent(secrets, {**stores, "topic": topic, "logs": (logs.out + logs.err).encode()})


async def test_an_institution_with_a_fhir_endpoint_receives_the_document_instead() -> None:
    physician_email = f"{unique('dr')}@chu.example"
    physician = {
        "name": "Dr Lise Moreau",
        "institution_code": "290000017",
        "email": physician_email,
    }
    async with hook_receiver() as (receiver, port):
        endpoint = f"http://hooks.partner.example:{port}/fhir/Bundle"
        async with four_services(physician_fhir_endpoints={"290000017": endpoint}) as stack:
            copies = await TopicReader(REPORT_READY).mark()
            case_id, reference = await answered(stack, physician, f"{unique('p')}@exemple.fr")
            (posted,) = await eventually(lambda: receiver.at("/fhir/Bundle"), timeout=60)
            bundle = json.loads(posted.body)
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "document"
            composition = bundle["entry"][0]["resource"]
            assert composition["resourceType"] == "Composition"
            assert reference in json.dumps(bundle), "the case's own report"
            assert posted.headers["webhook-id"], "an id the endpoint can deduplicate by"
            await eventually(lambda: receiver.at("/fhir/Bundle", 204), timeout=10)
            assert mailbox(physician_email) == [], "the document instead of the email"
            (told,) = await copies.wait(case_id, COPY_SENT)
            assert (told["channel"], told["report_version"]) == ("fhir", 1)
            assert await timeline_has(stack, case_id, "physician_copy_sent")


async def timeline_has(stack: Stack, case_id: str, kind: str) -> bool:
    """Whether the case's timeline, as a coordinator reads it from intake, gets an entry
    `kind` (the patient's page shows the same timeline)."""
    patient = stack.intake.client(role="coordinator")

    async def kinds() -> list[str] | None:
        case = (await patient.get(f"/v1/cases/{case_id}")).json()
        found = [entry["kind"] for entry in case["timeline"]]
        return found if kind in found else None

    return bool(await eventually(kinds, timeout=60))
