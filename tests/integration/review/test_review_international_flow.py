"""International review's matching on the real broker and store: a specialist who does not read
the patient's language takes the case only when the patient accepted it and nobody who reads it
fits; the rationale says so.

Each test uses a specialty of its own, so the reviewers of one test are never candidates for the
cases of another in this module's database.
"""

from datetime import UTC, datetime
from typing import Any

import pytest

from avis.review.models import DeclineReason
from avis.review.store import Decline
from tests.support.basics import eventually, unique
from tests.support.review import ReviewStack
from tests.support.samples import OPINION

pytestmark = pytest.mark.infra

ASSIGNED = "avis.review.assigned.v1"
QUEUED = "avis.review.translation-queued.v1"
COMPLETED = "avis.review.completed.v1"


async def _translator(stack: ReviewStack, tid: str) -> None:
    async with stack.client() as coordinator:
        put = await coordinator.put(
            f"/v1/translators/{tid}",
            json={"display_name": "Translator", "languages": ["fr", "en"], "capacity": 2},
        )
        assert put.status_code == 200, put.text


async def _abroad(stack: ReviewStack, specialty: str) -> tuple[str, str, dict[str, Any]]:
    """An English reader of `specialty`, a translator, and a French case filed for
    international review: the prefix of the two people's ids, the case, its translation-queued
    event."""
    p = unique(specialty[:3])
    await stack.add_reviewer(f"{p}-en", [specialty], ["en"])
    await _translator(stack, f"{p}-tr")
    case_id = await stack.submit(specialty, language="fr", international_review=True)
    (queued,) = await stack.log.wait(case_id, QUEUED)
    return p, case_id, queued


async def _counted(stack: ReviewStack, queued: dict[str, Any]) -> tuple[bool, bool]:
    """Whether the round counts in its reviewer's load, and its translation in its translator's
    (the module's translators of the pair share its cases: the least loaded is chosen)."""
    reviewer = await stack.review.store.reviewer(queued["reviewer_id"])
    translator = await stack.review.store.translations.translator(queued["translator_id"])
    assert reviewer is not None and translator is not None
    return (
        queued["assignment_id"] in reviewer.open_assignments,
        queued["translation_id"] in translator.open_translations,
    )


async def _state(stack: ReviewStack, case_id: str) -> str:
    (step,) = (await stack.assignment(case_id, 1))["translations"]
    return str(step["state"])


async def test_without_consent_the_case_waits_for_a_reader(stack: ReviewStack) -> None:
    p = unique("uro")
    await stack.add_reviewer(f"{p}-en", ["urology"], ["en"])
    case_id = await stack.submit("urology", language="fr")

    async def waiting() -> bool:
        return await stack.case_status(case_id) == "waiting"

    await eventually(waiting, timeout=30)
    async with stack.client() as http:
        queue = (await http.get("/v1/queue", params={"specialty": "urology"})).json()
    (waits,) = [c for c in queue["items"] if c["case_id"] == case_id]
    assert waits["international_review"] is False, "the coordinator sees it was not accepted"
    assert not stack.log.of(case_id, ASSIGNED)
    abroad = await stack.submit("urology", language="fr", international_review=True)
    (event,) = await stack.log.wait(abroad, ASSIGNED)
    assert event["reviewer_id"] == f"{p}-en"
    assert event["international"] is True, "notify tells the patient the review goes abroad"
    chosen = await stack.assignment(abroad)
    assert chosen["rationale"]["rule"] == "international_no_reader_available"
    assert chosen["language"] == "fr"


async def test_a_reader_of_the_language_comes_first(stack: ReviewStack) -> None:
    p = unique("pul")
    await stack.add_reviewer(f"{p}-0-en", ["pulmonology"], ["en"])
    await stack.add_reviewer(f"{p}-fr", ["pulmonology"], ["fr"], capacity=1)
    first = await stack.submit("pulmonology", language="fr", international_review=True)
    (event,) = await stack.log.wait(first, ASSIGNED)
    assert event["reviewer_id"] == f"{p}-fr"
    assert event["international"] is False
    assert (await stack.assignment(first))["rationale"]["rule"] == "only_candidate"
    # The reader is now at capacity: nobody who reads French is available today.
    second = await stack.submit("pulmonology", language="fr", international_review=True)
    (event,) = await stack.log.wait(second, ASSIGNED)
    assert event["reviewer_id"] == f"{p}-0-en"
    rationale = (await stack.assignment(second))["rationale"]
    assert rationale["rule"] == "international_no_reader_available"
    excluded = {c["reviewer_id"]: c["excluded"] for c in rationale["candidates"]}
    assert excluded == {f"{p}-0-en": None, f"{p}-fr": "at_capacity"}


async def test_a_withdrawn_cases_translation_leaves_the_queue(stack: ReviewStack) -> None:
    p, case_id, queued = await _abroad(stack, "gastroenterology")
    assert (queued["from_language"], queued["to_language"]) == ("fr", "en")
    async with stack.client(f"{p}-en", "reviewer") as specialist:
        url = f"/v1/assignments/{queued['assignment_id']}"
        early = await specialist.post(f"{url}/accept")
        assert early.status_code == 409 and "translation-pending" in early.json()["type"]
    async with stack.client(f"{p}-tr", "translator") as translator:
        listed = (await translator.get("/v1/translations")).json()["items"]
        assert queued["translation_id"] in [t["id"] for t in listed]
        await stack.withdraw(case_id)

        async def cancelled() -> bool:
            return (await stack.assignment(case_id))["status"] == "cancelled"

        await eventually(cancelled, timeout=30)
        left = (await translator.get("/v1/translations")).json()["items"]
        assert queued["translation_id"] not in [t["id"] for t in left]
        taken = await translator.post(f"/v1/translations/{queued['translation_id']}/take")
        assert taken.status_code == 409, taken.text
    assert await _counted(stack, queued) == (False, False), "both loads released"
    assert await _state(stack, case_id) == "closed"


async def test_a_declined_rounds_translation_closes_with_it(stack: ReviewStack) -> None:
    """The specialist declines an international round whose translation is taken: it leaves
    its translator's load and the queue, and is written no more."""
    p, case_id, queued = await _abroad(stack, "haematology")
    url = f"/v1/translations/{queued['translation_id']}"
    async with stack.client(queued["translator_id"], "translator") as translator:
        assert (await translator.post(f"{url}/take")).status_code == 200
        assert await _counted(stack, queued) == (True, True)
        async with stack.client(f"{p}-en", "reviewer") as specialist:
            declined = await specialist.post(
                f"/v1/assignments/{queued['assignment_id']}/decline",
                json={"reason_code": "no_availability", "reason": "Away."},
            )
            assert declined.status_code == 200, declined.text
        assert await _counted(stack, queued) == (False, False)
        assert await _state(stack, case_id) == "closed"
        left = (await translator.get("/v1/translations")).json()["items"]
        assert queued["translation_id"] not in [t["id"] for t in left]
        written = await translator.put(f"{url}/text", json={"summary": "In English."})
        assert written.status_code == 409, written.text
        assert written.json()["type"].endswith("/translation-closed")
        assert (await translator.post(f"{url}/take")).status_code == 409
    assert await stack.case_status(case_id) == "waiting", "nobody else reads haematology"


async def test_a_decline_stopped_before_its_translation_closed_is_finished(
    stack: ReviewStack,
) -> None:
    """Stopped after the decline was written, before the round's translation closed: the next
    matching of the case (here the start-up's) releases and closes it, once."""
    _, case_id, queued = await _abroad(stack, "nephrology")
    assert await _counted(stack, queued) == (True, True)
    aid = queued["assignment_id"]
    await stack.review.store.set_case_matching(case_id)  # as the decline's first write
    await stack.review.store.decline(
        aid,
        at=datetime.now(UTC),
        decline=Decline(reason_code=DeclineReason.OTHER),
        seq=queued["seq"] + 1,
        events=[],
    )
    assert await _state(stack, case_id) == "queued"
    for _ in range(2):  # recovering twice changes nothing more
        await stack.review.matcher.recover()
        assert await _counted(stack, queued) == (False, False)
        assert await _state(stack, case_id) == "closed"
    assert await stack.case_status(case_id) == "waiting"


async def test_a_withdrawal_stopped_after_the_cancel_releases_both_loads_again(
    stack: ReviewStack,
) -> None:
    """Stopped after the round was cancelled, before the loads were released: the withdrawal
    delivered again releases the reviewer's and the translator's, and closes the translation."""
    _, case_id, queued = await _abroad(stack, "orthopaedics")
    assert await _counted(stack, queued) == (True, True)
    at = datetime.now(UTC)
    await stack.review.store.set_case_withdrawn(case_id, at)
    await stack.review.store.cancel(queued["assignment_id"], at)
    await stack.withdraw(case_id)  # delivered again

    async def released() -> bool:
        return await _counted(stack, queued) == (False, False)

    await eventually(released, timeout=30)
    assert await _state(stack, case_id) == "closed"


async def test_a_second_readers_agreement_goes_on_to_the_translation_back(
    stack: ReviewStack,
) -> None:
    """An international round the first specialist sends to a second reader: the agreement
    queues the opinion's translation into the patient's language, and only the translator's
    submission releases it, naming the second reader and the translator."""
    p = unique("end")
    await stack.add_reviewer(f"{p}-0-en", ["endocrinology"], ["en"])
    await stack.add_reviewer(f"{p}-1-en", ["endocrinology"], ["en"])
    async with stack.client() as coordinator:
        put = await coordinator.put(
            f"/v1/translators/{p}-tr",
            json={"display_name": "Translator", "languages": ["fr", "en"], "capacity": 2},
        )
        assert put.status_code == 200, put.text
    case_id = await stack.submit("endocrinology", language="fr", international_review=True)
    (queued,) = await stack.log.wait(case_id, QUEUED)
    first = f"/v1/translations/{queued['translation_id']}"
    async with stack.client(f"{p}-tr", "translator") as translator:
        assert (await translator.post(f"{first}/take")).status_code == 200
        done = await translator.put(f"{first}/text", json={"summary": "In English."})
        assert done.status_code == 200, done.text
    assignment = await stack.assignment(case_id)
    url = f"/v1/assignments/{assignment['id']}"
    async with stack.client(assignment["reviewer_id"], "reviewer") as specialist:
        assert (await specialist.post(f"{url}/accept")).status_code == 200
        sent = await specialist.post(
            f"{url}/opinion", params={"second_reading": "true"}, json=OPINION
        )
        assert sent.status_code == 201, sent.text
    (requested,) = await stack.log.wait(case_id, "avis.review.second-reading-requested.v1")
    assert len(stack.log.of(case_id, QUEUED)) == 1, "no translation back before the agreement"
    async with stack.client(requested["second_reader_id"], "reviewer") as reader:
        agreed = await reader.post(f"/v1/second-readings/{assignment['id']}/agreement")
        assert agreed.status_code == 200, agreed.text
    queued_both = await stack.log.wait(case_id, QUEUED, count=2)
    assert (queued_both[-1]["from_language"], queued_both[-1]["to_language"]) == ("en", "fr")
    assert not stack.log.of(case_id, COMPLETED), "the agreement does not release it untranslated"
    back = f"/v1/translations/{queued_both[-1]['translation_id']}"
    async with stack.client(f"{p}-tr", "translator") as translator:
        assert (await translator.post(f"{back}/take")).status_code == 200
        released = await translator.put(f"{back}/text", json={"opinion": OPINION})
        assert released.status_code == 200, released.text
    (completed,) = await stack.log.wait(case_id, COMPLETED)
    (agreement,) = stack.log.payloads(case_id, "avis.review.second-reading-agreed.v1")
    assert agreement["seq"] < queued_both[-1]["seq"] < completed["seq"]


async def test_a_translation_stopped_before_its_release_leaves_the_load_when_sent_again(
    stack: ReviewStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after the translation was written, before it left its translator's load: the
    translator sending it again writes nothing more, but takes it out of their load."""
    _, case_id, queued = await _abroad(stack, "paediatrics")
    url = f"/v1/translations/{queued['translation_id']}"

    async def stopped(*_: Any) -> None:
        raise RuntimeError("stopped here")

    async with stack.client(queued["translator_id"], "translator") as translator:
        assert (await translator.post(f"{url}/take")).status_code == 200
        monkeypatch.setattr(stack.review.store.translations, "release", stopped)
        failed = await translator.put(f"{url}/text", json={"summary": "In English."})
        monkeypatch.undo()
        assert failed.status_code == 500, failed.text
        assert await _state(stack, case_id) == "done"
        assert await _counted(stack, queued) == (True, True), "the stop left it in the load"
        again = await translator.put(f"{url}/text", json={"summary": "In English."})
        assert again.status_code == 200, again.text
    assert await _counted(stack, queued) == (True, False)
    await stack.log.wait(case_id, "avis.review.translation-done.v1")
    assert len(stack.log.of(case_id, "avis.review.translation-done.v1")) == 1
