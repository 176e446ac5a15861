"""Schemathesis against review's OpenAPI, served on loopback over the real broker and store:
every check, bounded in examples and time, with a valid coordinator token over the whole API,
a valid reviewer token over the reviewer's operations, and a patient's and a partner's token
(roles review refuses everywhere) over the whole API. No answer may be a 5xx."""

import asyncio
import os
import pathlib
import re
import sys

import pytest

from avis.shared.security import mint_token
from tests.support.basics import ROOT
from tests.support.review import ReviewStack

pytestmark = pytest.mark.infra

MAX_EXAMPLES = 25  # per operation and phase
SCHEMATHESIS = pathlib.Path(sys.executable).with_name("schemathesis")


async def run_schemathesis(
    stack: ReviewStack, token: str, max_seconds: int, *extra: str
) -> tuple[int, str]:
    """Run the CLI against the app; the app is served by this event loop, so never block it."""
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{stack.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(max_seconds),
        "--seed",
        "20260301",
        "--request-timeout",
        "10",
        "--no-color",
        *extra,
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=max_seconds + 60)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


def assert_clean(code: int, output: str) -> None:
    summary = output[output.rfind("SUMMARY") :]
    print(summary)
    assert not re.search(r"\b5\d\d\b.*(Server error|Internal)", output), output[-6000:]
    assert "Server error" not in output, output[-6000:]
    assert code == 0, output[-6000:]
    assert re.search(r"Test cases:\s+\d+ generated", summary), summary


async def test_openapi_fuzzing_as_a_coordinator_finds_no_server_error(stack: ReviewStack) -> None:
    # Something to find: reviewers, one of them with room.
    await stack.add_reviewer("fuzz-a", ["oncology"], ["fr"], capacity=1)
    await stack.add_reviewer("fuzz-b", ["oncology"], ["en"], capacity=0)
    code, output = await run_schemathesis(
        stack, stack.token("coord-fuzz", "coordinator"), max_seconds=40
    )
    assert_clean(code, output)


async def test_openapi_fuzzing_as_a_reviewer_finds_no_server_error(stack: ReviewStack) -> None:
    code, output = await run_schemathesis(
        stack,
        stack.token("fuzz-a", "reviewer"),
        20,
        "--include-path-regex",
        "^/v1/assignments",
    )
    assert_clean(code, output)


@pytest.mark.parametrize("role", ["patient", "partner"])
async def test_openapi_fuzzing_as_a_role_review_refuses_finds_no_server_error(
    stack: ReviewStack, role: str
) -> None:
    partner_id = "partner-fuzz" if role == "partner" else None
    token = mint_token(stack.settings, f"{role}-fuzz", role, partner_id=partner_id)  # type: ignore[arg-type]
    code, output = await run_schemathesis(stack, token, 8)
    assert_clean(code, output)
