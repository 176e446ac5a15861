"""Schemathesis against web's pages on the test stack (the services and web as processes), with
every check, for every role web signs in (patient, reviewer, coordinator, translator, partner)
and for no one signed in: the physician's link, the claim link, the care pathway's pages
(follow-up questions, translations, second readings) and the board's page of the physicians'
FHIR endpoints. No answer may be a 5xx or break the document.

Limits. Web serves its pages outside its OpenAPI document (`/openapi.json` holds only its
operational doors: health, metrics, AsyncAPI), so the document fuzzed here is built from the
pages' own routes (`tests/support/web.pages_schema`): it describes their parameters and form
fields exactly, but not their answers, which are pages, any status, in HTML (the physician's
link: the report's PDF). So the checks on the answers' schemas and statuses hold only as
"a page, in HTML or PDF, not a server error"; the other checks (server errors, rejection of
invalid input, acceptance of valid input, unsupported methods) hold in full. Forms are posted
without the page's CSRF token, so a fuzzed post is refused (403) before it changes anything:
the forms' own paths are the browser tests' (test_web_journey.py and the others).

An invalid id on a page names no page: it gets 404 for anyone, also before a sign-in is asked
for (a person not signed in is otherwise sent to sign in first), so `negative_data_rejection`
holds too."""

import json
import pathlib

import pytest

from avis.web import claim, fhir_endpoints, followups, physician, second_reading, translation
from tests.support.fuzz import assert_clean, fuzz
from tests.support.stack import ServiceStack
from tests.support.web import pages_schema, signed_in

pytestmark = pytest.mark.infra

IDENTITIES = ("patient-1", "rev-cardio-1", "coordinator-1", "translator-1", "partner-1", None)


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


async def test_the_pathway_pages_fuzzed_for_every_role_find_no_server_error(
    stack: ServiceStack, tmp_path: pathlib.Path
) -> None:
    schema = tmp_path / "pages.json"
    pages = (physician, claim, followups, translation, second_reading, fhir_endpoints)
    schema.write_text(json.dumps(pages_schema(*(module.router for module in pages))))
    url = stack.urls["web"]
    for identity in IDENTITIES:
        cookie: list[str] = []
        if identity is not None:
            async with signed_in(stack, identity) as browser:
                jar = "; ".join(f"{k}={v}" for k, v in browser.http.cookies.items())
            cookie = ["--header", f"Cookie: {jar}"]
        run = await fuzz(
            url,
            "",
            *cookie,
            schema=schema,
            seed="20261204",
            max_seconds=10,
        )
        assert_clean(run)
