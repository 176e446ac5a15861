"""International review's matching on the real broker and store: a specialist who does not read
the patient's language takes the case only when the patient accepted it and nobody who reads it
fits; the rationale says so.

Each test uses a specialty of its own, so the reviewers of one test are never candidates for the
cases of another in this module's database.
"""

import pytest

from tests.support.basics import eventually, unique
from tests.support.review import ReviewStack

pytestmark = pytest.mark.infra

ASSIGNED = "avis.review.assigned.v1"


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
    p = unique("gas")
    await stack.add_reviewer(f"{p}-en", ["gastroenterology"], ["en"])
    async with stack.client() as coordinator:
        put = await coordinator.put(
            f"/v1/translators/{p}-tr",
            json={"display_name": "Translator", "languages": ["fr", "en"], "capacity": 2},
        )
        assert put.status_code == 200, put.text
    case_id = await stack.submit("gastroenterology", language="fr", international_review=True)
    (queued,) = await stack.log.wait(case_id, "avis.review.translation-queued.v1")
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
