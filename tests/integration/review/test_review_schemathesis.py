"""Schemathesis against review's OpenAPI, served on loopback over the real broker and store:
every check, bounded in examples and time, with a valid coordinator token over the whole API,
a valid reviewer token over the reviewer's operations (assignments, second readings and their
rules, follow-up questions, the translations they read and the translators' directory they
are refused), a translator of the directory over
the translations, and a patient's, a partner's and a translator's token (roles review refuses
everywhere but a case's access trail, which is the case's patient's, the follow-up questions of
their own case, and a translator's translations) over the whole API. No answer may be a 5xx."""

import pytest

from avis.shared.security import mint_token
from tests.support.fuzz import assert_clean, fuzz
from tests.support.review import ReviewStack

pytestmark = pytest.mark.infra


async def test_openapi_fuzzing_as_a_coordinator_finds_no_server_error(stack: ReviewStack) -> None:
    # Something to find: reviewers, one of them with room.
    await stack.add_reviewer("fuzz-a", ["oncology"], ["fr"], capacity=1)
    await stack.add_reviewer("fuzz-b", ["oncology"], ["en"], capacity=0)
    run = await fuzz(
        stack.url, stack.token("coord-fuzz", "coordinator"), seed="20260301", max_seconds=30
    )
    assert_clean(run)


async def test_openapi_fuzzing_as_a_reviewer_finds_no_server_error(stack: ReviewStack) -> None:
    run = await fuzz(
        stack.url,
        stack.token("fuzz-a", "reviewer"),
        "--include-path-regex",
        "^/v1/(assignments|second-reading|follow-ups|translat)",
        seed="20260301",
        max_seconds=20,
    )
    assert_clean(run)


async def test_openapi_fuzzing_as_a_translator_finds_no_server_error(stack: ReviewStack) -> None:
    async with stack.client() as http:  # a translator of the directory, as a coordinator puts one
        put = await http.put(
            "/v1/translators/fuzz-tr",
            json={"display_name": "Fuzz translator", "languages": ["fr", "en"], "capacity": 2},
        )
        assert put.status_code == 200, put.text
    run = await fuzz(
        stack.url,
        stack.token("fuzz-tr", "translator"),
        "--include-path-regex",
        "^/v1/translat",
        seed="20260301",
        max_seconds=15,
    )
    assert_clean(run)


@pytest.mark.parametrize("role", ["patient", "partner", "translator"])
async def test_openapi_fuzzing_as_a_role_review_refuses_finds_no_server_error(
    stack: ReviewStack, role: str
) -> None:
    partner_id = "partner-fuzz" if role == "partner" else None
    token = mint_token(stack.settings, f"{role}-fuzz", role, partner_id=partner_id)  # type: ignore[arg-type]
    assert_clean(await fuzz(stack.url, token, seed="20260301", max_seconds=8))
