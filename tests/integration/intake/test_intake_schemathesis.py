"""Intake's own OpenAPI, fuzzed with valid tokens: no 5xx, no response that breaks the schema.

The run is bounded (examples per operation, and a deadline for the whole run). Each role that
may write runs once: a patient and a partner create drafts, upload random bytes, submit and
withdraw, so the stateful phase reaches past the 404 of random case ids. A reviewer and a
coordinator, who only read (and are refused every write), run with fewer examples.
"""

import asyncio
import json
import pathlib
import sys

import pytest

from tests.conftest import ROOT, unique
from tests.integration.intake.intake_helpers import Intake

pytestmark = pytest.mark.infra

MAX_EXAMPLES = 25
DEADLINE_SECONDS = 150
SCHEMATHESIS = pathlib.Path(sys.executable).with_name("schemathesis")

# What a schema cannot say, and so what "valid data" may still be refused for. Everything
# else the schema promises is checked with schemathesis' own expectations.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409"]

# A record's bytes must be one of five formats (and agree with the part's Content-Type) and
# fit the size limit: random bytes rightly get 415 or 413.
[[operations]]
include-name = "POST /v1/cases/{case_id}/documents"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "401", "403", "404", "409", "413", "415", "422",
]

# Dates the schema can only type: a birth date in the future, consent given in the future.
[[operations]]
include-name = "POST /v1/cases"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-name = "POST /v1/cases/{case_id}/submit"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

# X-Avis-Reason is required of coordinators only (428 without it), which a schema cannot say.
[[operations]]
include-name = "GET /v1/cases/{case_id}/clinical"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "428"]

[[operations]]
include-name = "GET /v1/cases/{case_id}/documents/{document_id}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "428"]
"""


async def fuzz(
    url: str,
    token: str,
    workdir: pathlib.Path,
    config_text: str = CONFIG,
    seed: str = "20260101",
    max_examples: int = MAX_EXAMPLES,
) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    """Schemathesis with every check over a service's own OpenAPI, one worker, bounded;
    returns its exit code, its output and its JSON report."""
    config = workdir / "schemathesis.toml"
    config.write_text(config_text)
    report = workdir / "report.json"
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        seed,
        # One worker: hypothesis parses lambda sources with `ast`, which CPython 3.11 does not
        # do safely from several threads at once (a spurious SystemError).
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    summary = json.loads(report.read_text()) if report.exists() else {}
    return process.returncode or 0, out.decode(errors="replace"), summary


@pytest.mark.parametrize("role", ["patient", "partner"])
async def test_openapi_fuzzing_finds_no_server_error_or_schema_break(
    intake: Intake, role: str, tmp_path: pathlib.Path
) -> None:
    partner_id = unique("partner") if role == "partner" else None
    token = intake.token(unique(role), role, partner_id)  # type: ignore[arg-type]
    code, output, report = await fuzz(intake.url, token, tmp_path)
    summary = output[output.find("=== SUMMARY") :] if "=== SUMMARY" in output else output[-3000:]
    print(summary)
    assert code == 0, output[-8000:]
    assert report["complete"] and report["exit_code"] == 0
    assert report["operations"]["tested"] == report["operations"]["total"] >= 9
    assert report["test_cases"]["generated"] >= 200, "the run actually exercised the API"
    assert report["failures"] == [] and report["errors"] == []


@pytest.mark.parametrize("role", ["reviewer", "coordinator"])
async def test_openapi_fuzzing_as_a_reader_finds_no_server_error_or_schema_break(
    intake: Intake, role: str, tmp_path: pathlib.Path
) -> None:
    token = intake.token(unique(role), role)  # type: ignore[arg-type]
    code, output, report = await fuzz(intake.url, token, tmp_path, CONFIG, max_examples=5)
    summary = output[output.find("=== SUMMARY") :] if "=== SUMMARY" in output else output[-3000:]
    print(summary)
    assert code == 0, output[-8000:]
    assert report["complete"] and report["exit_code"] == 0
    assert report["operations"]["tested"] == report["operations"]["total"] >= 9
    assert report["failures"] == [] and report["errors"] == []
