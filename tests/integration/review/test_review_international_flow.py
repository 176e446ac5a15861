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
