"""The first email of a case a partner filed links to the page of its claim (the one-time
secret came sealed in `avis.case.submitted.v1`), and a repeat of that email carries the same
link; the secret is nowhere in notify's store in clear."""

import dataclasses
from typing import Any

import pytest

from avis.notify.mailer import Mailer, SmtpTarget
from avis.shared.envelope import Event
from avis.shared.events import CaseSubmitted, ClaimSecret
from tests.integration.notify.test_notify_failures import CrashAfter250
from tests.support.basics import eventually
from tests.support.notify import NotifyStack, Patient, body_text, html_text, mailbox

pytestmark = pytest.mark.infra

SECRET = "Zq3_claim-secret-of-the-first-email-0123456789"


def partner_filed(stack: NotifyStack, p: Patient) -> Event:
    """`avis.case.submitted.v1` of a case a partner filed: no patient, a sealed claim secret."""
    base = stack.submitted(p)
    payload = base.payload()
    assert isinstance(payload, CaseSubmitted)
    claim = stack.keyring.seal_json(ClaimSecret(secret=SECRET), aad=base.id)
    changed = payload.model_copy(update={"patient_id": None, "claim": claim})
    return dataclasses.replace(base, data=changed.model_dump(mode="json"))


async def test_the_first_email_links_to_the_claim_and_a_repeat_the_same(
    stack: NotifyStack,
) -> None:
    p = stack.patient("en", partner_id="insurer-9")
    stack.sender.mailer = CrashAfter250(SmtpTarget.from_settings(stack.settings))
    try:
        await stack.publish(partner_filed(stack, p))
        (n,) = await stack.settled(p.case_id, 1)
    finally:
        stack.sender.mailer = Mailer(SmtpTarget.from_settings(stack.settings))
    assert n["template"] == "case_received"
    mails = await eventually(lambda: len(mailbox(p.email)) >= 2 and mailbox(p.email))
    link = f"http://127.0.0.1:8000/claim/{p.case_id}/{SECRET}"
    for mail in mails:
        assert link in body_text(mail)
        assert f'href="{link}"' in html_text(mail)
    assert len({body_text(m) for m in mails}) == 1, "a repeat is the same email, link included"
    for name in ("cases", "sends"):
        async for doc in stack.db[name].find({}):
            assert SECRET not in repr(doc), f"the secret is in clear in {name}"


async def test_a_patients_own_case_links_to_the_case(stack: NotifyStack) -> None:
    p = stack.patient("en")
    await stack.publish(stack.submitted(p))
    await stack.settled(p.case_id, 1)
    (mail,) = await eventually(lambda: mailbox(p.email))
    lines = body_text(mail).splitlines()
    assert any(line.endswith(f"http://127.0.0.1:8000/cases/{p.case_id}") for line in lines)
    assert "/claim" not in body_text(mail)


async def test_a_claim_opens_the_case_to_its_patient_once_and_to_nobody_else(
    stack: NotifyStack,
) -> None:
    p = stack.patient("en", partner_id="insurer-9")
    claimant, later = f"pat-{p.case_id}", f"pat-late-{p.case_id}"

    async def status_for(sub: str) -> int:
        async with stack.client(sub, "patient") as http:
            response = await http.get("/v1/notifications", params={"case_id": p.case_id})
        return response.status_code

    # The claim comes first (as after a replay): it waits for its case, then applies.
    await stack.publish(stack.claimed(p, claimant), partner_filed(stack, p))
    await stack.settled(p.case_id, 1)
    assert await eventually(lambda: _equals(status_for(claimant), 200))
    assert await status_for("pat-someone-else") == 404
    second = stack.claimed(p, later)
    await stack.publish(second)
    await stack.consumed(second)
    assert await status_for(later) == 404, "a case is claimed once"
    assert await status_for(claimant) == 200


async def _equals(status: Any, expected: int) -> bool:
    return bool(await status == expected)
