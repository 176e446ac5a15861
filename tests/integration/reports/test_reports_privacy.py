"""Nothing identifying or clinical leaves reports in clear: every byte it publishes for a case
(record values and headers), every line it logs and every span it records while following the
case, composing, rendering and serving its report is searched for the patient's name, birth
date, email and the opinion's text, in raw UTF-8, JSON escapes and other spellings."""

from datetime import date

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from avis.shared.events import Language, PatientContact
from avis.shared.observability import configure_tracing
from tests.support.privacy import assert_absent, record_bytes, span_bytes
from tests.support.reports import reports_settings, running_reports

pytestmark = pytest.mark.infra

GIVEN = "Éloïse"
FAMILY = "Dupré-Nuñez"
EMAIL = "eloise.dupre-nunez@exemple.fr"
BIRTH = date(1984, 2, 29)
EXPLANATION = "Douleur thoracique après l'opération du cœur; échographie à Lyon en février."
SUMMARY = "Votre cœur va bien : la douleur vient de la cicatrice."


SECRETS = {
    "given name": GIVEN,
    "family name": FAMILY,
    "full name": f"{GIVEN} {FAMILY}",
    "email": EMAIL,
    "birth date": BIRTH.isoformat(),
    "birth date (fr)": "29 février 1984",
    "explanation": EXPLANATION,
    "explanation fragment": "Douleur thoracique",
    "summary": SUMMARY,
    "summary fragment": "la douleur vient de la cicatrice",
}


async def test_nothing_identifying_or_clinical_is_published_logged_or_traced(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("reports-privacy-test")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = reports_settings(log_level="DEBUG", log_format="json")
    async with running_reports(settings) as stack:
        case = stack.new_case(Language.FR)
        case.contact = PatientContact(
            given_name=GIVEN,
            family_name=FAMILY,
            email=EMAIL,
            birth_date=BIRTH,
            preferred_language=Language.FR,
        )
        case.opinion = {
            **case.opinion,
            "diagnosis": {"assessment": "revised", "explanation": EXPLANATION},
            "summary_for_patient": SUMMARY,
        }
        # The opinion first (parked), then the case, then a correction: every path runs.
        await stack.publish(stack.completed(case))
        await stack.publish(stack.submitted(case))
        await stack.ready(case)
        await stack.publish(stack.completed(case, 2, summary_for_patient=f"{SUMMARY} Bis."))
        ready = await stack.ready(case, 2)
        async with stack.patient(case) as patient:
            url = f"/v1/cases/{case.case_id}/report"
            served = await patient.get(url)
            assert served.json()["patient"]["family_name"] == FAMILY, "the owner reads it back"
            for accept in ("application/pdf", "application/fhir+json", "text/html"):
                await patient.get(url, headers={"Accept": accept})
        async with stack.client("stranger", "patient") as stranger:
            assert (await stranger.get(url)).status_code == 404
        records = stack.log.of(case.case_id)
    captured = capfd.readouterr()

    published = record_bytes(records)
    logs = (captured.out + captured.err + caplog.text).encode()
    spans = span_bytes(exporter.get_finished_spans())
    # The haystacks hold what they should, so an empty capture cannot pass for a clean one.
    assert len(ready) == 2 and b"avis.report.ready.v1" in published
    assert case.case_id.encode() in logs and b"report issued" in logs
    assert b"report rendered" in logs
    assert b"reports.issue" in spans and case.case_id.encode() in spans
    assert_absent(SECRETS, {"published": published, "logs": logs, "spans": spans})
