"""Nothing identifying or clinical leaves intake in clear: every byte it publishes for a case
(record values and headers), every line it logs and every span it records is searched for the
patient's name, email and clinical summary, in raw UTF-8, JSON escapes and other spellings."""

import json
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from avis.shared import topics
from avis.shared.events import ReportReady, ReviewAssigned
from avis.shared.observability import configure_tracing
from tests.support.intake import intake_settings, running_intake
from tests.support.privacy import assert_absent, found, record_bytes, span_bytes
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra

GIVEN = "Éloïse"
FAMILY = "Dupré-Nuñez"
EMAIL = "eloise.dupre-nunez@exemple.fr"
PHONE = "+33 6 98 76 54 32"
PHYSICIAN = {"name": "Dr Yannick Le Goff", "email": "yannick.legoff@cabinet.example"}
SUMMARY = "Douleur thoracique après l'opération du cœur; échographie à Lyon en février."


SECRETS = {
    "given name": GIVEN,
    "family name": FAMILY,
    "full name": f"{GIVEN} {FAMILY}",
    "email": EMAIL,
    "phone": PHONE,
    "summary": SUMMARY,
    "summary fragment": "Douleur thoracique",
    "physician's name": "Yannick Le Goff",
    "physician's email": "yannick.legoff@cabinet.example",
}


def test_the_search_finds_what_it_looks_for() -> None:
    """The scan below can fail: each spelling it knows is found where it is present."""
    haystacks = [
        json.dumps({"name": GIVEN}).encode(),
        json.dumps({"name": GIVEN}, ensure_ascii=False).encode(),
        GIVEN.upper().encode(),
        unicodedata.normalize("NFD", GIVEN).encode(),
        b"eloise",
        json.dumps({"s": SUMMARY}).encode(),
        json.dumps({"s": SUMMARY}).upper().encode(),
    ]
    for haystack in haystacks:
        assert found(haystack, SECRETS), haystack


async def test_nothing_identifying_is_published_logged_or_traced(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Standard-library loggers stay at the level the service configures (warnings): a debug
    # level would turn on the store driver's command log, which no deployment runs with.
    exporter = InMemorySpanExporter()
    configure_tracing("intake-privacy-test")  # installs the provider if no service did yet
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    settings = intake_settings(log_level="DEBUG", log_format="json")
    patient_in = {
        "given_name": GIVEN,
        "family_name": FAMILY,
        "birth_date": "1984-02-29",
        "email": EMAIL,
        "phone": PHONE,
        "preferred_language": "fr",
    }
    async with running_intake(settings) as intake:
        patient = intake.client()
        # a refused draft carrying the same data: its error must not echo or log it either
        refused = await patient.post(
            "/v1/cases",
            json=case_body(patient={**patient_in, "email": f"{GIVEN} {FAMILY}"}, specialty=SUMMARY),
        )
        assert refused.status_code == 422
        created = await patient.post(
            "/v1/cases",
            json=case_body(patient=patient_in, clinical_summary=SUMMARY, physician=PHYSICIAN),
        )
        assert created.status_code == 201, created.text
        case_id = created.json()["case_id"]
        name_as_file = f"{GIVEN} {FAMILY} - IRM.pdf"
        stored = await patient.post(
            f"/v1/cases/{case_id}/documents", **upload(pdf(), "other", name_as_file)
        )
        assert stored.status_code == 201, stored.text
        assert stored.json()["filename"] == name_as_file
        bad = await patient.post(
            f"/v1/cases/{case_id}/documents", **upload(b"GIF89a", "other", f"{FAMILY}.gif")
        )
        assert bad.status_code == 415
        submitted = await patient.post(
            f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_physician")
        )
        assert submitted.status_code == 200, submitted.text
        clinical = await patient.get(f"/v1/cases/{case_id}/clinical")
        assert clinical.json()["patient"]["family_name"] == FAMILY, "the owner reads it back"
        now = datetime.now(UTC)
        assigned = await intake.publish(
            ReviewAssigned(
                case_id=case_id,
                assignment_id="as-1",
                reviewer_id="reviewer-1",
                specialty="oncology",
                assigned_at=now,
                due_at=now + timedelta(days=7),
            )
        )
        ready = await intake.publish(
            ReportReady(
                case_id=case_id,
                report_id="r-1",
                version=1,
                languages=["fr"],
                formats=["pdf"],
                ready_at=now + timedelta(days=1),
                report_url="http://reports.test/r-1",
            )
        )
        await intake.consumed(assigned)
        await intake.consumed(ready)
        records = await tail.records_for(case_id, expect=1)
    captured = capfd.readouterr()

    published = record_bytes(records)
    logs = (captured.out + captured.err + caplog.text).encode()
    spans = span_bytes(exporter.get_finished_spans())
    # The haystacks hold what they should, so an empty capture cannot pass for a clean one.
    assert b"avis.case.submitted.v1" in published
    assert b'"physician":' in published, "the physician travels, sealed"
    assert case_id.encode() in logs and b"case submitted" in logs
    assert case_id.encode() in spans
    assert_absent(SECRETS, {"published": published, "logs": logs, "spans": spans})
