"""The board's page of the physicians' FHIR endpoints, against the services and web as processes
on the test stack, notify posting one institution's copies (`FHIR_INSTITUTION`) to an endpoint
this test serves: the page lists the endpoint enabled; once the endpoint has answered 410 Gone
it shows it disabled, with the failure and the posts that wait for it, never its URL; the
coordinator's button enables it again and the waiting post goes at once. A patient and a
specialist can neither open the page nor post its form, and an institution notify does not know
is said in plain words."""

import re

import pytest

from tests.support.basics import unique
from tests.support.browser import add_reviewer, eventually
from tests.support.notify import HookReceiver, hook_receiver
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload
from tests.support.stack import ServiceStack
from tests.support.web import (
    FHIR_INSTITUTION,
    Browser,
    fhir_port,
    reviewer_writes_the_opinion,
    signed_in,
)

pytestmark = pytest.mark.infra

PAGE = "/board/fhir-endpoints"
ENABLE = f"{PAGE}/{FHIR_INSTITUTION}/enable"


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


async def answered_for_the_physician(stack: ServiceStack) -> str:
    """A case whose patient consented to send the report to their physician at the
    institution, answered by a specialist (its report follows); its id."""
    patient = case_body()["patient"] | {"email": f"{unique('fhir')}@example.org"}
    physician = {
        "name": "Dr Lise Moreau",
        "institution_code": FHIR_INSTITUTION,
        "email": f"{unique('dr')}@chu.example",
    }
    async with stack.client("intake", "patient-1", "patient") as intake:
        created = await intake.post(
            "/v1/cases", json=case_body(patient=patient, physician=physician)
        )
        assert created.status_code == 201, created.text
        case_id = str(created.json()["case_id"])
        added = await intake.post(f"/v1/cases/{case_id}/documents", **upload(pdf(unique("ct"))))
        assert added.status_code == 201, added.text
        sent = await intake.post(
            f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_physician")
        )
        assert sent.status_code == 200, sent.text
    await reviewer_writes_the_opinion(stack, case_id, OPINION)
    return case_id


def shown(browser: Browser) -> str:
    """The text of the browser's current page."""
    assert browser.page is not None
    return browser.page.text


async def row(browser: Browser) -> list[str]:
    """The cells of the institution's row on the page, as a coordinator sees it now."""
    page = await browser.get(PAGE)
    assert page.status_code == 200, page.text
    found = re.search(rf"<tr>\s*<td><code[^>]*>{FHIR_INSTITUTION}</code>.*?</tr>", page.text, re.S)
    assert found, page.text
    cells = re.findall(r"<td>(.*?)</td>", found.group(0), re.S)
    return [re.sub(r"\s+", " ", cell).strip() for cell in cells]


async def test_a_disabled_endpoint_is_shown_and_enabled_again_by_a_coordinator(
    stack: ServiceStack,
) -> None:
    await add_reviewer(stack, "oncology", "fr", capacity=5)  # who answers the cases
    async with (
        hook_receiver(fhir_port(stack)) as (receiver, port),
        signed_in(stack, "coordinator-1") as coordinator,
    ):
        receiver.answer["/fhir"] = 410
        assert (await row(coordinator))[1:] == ["Enabled", "0", "0", "—"]
        assert f'href="{PAGE}" aria-current="page"' in shown(coordinator)

        # The endpoint answers 410 Gone: disabled at once, the case's copy not posted again.
        await answered_for_the_physician(stack)

        async def disabled() -> list[str] | None:
            cells = await row(coordinator)
            return cells if cells[1].startswith("<strong") else None

        _, state, failures, waiting, action = await eventually(disabled, "disabled", stack)
        assert "Disabled" in state and "410" in state, state
        assert (failures, waiting) == ("1", "0")
        assert "Enable again" in action
        assert f"127.0.0.1:{port}" not in shown(coordinator), "never the endpoint's URL"

        # The next case's copy waits for the endpoint, posting nothing.
        await answered_for_the_physician(stack)

        async def one_waits() -> list[str] | None:
            cells = await row(coordinator)
            return cells if cells[3] == "1" else None

        await eventually(one_waits, "a post waiting", stack)
        assert len(receiver.at("/fhir")) == 1, "a disabled endpoint gets no post"

        # The endpoint is back: enabled again from the page, the waiting post goes at once.
        receiver.answer.pop("/fhir")
        done = await coordinator.submit(ENABLE, {})
        assert done.url.path == PAGE, done.url
        assert "The endpoint is enabled again" in done.text
        assert (await row(coordinator))[1:] == ["Enabled", "0", "0", "—"]
        await eventually(lambda: _posted(receiver), "the waiting post", stack)

        # An institution notify does not know, or a code it does not take: plain words.
        unknown = await coordinator.submit(f"{PAGE}/999999999/enable", {})
        assert unknown.status_code == 200, unknown.text
        assert "No FHIR endpoint is set for this institution." in unknown.text
        malformed = await coordinator.submit(f"{PAGE}/%20bad%20code/enable", {})
        assert 400 <= malformed.status_code < 500, malformed.text
        assert "<html" in malformed.text


async def _posted(receiver: HookReceiver) -> bool:
    return bool(receiver.at("/fhir", 204))


@pytest.mark.parametrize("identity", ["patient-1", "reviewer-1"])
async def test_only_a_coordinator_opens_the_page_or_posts_its_form(
    stack: ServiceStack, identity: str
) -> None:
    async with signed_in(stack, identity) as other:
        refused = await other.get(PAGE)
        assert refused.status_code == 403, refused.text
        assert "You are not allowed to do this." in refused.text
        assert FHIR_INSTITUTION not in refused.text
        await other.get("/")  # a page of theirs, whose forms carry their CSRF token
        posted = await other.submit(ENABLE, {})
        assert posted.status_code == 403, posted.text
        assert "You are not allowed to do this." in posted.text
