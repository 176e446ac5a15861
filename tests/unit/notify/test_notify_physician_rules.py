"""The physician's copy as pure rules: which emails also go to the treating physician, and the
link that opens the report for them."""

import pytest

from avis.notify.models import Template
from avis.notify.rules import fhir_endpoint, physician_copy, physician_link


@pytest.mark.parametrize("template", [*Template, None])
def test_only_a_report_goes_to_the_physician_and_only_with_one(template: Template | None) -> None:
    report = template in (Template.REPORT_READY, Template.REPORT_UPDATED)
    assert physician_copy(template, has_physician=True) == report
    assert not physician_copy(template, has_physician=False)


def test_the_link_is_on_the_reports_service_that_announced_the_report() -> None:
    link = physician_link(
        "https://reports.avis.example/v1/reports/r-1?version=2", "case/1", "s3cr3t_-x"
    )
    assert link == "https://reports.avis.example/v1/cases/case%2F1/report/physician/s3cr3t_-x"


def test_an_institution_with_an_endpoint_takes_the_fhir_document() -> None:
    endpoints = {"290000017": "https://fhir.chu.example/Bundle"}
    assert fhir_endpoint(endpoints, "290000017") == "https://fhir.chu.example/Bundle"
    assert fhir_endpoint(endpoints, "750712184") is None
    assert fhir_endpoint(endpoints, None) is None
