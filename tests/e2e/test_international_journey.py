"""International review, end to end on loopback over the real broker, store and SMTP sink: a partner
files a case for a French patient who accepts an international review; only a specialist who reads
English exists, so matching takes the international path. A translator of the pair is emailed that
the case waits (fr -> en); the specialist cannot accept it until it is translated (their workspace
in web says so and offers no accept), then reads the translation (the workspace shows it, naming
its translator) and answers in English; the opinion is kept in review and goes back to the
translator (en -> fr), and only their French translation is released. The report's text, read from
the PDF, has the French opinion and says, in French and in English, that it was translated, by whom
and from English. The patient is told in French that the review goes abroad; the translator's
emails hold no clinical text; the partner's webhooks for the translation events are verified;
intake's timeline has the four translation entries; the texts are in clear on no topic, in no store
and in no log."""

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
from avis.web.main import create_app as create_web_app
from avis.web.settings import Settings as WebSettings
from tests.support.basics import MONGO_URL, eventually, make_settings, serve, skip_history, unique
from tests.support.intake import running_intake
from tests.support.notify import body_text, hook_receiver, mailbox, notify_settings, stub_resolver
from tests.support.privacy import assert_absent, record_bytes, stored_bytes
from tests.support.reports import reports_settings
from tests.support.review import review_settings
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader
from tests.support.web import Browser

pytestmark = pytest.mark.infra

SUMMARY_FR = "Douleurs articulaires des deux mains depuis l'hiver, raideur matinale d'une heure."
SUMMARY_EN = "Joint pain in both hands since the winter, morning stiffness lasting an hour."
OPINION_FR = {
    "diagnosis": {
        "assessment": "confirmed",
        "explanation": "Les signes cliniques et la biologie concordent avec le diagnostic.",
    },
    "imaging_and_lab_review": "Les radiographies et le bilan sanguin concordent.",
    "alternative_pathways": "Un traitement de fond différent si la tolérance est mauvaise.",
    "risk_benefit": "Le traitement proposé offre le meilleur contrôle pour un risque acceptable.",
    "further_tests": "Une échographie des mains dans trois mois.",
    "summary_for_patient": "Le diagnostic est confirmé et le traitement proposé est adapté.",
}
TRANSLATOR_NAME = "Hélène Vasseur-Grant"
# The specialist opens their workspace in web, whose development sign-in offers this reviewer
# (review's database is this test's own: nobody else is in its directory).
REVIEWER_ID = "reviewer-1"
HOOK_TYPES = ["avis.review.translation-queued.v1", "avis.review.translation-done.v1"]


@dataclass
class Stack:
    """Intake, review, reports and notify on loopback, ready, and web's pages over them."""

    intake: Any
    review_url: str
    reports_url: str
    notify_url: str
    web_url: str
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
    review_config = review_settings()
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
        web_config = make_settings(
            unique("web"),
            WebSettings,
            avis_env="development",
            intake_url=intake.url,
            review_url=review_url,
            reports_url=reports_url,
            notify_url=notify_url,
            live_events=False,
        )
        configs = [review_config, reports_config, notify_config, intake.settings]
        async with serve(create_web_app(web_config)) as web_url:
            yield Stack(intake, review_url, reports_url, notify_url, web_url, configs)


def pdftotext(pdf_bytes: bytes) -> str:
    """The text of a PDF, on one line (poppler-utils)."""
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf_bytes, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.decode("utf-8").split())


async def test_a_french_case_is_translated_to_english_and_back(
    capfd: pytest.CaptureFixture[str],
) -> None:
    email = f"{unique('patient')}@exemple.fr"
    partner = unique("insurer")
    partner_sub = f"{partner}-api"
    reviewer_id, translator_id = REVIEWER_ID, unique("tr-fr-en")
    translator_email = f"{translator_id}@traduction.example"
    topics = await TopicReader(
        CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY
    ).mark()
    async with four_services() as stack, hook_receiver() as (hooks, hooks_port):
        async with stack.client(stack.review_url, "coord-e2e", "coordinator") as coordinator:
            created = await coordinator.post(
                "/v1/reviewers",
                json={
                    "id": reviewer_id,
                    "display_name": "Dr Oliver Hale",
                    "specialties": ["rheumatology"],
                    "languages": ["en"],
                    "capacity": 5,
                },
            )
            assert created.status_code == 201, created.text
            bad = await coordinator.put(
                f"/v1/translators/{translator_id}",
                json={"display_name": TRANSLATOR_NAME, "languages": ["xx"], "capacity": 3},
            )
            assert bad.status_code == 422, bad.text
            put = await coordinator.put(
                f"/v1/translators/{translator_id}",
                json={
                    "display_name": TRANSLATOR_NAME,
                    "languages": ["fr", "en"],
                    "capacity": 3,
                    "email": translator_email,
                },
            )
            assert put.status_code == 200, put.text
            assert translator_email not in put.text, "the address is never shown back"

        async with stack.client(stack.notify_url, partner_sub, "partner", partner) as http:
            subscribed = await http.post(
                "/v1/subscriptions",
                json={"url": f"http://127.0.0.1:{hooks_port}/avis", "event_types": HOOK_TYPES},
            )
            assert subscribed.status_code == 201, subscribed.text
            secret = subscribed.json()["secret"]
        body = case_body(
            specialty="rheumatology", partner_reference="INS-INT-1", clinical_summary=SUMMARY_FR
        )
        body["patient"] |= {"email": email, "preferred_language": "fr"}
        filer = stack.intake.client(partner_sub, role="partner", partner_id=partner)
        draft = await filer.post("/v1/cases", json=body)
        assert draft.status_code == 201, draft.text
        case_id, reference = draft.json()["case_id"], draft.json()["reference"]
        assert (await filer.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))).is_success
        submitted = await filer.post(
            f"/v1/cases/{case_id}/submit",
            json=consent_body("review", "share_with_partner", "international_review"),
        )
        assert submitted.status_code == 200, submitted.text

        async with (
            stack.client(stack.review_url, reviewer_id, "reviewer") as reviewer,
            stack.client(stack.review_url, translator_id, "translator") as translator,
            stack.client(stack.review_url, unique("tr"), "translator") as stranger,
            stack.client(stack.review_url, "coord-e2e", "coordinator") as coordinator,
            stack.client(stack.reports_url, partner_sub, "partner", partner) as reader,
            Browser(stack.web_url) as browser,
        ):

            async def assignment() -> dict[str, Any] | None:
                items = (await reviewer.get("/v1/assignments")).json()["items"]
                return next((a for a in items if a["case_id"] == case_id), None)

            assigned = await eventually(assignment, timeout=60)
            url = f"/v1/assignments/{assigned['id']}"
            chosen = (await coordinator.get(url)).json()
            assert chosen["rationale"]["rule"] == "international_no_reader_available"

            # The specialist waits for the translation into English.
            early = await reviewer.post(f"{url}/accept")
            assert early.status_code == 409, early.text
            assert "translated" in early.json()["detail"]
            await browser.sign_in(reviewer_id)
            workspace = f"/review/{assigned['id']}"
            waiting = await browser.get(workspace)
            assert waiting.status_code == 200, waiting.text
            assert "This case is being translated into your language" in waiting.text
            assert f"{workspace}/accept" not in waiting.text, "no accept until translated"

            # The translator's queue, the source text, and the translation to English.
            queue = (await translator.get("/v1/translations")).json()["items"]
            (first,) = [t for t in queue if t["case_id"] == case_id]
            assert first["way"] == "to_specialist" and first["translator_id"] == translator_id
            assert (first["from_language"], first["to_language"]) == ("fr", "en")
            assert "source" not in first or first["source"] is None, "a list has no texts"
            t_url = f"/v1/translations/{first['id']}"
            assert (await stranger.get(t_url)).status_code == 403
            assert (await stranger.post(f"{t_url}/take")).status_code == 403
            assert (await reviewer.get(t_url)).status_code == 403, "not translated yet"
            assert (await coordinator.get(t_url)).status_code == 428  # no reason given
            source = (await translator.get(t_url)).json()
            assert source["source"]["summary"] == SUMMARY_FR
            not_taken = await translator.put(f"{t_url}/text", json={"summary": SUMMARY_EN})
            assert not_taken.status_code == 409, not_taken.text
            taken = await translator.post(f"{t_url}/take")
            assert taken.status_code == 200 and taken.json()["state"] == "taken", taken.text
            # The coordinator sees the translator's load and the translation in progress.
            async with Browser(stack.web_url) as board:
                await board.sign_in("coordinator-1")
                directory = await board.get("/board/reviewers?language=fr")
                assert TRANSLATOR_NAME in directory.text, directory.text
                shown = await board.get("/board/translations")
                assert reference in shown.text and TRANSLATOR_NAME in shown.text, shown.text
                assert "The case, for the specialist" in shown.text and "Taken" in shown.text
            wrong = await translator.put(f"{t_url}/text", json={"opinion": OPINION})
            assert wrong.status_code == 422, wrong.text
            done = await translator.put(f"{t_url}/text", json={"summary": SUMMARY_EN})
            assert done.status_code == 200 and done.json()["state"] == "done", done.text
            again = await translator.put(f"{t_url}/text", json={"summary": SUMMARY_EN})
            assert again.status_code == 200, "the same submission again: no change"

            # The specialist reads the translation, accepts and answers in English.
            read = (await reviewer.get(t_url)).json()
            assert read["translated"]["summary"] == SUMMARY_EN and read["source"] is None
            ready = await browser.get(workspace)
            assert f"Translated from Français by {TRANSLATOR_NAME}." in ready.text, ready.text
            assert SUMMARY_EN in ready.text and f"{workspace}/accept" in ready.text
            assert (await reviewer.post(f"{url}/accept")).status_code == 200
            written = await reviewer.post(f"{url}/opinion", json=OPINION)
            assert written.status_code == 201, written.text
            await topics.caught_up()
            assert not topics.of(case_id, "avis.review.completed.v1"), "kept until translated"

            async def back() -> dict[str, Any] | None:
                items = (await translator.get("/v1/translations")).json()["items"]
                return next(
                    (t for t in items if t["case_id"] == case_id and t["way"] == "to_patient"),
                    None,
                )

            second = await eventually(back, timeout=30)
            assert (second["from_language"], second["to_language"]) == ("en", "fr")
            b_url = f"/v1/translations/{second['id']}"
            assert (await translator.get(b_url)).json()["source"]["opinion"] == OPINION
            assert (await translator.post(f"{b_url}/take")).status_code == 200
            released = await translator.put(f"{b_url}/text", json={"opinion": OPINION_FR})
            assert released.status_code == 200, released.text
            left = (await translator.get("/v1/translations")).json()["items"]
            assert all(t["case_id"] != case_id for t in left), "both done: none open"

            trail = await coordinator.get(f"/v1/cases/{case_id}/access-log")
            assert trail.status_code == 200, trail.text
            assert "translation" in str(trail.json())

            async def printed() -> bytes | None:
                response = await reader.get(
                    f"/v1/cases/{case_id}/report", headers={"Accept": "application/pdf"}
                )
                return response.content if response.status_code == 200 else None

            text = pdftotext(await eventually(printed, timeout=90))
            assert OPINION_FR["summary_for_patient"] in text
            assert OPINION["summary_for_patient"] not in text
            assert TRANSLATOR_NAME in text
            assert "a rédigé l'avis en anglais" in text, "the statement in French"
            assert "wrote the opinion in English" in text, "and in the specialist's language"
            issued = (await reader.get(f"/v1/cases/{case_id}/report")).json()
            assert issued["reviewer"]["translated_by"] == TRANSLATOR_NAME
            assert len(issued["reviewer"]["translation_text"]) == 2

        async def timeline() -> list[str] | None:
            response = await filer.get(f"/v1/cases/{case_id}")
            kinds = [e["kind"] for e in response.json()["timeline"]]
            ready = response.json()["status"] == "report_ready"
            return kinds if ready and kinds.count("translation_done") == 2 else None

        kinds = await eventually(timeline, timeout=60)
        assert kinds.count("translation_queued") == 2, kinds

        # The patient is told in French the review goes abroad, through a translator.
        await eventually(lambda: len(mailbox(email)) >= 1, timeout=60)
        told = [m for m in mailbox(email) if "traducteur" in body_text(m)]
        assert told and told[0]["Content-Language"] == "fr"
        # The translator, twice (each way), with the link to the translation, no clinical text.
        await eventually(lambda: len(mailbox(translator_email)) >= 2, timeout=60)
        await asyncio.sleep(1.0)  # nothing more arrives: one email per event
        to_translator = mailbox(translator_email)
        assert len(to_translator) == 2
        assert all(reference in str(m["Subject"]) for m in to_translator)
        links = [t for m in to_translator for t in body_text(m).split() if "/translations/" in t]
        assert sorted(t.rsplit("/", 1)[1] for t in links) == sorted([first["id"], second["id"]])
        assert all(SUMMARY_FR not in body_text(m) for m in to_translator)

        # The partner's webhooks: two queued and two done, each verified.
        await eventually(lambda: len(hooks.at("/avis", 204)) >= 4, timeout=60)
        await asyncio.sleep(1.0)
        bodies = [Webhook(secret).verify(r.body, r.headers) for r in hooks.at("/avis", 204)]
        assert sorted(b["type"] for b in bodies) == sorted(HOOK_TYPES * 2)
        assert {b["subject"] for b in bodies} == {case_id}
        assert {b["data"]["partner_reference"] for b in bodies} == {"INS-INT-1"}
        statuses = {(b["type"], b["data"]["way"]): b["data"]["status"] for b in bodies}
        assert statuses == {
            (HOOK_TYPES[0], "to_specialist"): "assigned",  # accepted once translated
            (HOOK_TYPES[1], "to_specialist"): "assigned",
            (HOOK_TYPES[0], "to_patient"): "in_review",
            (HOOK_TYPES[1], "to_patient"): "in_review",
        }, statuses

        await topics.caught_up()
        assert len(topics.of(case_id, "avis.review.completed.v1")) == 1
        haystacks = {"topics": record_bytes(topics.records)}
        for config in stack.configs:
            haystacks[config.database] = await stored_bytes(MONGO_URL, config.database)
        haystacks["webhooks"] = b"".join(r.body for r in hooks.received)
    logs = capfd.readouterr()
    haystacks["logs"] = (logs.out + logs.err).encode()
    assert_absent(
        {
            "summary": SUMMARY_FR,
            "translated summary": SUMMARY_EN,
            "translated opinion": OPINION_FR["risk_benefit"],
            "translator email": translator_email,
        },
        haystacks,
    )
