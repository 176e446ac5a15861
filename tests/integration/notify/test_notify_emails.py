"""The patient's emails, from events on the real broker to the real SMTP sink: the matrix,
once per event, in the patient's language, with the headers a mail client expects."""

import asyncio
import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.basics import eventually
from tests.support.notify import NotifyStack, body_text, html_text, mailbox

pytestmark = pytest.mark.infra


async def test_the_matrix_in_french_once_per_event(stack: NotifyStack) -> None:
    p = stack.patient("fr")
    submitted = stack.submitted(p)
    tp = submitted.traceparent
    # One instant for both assignments due in 7 days: made apart, a midnight (Paris) could fall
    # between their due times and move the date.
    at = datetime.now(UTC)
    first = stack.assigned(p, due_in_days=7, traceparent=tp, at=at)
    await stack.publish(submitted, first)
    await stack.settled(p.case_id, 2)
    # After a decline, a reassignment with the same expected date says nothing...
    await stack.publish(stack.assigned(p, due_in_days=7, traceparent=tp, at=at))
    # ...one with a later date says so.
    await stack.publish(stack.assigned(p, due_in_days=12, traceparent=tp))
    await stack.settled(p.case_id, 3)  # topics are not ordered among themselves
    v1 = stack.report(p, 1, traceparent=tp)
    await stack.publish(v1, stack.report(p, 2, traceparent=tp))
    # Redelivered events (the same ce_id) and a late older version queue nothing new.
    await stack.publish(submitted, first, v1, stack.report(p, 1, traceparent=tp))
    items = await stack.settled(p.case_id, 5)
    assert [n["template"] for n in items] == [
        "case_received",
        "review_assigned",
        "expected_date_changed",
        "report_ready",
        "report_updated",
    ]
    assert {n["status"] for n in items} == {"sent"}
    assert {n["language"] for n in items} == {"fr"}

    mails = await eventually(lambda: len(mailbox(p.email)) >= 5 and mailbox(p.email))
    await asyncio.sleep(1.0)  # nothing more trickles in
    mails = mailbox(p.email)
    assert len(mails) == 5
    ids = [str(m["Message-ID"]).strip() for m in mails]
    assert len(set(ids)) == 5
    assert ids == [n["message_id"] for n in items]
    for m in mails:
        assert m["Content-Language"] == "fr"
        assert m["Auto-Submitted"] == "auto-generated"
        assert m["Date"] is not None
        assert m.get_content_type() == "multipart/alternative"
        assert body_text(m).startswith("Bonjour,")
        assert '<html lang="fr">' in html_text(m)
        assert p.reference in str(m["Subject"])
    received, assigned, moved, ready, updated = mails
    assert "Suivre ma demande" in body_text(received)
    assert "oncologie" in body_text(assigned)
    assert re.search(r"d'ici le \d{1,2} \w+ 20\d\d", body_text(assigned))
    assert "a changé" in body_text(moved)
    # Every link opens a page of the people's site (the report on its case's page).
    report_page = f"http://127.0.0.1:8000/cases/{p.case_id}#report"
    assert report_page in body_text(ready)
    assert "version 2" in body_text(updated)
    assert f'href="{report_page}"' in html_text(updated)
    assert f"http://127.0.0.1:8000/cases/{p.case_id}" in body_text(received)


async def test_english_and_withdrawal(stack: NotifyStack) -> None:
    p = stack.patient("en")
    submitted = stack.submitted(p)
    await stack.publish(submitted, stack.withdrawn(p, submitted.traceparent))
    items = await stack.settled(p.case_id, 2)
    assert [n["template"] for n in items] == ["case_received", "case_withdrawn"]
    mails = mailbox(p.email)
    assert [m["Content-Language"] for m in mails] == ["en", "en"]
    assert body_text(mails[0]).startswith("Hello,")
    assert "withdrawn" in str(mails[1]["Subject"])
    # A report after withdrawal tells nothing.
    late = stack.report(p, 1, submitted.traceparent)
    await stack.publish(late)
    await stack.consumed(late)
    assert len(await stack.notifications(p.case_id)) == 2


async def test_events_before_their_case_are_parked_not_blocking(stack: NotifyStack) -> None:
    """No order across topics: an assignment and a report met before the case wait, parked,
    while the partition moves on; the case's arrival releases them in order."""
    early = stack.patient("en")
    other = stack.patient("en")
    assigned = stack.assigned(early, 5)
    # The report happened a second later (made back to back, both would carry the same
    # millisecond once stored, and a tie keeps the order they were parked in), and it is
    # published first: only the release's order by time puts the assignment before it.
    report = dataclasses.replace(stack.report(early, 1), time=assigned.time + timedelta(seconds=1))
    waiting = [report, assigned]
    await stack.publish(*waiting)
    # Behind them on the same topics, another case goes through untouched.
    other_submitted = stack.submitted(other)
    await stack.publish(other_submitted, stack.assigned(other, 5))
    await stack.settled(other.case_id, 2)
    # (Partitions are consumed side by side: the other case being through does not say the
    # early events were taken in; their case says so.)
    await stack.consumed(*waiting)
    doc = await stack.db["cases"].find_one({"_id": early.case_id})
    assert doc is not None and len(doc["parked"]) == 2
    await stack.publish(stack.submitted(early))
    items = await stack.settled(early.case_id, 3)
    assert [n["template"] for n in items] == ["case_received", "review_assigned", "report_ready"]
    doc = await stack.db["cases"].find_one({"_id": early.case_id})
    assert doc is not None and doc["parked"] == []


async def test_the_contact_stays_sealed_at_rest(stack: NotifyStack) -> None:
    p = stack.patient("fr")
    await stack.publish(stack.submitted(p))
    await stack.settled(p.case_id, 1)
    for name in ("cases", "sends", "due"):
        async for doc in stack.db[name].find({}):
            text = repr(doc)
            for secret in (p.email, p.given_name, p.family_name, p.phone, "1979-05-17"):
                assert secret not in text, (name, secret)
    case = await stack.db["cases"].find_one({"_id": p.case_id})
    assert case is not None and set(case["contact"]) == {"alg", "kid", "nonce", "ct"}


@pytest.mark.parametrize("language", ["fr", "en"])
async def test_a_request_for_information_and_the_new_date_after_it(
    stack: NotifyStack, language: str
) -> None:
    """The patient is told a request waits for them (a link to their case's page, what it asks
    never in the email), then that the review goes on with its new expected date."""
    p = stack.patient(language)
    submitted = stack.submitted(p)
    await stack.publish(
        submitted, stack.assigned(p, due_in_days=7, traceparent=submitted.traceparent)
    )
    await stack.settled(p.case_id, 2)
    asked = stack.information_requested(p, expires_in_days=14)
    await stack.publish(asked, asked)  # a redelivery queues nothing new
    await stack.settled(p.case_id, 3)
    await stack.publish(stack.resumed(p, due_in_days=9))
    items = await stack.settled(p.case_id, 4)
    assert [n["template"] for n in items][2:] == ["information_requested", "review_resumed"]
    mails = await eventually(lambda: len(mailbox(p.email)) >= 4 and mailbox(p.email))
    waiting, resumed = mails[2], mails[3]
    assert {m["Content-Language"] for m in (waiting, resumed)} == {language}
    assert f"http://127.0.0.1:8000/cases/{p.case_id}" in body_text(waiting)
    assert "compte rendu opératoire" not in body_text(waiting)
    words = {"fr": ("informations", "reprend"), "en": ("more information", "goes on")}[language]
    assert words[0] in str(waiting["Subject"]) and words[1] in str(resumed["Subject"])
    assert re.search(r"20\d\d", body_text(resumed)), "the new expected date is told"


async def test_a_redelivered_event_is_turned_away_by_its_case_not_the_inbox(
    stack: NotifyStack,
) -> None:
    """Notify's case events pass no inbox (no look-up before, no marker after): the case keeps
    the ids of the events applied to it. An older assignment redelivered after the date moved
    sends nothing and leaves the date the patient was told as it is: a reassignment to that
    date after it says nothing either (applied again, the old one would have moved the told
    date back, and the reassignment told the patient of a change)."""
    p = stack.patient("en")
    submitted = stack.submitted(p)
    first = stack.assigned(p, due_in_days=7)
    await stack.publish(submitted, first)
    await stack.settled(p.case_id, 2)
    at = datetime.now(UTC)
    await stack.publish(stack.assigned(p, due_in_days=12, at=at))
    await stack.settled(p.case_id, 3)
    again = stack.assigned(p, due_in_days=12, at=at)
    await stack.publish(submitted, first, again)  # two redeliveries, then a reassignment
    await stack.consumed(submitted, first, again)
    await asyncio.sleep(1.0)  # nothing more is queued
    items = await stack.settled(p.case_id, 3)
    assert [n["template"] for n in items] == [
        "case_received",
        "review_assigned",
        "expected_date_changed",
    ]
    assert len(mailbox(p.email)) == 3
    for event in (submitted, first, again):
        assert not await stack.runtime.messaging.processed(event), "no inbox marker"
