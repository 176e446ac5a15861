"""International review in notify, on the real broker, store and SMTP sink: the patient is told
in their language, once, that the review goes abroad through a translator, with the date."""

import pytest

from tests.support.basics import eventually
from tests.support.notify import NotifyStack, body_text, mailbox

pytestmark = pytest.mark.infra


@pytest.mark.parametrize("language", ["fr", "en"])
async def test_the_patient_is_told_the_review_goes_abroad(
    stack: NotifyStack, language: str
) -> None:
    p = stack.patient(language)
    submitted = stack.submitted(p)
    abroad = stack.assigned(p, due_in_days=7, traceparent=submitted.traceparent, international=True)
    await stack.publish(submitted, abroad, abroad)  # a redelivery queues nothing new
    items = await stack.settled(p.case_id, 2)
    assert [n["template"] for n in items] == ["case_received", "review_abroad"]
    mails = await eventually(lambda: len(mailbox(p.email)) >= 2 and mailbox(p.email))
    told = mails[1]
    assert told["Content-Language"] == language
    words = {"fr": ("étranger", "traducteur"), "en": ("abroad", "translator")}[language]
    assert words[0] in str(told["Subject"]) and words[1] in body_text(told)
