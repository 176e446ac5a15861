"""Intake's own OpenAPI, fuzzed with valid tokens: no 5xx, no response that breaks the schema.

The run is bounded (examples per operation, and a deadline for the whole run). Each role that
may write runs once: a patient and a partner create drafts, upload random bytes, submit and
withdraw, so the stateful phase reaches past the 404 of random case ids. A reviewer and a
coordinator, who only read (and are refused every write), run with fewer examples.
"""

import pytest

from tests.support.basics import unique
from tests.support.fuzz import assert_clean, fuzz
from tests.support.intake import Intake

pytestmark = pytest.mark.infra

# What a schema cannot say, and so what "valid data" may still be refused for. Everything
# else the schema promises is checked with schemathesis' own expectations. The stateful phase
# erases the cases it made: from then on, what would open or change one answers 410.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "410"]

[checks.negative_data_rejection]
expected-statuses = [
  "400", "401", "403", "404", "405", "406", "409", "410", "415", "422", "428", "429", "5xx",
]

# A record's bytes must be one of five formats (and agree with the part's Content-Type) and
# fit the size limit: random bytes rightly get 415 or 413.
[[operations]]
include-name = "POST /v1/cases/{case_id}/documents"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "409", "410", "413", "415", "422",
]

# Dates the schema can only type: a birth date in the future, consent given in the future.
[[operations]]
include-name = "POST /v1/cases"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "409", "410", "422",
]

[[operations]]
include-name = "POST /v1/cases/{case_id}/submit"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "409", "410", "422",
]

# X-Avis-Reason is required of coordinators only (428 without it), which a schema cannot say.
[[operations]]
include-name = "GET /v1/cases/{case_id}/clinical"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "409", "410", "428",
]

[[operations]]
include-name = "GET /v1/cases/{case_id}/documents/{document_id}"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "409", "410", "428",
]

"""
# A claim without the case's one-time secret (which only the patient's email holds) is the 404
# of a case that does not exist, even just after the case was created: no oracle. So the run with
# every check, links included, leaves the claim out, and the claim gets a run of its own (with no
# operation to link from, so every check still applies to it).
CLAIM = "POST /v1/cases/{case_id}/claim"


@pytest.mark.parametrize("role", ["patient", "partner"])
async def test_openapi_fuzzing_finds_no_server_error_or_schema_break(
    intake: Intake, role: str
) -> None:
    partner_id = unique("partner") if role == "partner" else None
    token = intake.token(unique(role), role, partner_id)  # type: ignore[arg-type]
    run = await fuzz(intake.url, token, "--exclude-name", CLAIM, config=CONFIG)
    assert_clean(run)
    report = run.report
    assert report["complete"] and report["exit_code"] == 0
    operations = report["operations"]
    assert operations["tested"] == operations["total"] - 1 >= 9, "every operation but the claim"
    assert report["test_cases"]["generated"] >= 200, "the run actually exercised the API"
    assert report["failures"] == [] and report["errors"] == []
    claim = await fuzz(intake.url, token, "--include-name", CLAIM, config=CONFIG)
    assert_clean(claim)
    assert claim.report["operations"]["tested"] == 1
    assert claim.report["failures"] == [] and claim.report["errors"] == []


@pytest.mark.parametrize("role", ["reviewer", "coordinator"])
async def test_openapi_fuzzing_as_a_reader_finds_no_server_error_or_schema_break(
    intake: Intake, role: str
) -> None:
    token = intake.token(unique(role), role)  # type: ignore[arg-type]
    run = await fuzz(intake.url, token, config=CONFIG, max_examples=5)
    assert_clean(run)
    report = run.report
    assert report["complete"] and report["exit_code"] == 0
    assert report["operations"]["tested"] == report["operations"]["total"] >= 9
    assert report["failures"] == [] and report["errors"] == []
