"""Reports' own OpenAPI, fuzzed with every reader role's valid token: no 5xx, no response that
breaks the schema, every check schemathesis has.

The run is bounded (examples per operation, and a deadline for the whole run). Each role runs
once over the whole API, after a report was issued for a case that role may read.
"""

import pytest

from avis.shared.security import Role
from tests.support.fuzz import assert_clean, fuzz
from tests.support.reports import ReportsStack

pytestmark = pytest.mark.infra


# What a schema cannot say, and so what "valid data" may still be answered with besides 2xx.
# Everything else the schema promises is checked with schemathesis' own expectations.
CONFIG = """
# A schema-valid case or report id names no report this caller may read: 404, the same answer
# for a report that does not exist and for one the caller may not see (who may read is decided
# by the case's events, not by anything in the request).
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404"]

# The same for a version number or a cursor past the last version; and an If-None-Match that
# names the PDF's current ETag is answered 304 (JSON and FHIR ignore it). A coordinator who
# leaves out the optional X-Avis-Reason is answered 428 (the header is required of that role
# only, which a schema cannot say).
[[operations]]
include-name = "GET /v1/reports/{report_id}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "304", "404", "428"]

[[operations]]
include-name = "GET /v1/cases/{case_id}/report"
checks.positive_data_acceptance.expected-statuses = ["2xx", "304", "404", "428"]

# The trail's FHIR export is for coordinators alone: 403 for every other role.
[[operations]]
include-name = "GET /v1/cases/{case_id}/access-log/fhir"
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "404"]
"""


@pytest.mark.parametrize("role", ["patient", "partner", "reviewer", "coordinator"])
async def test_openapi_fuzzing_finds_no_server_error_or_schema_break(
    stack: ReportsStack, role: Role
) -> None:
    case = stack.new_case()
    await stack.publish(stack.submitted(case), stack.completed(case))
    await stack.ready(case)
    sub = {"patient": case.patient_id, "reviewer": case.reviewer_id}.get(role) or f"{role}-fuzz"
    token = stack.token(sub, role, case.partner_id if role == "partner" else None)
    reason = {"X-Avis-Reason": "fuzzing"} if role == "coordinator" else {}
    partner = case.partner_id if role == "partner" else None
    async with stack.client(sub, role, partner, **reason) as reader:
        assert (await reader.get(f"/v1/cases/{case.case_id}/report")).status_code == 200
    run = await fuzz(stack.url, token, config=CONFIG, seed="20260310")
    assert_clean(run)
    report = run.report
    assert report["complete"] and report["exit_code"] == 0
    assert report["operations"]["tested"] == report["operations"]["total"] >= 3
    assert report["test_cases"]["generated"] >= 50, "the run actually exercised the API"
    assert report["failures"] == [] and report["errors"] == []
