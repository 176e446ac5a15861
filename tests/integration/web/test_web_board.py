"""The coordinator's board and the live status over HTTP, against the four services and web as
processes on the test stack: a declined case waits in the queue with the matcher's reasons and
is given by hand; a clinical read needs a reason, which lands in the case's access trail; the
live stream pushes a case's new timeline to its patient and to nobody else; and an emailed
case link opened by another signed-in person is refused."""

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.basics import unique
from tests.support.browser import (
    add_reviewer,
    assignments_of,
    declined_case,
    eventually,
    file_case,
)
from tests.support.notify import body_text, mailbox
from tests.support.stack import ServiceStack
from tests.support.web import signed_in

pytestmark = pytest.mark.infra


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


async def test_a_declined_case_is_given_by_hand_with_the_matchers_reasons(
    stack: ServiceStack,
) -> None:
    case_id, reference, spare = await declined_case(stack)
    async with signed_in(stack, "coordinator-1") as browser:
        board = browser.page
        assert board is not None and board.url.path == "/board", board
        assert reference in board.text and "Waiting for a specialist" in board.text
        page = await browser.get(f"/board/cases/{case_id}")
        assert "already declined this case" in page.text
        assert "Declined: outside their expertise." in page.text
        assert "at capacity" in page.text and f'value="{spare}"' in page.text
        done = await browser.submit(f"/board/cases/{case_id}/assign", {"reviewer_id": spare})
        assert "The case was given to the specialist." in done.text
        assert "given by a coordinator" in done.text  # the new round's rule
    rounds = await assignments_of(stack, case_id)
    assert {(a["round"], a["reviewer_id"], a["status"]) for a in rounds} >= {(2, spare, "assigned")}


async def test_a_clinical_read_asks_for_a_reason_that_the_access_log_keeps(
    stack: ServiceStack,
) -> None:
    case_id, _ = await file_case(stack, specialty="dermatology")
    async with signed_in(stack, "coordinator-1") as browser:
        await browser.get(f"/board/cases/{case_id}")
        refused = await browser.submit(f"/board/cases/{case_id}/clinical", {"reason": " "})
        assert "Please say why you need to read the clinical content." in refused.text
        reason = unique("Vérification du tri")  # accents: a header's text in UTF-8
        read = await browser.submit(f"/board/cases/{case_id}/clinical", {"reason": reason})
        assert read.status_code == 200 and "Nodule found on a scan" in read.text
        assert read.headers["cache-control"] == "no-store"
        page = await browser.get(f"/board/cases/{case_id}")
        trail = page.text.split("Who looked at this case", 1)[1]
        assert "read the medical content" in trail and reason in trail


async def events_of(stream: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """The server-sent events of a stream: (name, data)."""
    name, data = "", []
    async for line in stream.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and name:
            yield name, "\n".join(data)
            name, data = "", []


async def test_the_live_stream_pushes_a_case_to_its_patient_and_to_nobody_else(
    stack: ServiceStack,
) -> None:
    # Nobody reads English nephrology yet: the case waits until a specialist joins.
    case_id, _ = await file_case(stack, specialty="nephrology", language="en")
    async with signed_in(stack, "reviewer-1") as other, signed_in(stack, "partner-1") as third:
        for browser in (other, third):
            refused = await browser.get(f"/cases/{case_id}/live")
            assert refused.status_code == 404, refused.text
            assert "text/event-stream" not in refused.headers["content-type"]
    async with (
        signed_in(stack, "patient-1") as patient,
        patient.http.stream("GET", f"/cases/{case_id}/live") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        await add_reviewer(stack, "nephrology", "en", capacity=5)

        async def first_timeline() -> str:
            async for name, data in events_of(stream):
                if name == "timeline":
                    return data
            raise AssertionError("the stream ended")

        fragment = await asyncio.wait_for(first_timeline(), 60)
    assert "Given to a specialist" in fragment and 'id="timeline"' in fragment


async def test_an_emailed_case_link_opened_by_another_signed_in_person_is_refused(
    stack: ServiceStack,
) -> None:
    email = f"{unique('link')}@example.org"
    case_id, _ = await file_case(stack, specialty="dermatology", email=email)

    async def received() -> str | None:
        mails = mailbox(email)
        return body_text(mails[0]) if mails else None

    text = await eventually(received, "the first email", stack)
    # The email's link opens the case's page on web itself (AVIS_NOTIFY_PAGES_URL).
    found = re.search(rf"{re.escape(stack.urls['web'])}(/cases/[0-9a-f-]{{36}})", text)
    assert found and found.group(1) == f"/cases/{case_id}", text
    link = found.group(1)
    for identity in ("reviewer-1", "partner-1"):
        async with signed_in(stack, identity) as other:
            for path in (link, f"{link}/timeline", f"{link}/live"):
                page = await other.get(path)
                assert page.status_code == 404, (identity, path, page.status_code)
                assert "it is not yours to see" in page.text
                assert "Moreau" not in page.text
    async with signed_in(stack, "patient-1") as patient:
        mine = await patient.get(link)
        assert mine.status_code == 200 and "Request sent" in mine.text
