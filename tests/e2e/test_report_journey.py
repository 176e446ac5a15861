"""The whole journey to the report, on loopback over the real broker and store: a case drafted,
documented and submitted through intake is matched and answered in review, and reports issues
its medical feedback report in the patient's language. The PDF is turned into page images and
text with poppler (`pdftoppm`, `pdftotext`), the FHIR document is validated and checked against
the document rules, a correction gives version 2 and keeps version 1, and intake's timeline
shows the report."""

import pathlib
import subprocess
from typing import Any

import httpx
import pytest

from avis.reports.i18n import read_catalogue
from avis.reports.main import create_app as create_reports_app
from avis.review.main import create_app as create_review_app
from avis.shared.events import Language
from avis.shared.security import Role
from avis.shared.topics import CASE_SUBMITTED, REVIEW_COMPLETED
from tests.support.basics import eventually, serve, skip_history, unique
from tests.support.fhir import violations
from tests.support.intake import running_intake
from tests.support.reports import reports_settings
from tests.support.review import bearer_client, review_settings
from tests.support.samples import case_body, consent_body, pdf, upload

pytestmark = pytest.mark.infra

OPINIONS = {
    Language.FR: {
        "diagnosis": {
            "assessment": "confirmed",
            "explanation": "Les caractéristiques du nodule et la biopsie concordent.",
        },
        "imaging_and_lab_review": "Le scanner et le compte rendu de biopsie sont cohérents.",
        "alternative_pathways": "Radiothérapie stéréotaxique si la chirurgie est refusée.",
        "risk_benefit": "La résection offre le meilleur contrôle pour un risque acceptable.",
        "further_tests": "Un TEP-scanner avant l’intervention.",
        "summary_for_patient": "Le diagnostic est confirmé et le projet de soins est adapté.",
    },
    Language.EN: {
        "diagnosis": {"assessment": "confirmed", "explanation": "The nodule's features fit."},
        "imaging_and_lab_review": "CT and biopsy report agree.",
        "alternative_pathways": "Stereotactic radiotherapy if surgery is declined.",
        "risk_benefit": "Resection offers the best control for an acceptable risk.",
        "further_tests": "PET-CT before surgery.",
        "summary_for_patient": "The diagnosis is confirmed and the plan is sound.",
    },
}


def headings(language: Language) -> set[str]:
    """The headings and labels a report of `language` prints (from its catalogue)."""
    prefixes = ("report.", "heading.", "label.", "footer.confidential")
    return {
        str(m.string)
        for m in read_catalogue(language)
        if m.id and str(m.id).startswith(prefixes) and "%(" not in str(m.string)
    }


def pdftotext(content: bytes) -> str:
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-", "-"], input=content, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")


def pdftoppm(content: bytes, directory: pathlib.Path) -> list[pathlib.Path]:
    source = directory / "report.pdf"
    source.write_bytes(content)
    done = subprocess.run(
        ["pdftoppm", "-r", "50", "-png", str(source), str(directory / "page")], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    return sorted(directory.glob("page-*.png"))


@pytest.mark.parametrize("language", [Language.FR, Language.EN])
async def test_from_draft_to_the_report_and_its_correction(
    language: Language, tmp_path: pathlib.Path
) -> None:
    review_config = review_settings()
    reports_config = reports_settings()
    await skip_history(f"avis-{review_config.service_name}", [CASE_SUBMITTED])
    await skip_history(f"avis-{reports_config.service_name}", [CASE_SUBMITTED, REVIEW_COMPLETED])
    review_app = create_review_app(review_config)
    reports_app = create_reports_app(reports_config)

    def client(url: str, sub: str, role: Role) -> httpx.AsyncClient:
        return bearer_client(review_config, url, sub, role)

    async with (
        running_intake() as intake,
        serve(review_app) as review_url,
        serve(reports_app) as reports_url,
    ):
        await eventually(lambda: review_app.state.runtime.kafka_started, timeout=60)
        await eventually(lambda: reports_app.state.runtime.kafka_started, timeout=60)
        reviewer_id = unique("onc")
        async with client(review_url, "coord-e2e", "coordinator") as coordinator:
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

        # The patient drafts, documents and submits the case through intake.
        patient_at_intake = intake.client(role="patient")
        patient_sub: str = patient_at_intake.sub  # type: ignore[attr-defined]
        person = case_body()["patient"] | {"preferred_language": language.value}
        draft = await patient_at_intake.post(
            "/v1/cases", json=case_body(patient=person, specialty="oncology")
        )
        assert draft.status_code == 201, draft.text
        case_id = draft.json()["case_id"]
        stored = await patient_at_intake.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
        assert stored.status_code == 201, stored.text
        submitted = await patient_at_intake.post(f"/v1/cases/{case_id}/submit", json=consent_body())
        assert submitted.status_code == 200, submitted.text

        # The specialist accepts and answers in review.
        async with client(review_url, reviewer_id, "reviewer") as reviewer:

            async def assignment() -> dict[str, Any] | None:
                items = (await reviewer.get("/v1/assignments")).json()["items"]
                return next((a for a in items if a["case_id"] == case_id), None)

            url = f"/v1/assignments/{(await eventually(assignment, timeout=60))['id']}"
            assert (await reviewer.post(f"{url}/accept")).status_code == 200
            answered = await reviewer.post(f"{url}/opinion", json=OPINIONS[language])
            assert answered.status_code == 201, answered.text

        # The patient reads the report.
        async with client(reports_url, patient_sub, "patient") as patient:

            async def latest() -> dict[str, Any] | None:
                response = await patient.get(f"/v1/cases/{case_id}/report")
                return response.json() if response.status_code == 200 else None

            report = await eventually(latest, timeout=60)
            assert report["version"] == 1 and report["language"] == language.value
            assert report["patient"]["name"] == "Camille Martin"
            report_url = f"/v1/reports/{report['report_id']}"

            printed = await patient.get(report_url, headers={"Accept": "application/pdf"})
            assert printed.status_code == 200, printed.text
            pages = pdftoppm(printed.content, tmp_path)
            assert pages and all(p.read_bytes().startswith(b"\x89PNG") for p in pages)
            text = " ".join(pdftotext(printed.content).split())
            for section in report["sections"]:
                assert section["heading"] in text
            for words in [report["title"], report["disclaimer"]["heading"], report["reference"]]:
                assert words in text
            assert "Camille Martin" in text and report["patient"]["birth_date_text"] in text
            other = Language.EN if language is Language.FR else Language.FR
            mine = headings(language)
            # A heading of the other language found only inside one of ours proves nothing
            # ("Patient" in "Patient(e)").
            theirs = {h for h in headings(other) if not any(h in m for m in mine)}
            assert len(theirs) >= 15, theirs
            printed_other = sorted(h for h in theirs if h in text)
            assert not printed_other, f"{other.value} headings in a {language.value} report"
            assert headings(language) - {h for h in headings(language) if h in text} <= {
                # Printed only on a correction.
                *(h for h in headings(language) if "remplace" in h or "replaces" in h)
            }

            document = await patient.get(report_url, headers={"Accept": "application/fhir+json"})
            assert document.status_code == 200
            assert violations(document.json()) == []

        # Intake's timeline shows the report.
        async def intake_case(kind_count: int) -> dict[str, Any] | None:
            case = (await patient_at_intake.get(f"/v1/cases/{case_id}")).json()
            kinds = [e["kind"] for e in case["timeline"]]
            return case if kinds.count("report_ready") >= kind_count else None

        case = await eventually(lambda: intake_case(1), timeout=60)
        assert case["status"] == "report_ready"

        # A correction gives version 2 and keeps version 1.
        corrected = OPINIONS[language] | {"further_tests": "PET-CT, then a lung function test."}
        async with client(review_url, reviewer_id, "reviewer") as reviewer:
            again = await reviewer.put(f"{url}/opinion", json=corrected)
            assert again.status_code == 200, again.text
        async with client(reports_url, patient_sub, "patient") as patient:

            async def second() -> dict[str, Any] | None:
                found = await latest()
                return found if found and found["version"] == 2 else None

            v2 = await eventually(second, timeout=60)
            assert v2["sections"][4]["text"] == "PET-CT, then a lung function test."
            v1 = (await patient.get(report_url, params={"version": 1})).json()
            assert v1["version"] == 1 and v1["sections"][4]["text"] != v2["sections"][4]["text"]
            listing = (await patient.get(f"/v1/cases/{case_id}/reports")).json()
            assert [v["version"] for v in listing["items"]] == [2, 1]
            printed_v2 = await patient.get(
                report_url, params={"version": 2}, headers={"Accept": "application/pdf"}
            )
            assert printed_v2.content != printed.content
        case = await eventually(lambda: intake_case(2), timeout=60)
        assert case["status"] == "report_ready"
