"""The first email of a case a partner filed links to its claim (the one-time secret that came
sealed in `avis.case.submitted.v1`), and a repeat of that email carries the same link; the
secret is nowhere in notify's store in clear."""

import dataclasses

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
    link = f"http://127.0.0.1:8001/v1/cases/{p.case_id}/claim?secret={SECRET}"
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
    assert any(line.endswith(f"http://127.0.0.1:8001/v1/cases/{p.case_id}") for line in lines)
    assert "/claim" not in body_text(mail)
