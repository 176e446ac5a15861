"""The second reading in review alone, over the real broker and store: a coordinator's rule by
urgency holds the opinion until the second reader agrees, then it is released once, after the
agreement; with nobody else to read it the opinion waits, unmatched, until a reader frees up or
joins (where the queue is offered); a withdrawn case closes the reading and takes it out of its
reader's load; a correction after the agreement is read again, by the same reader only while
they have room (full: it waits unmatched, as when nobody fits at first). Stopped half-way, an
opinion's reading nobody fitted is still offered again, and an agreement sent again leaves its
reader's load."""

from typing import Any

import pytest

from tests.support.basics import eventually, unique
from tests.support.review import ReviewStack
from tests.support.samples import OPINION

pytestmark = pytest.mark.infra

ASSIGNED = "avis.review.assigned.v1"
REQUESTED = "avis.review.second-reading-requested.v1"
AGREED = "avis.review.second-reading-agreed.v1"
COMPLETED = "avis.review.completed.v1"


async def _answered(
    stack: ReviewStack, specialty: str, *, second_reading: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """A case of `specialty` assigned, accepted and answered; its assignment."""
    case_id = await stack.submit(specialty, **kwargs)
    await stack.log.wait(case_id, ASSIGNED)
    first = await stack.assignment(case_id)
    url = f"/v1/assignments/{first['id']}"
    async with stack.client(first["reviewer_id"], "reviewer") as http:
        assert (await http.post(f"{url}/accept")).status_code == 200
        params = {"second_reading": "true"} if second_reading else {}
        written = await http.post(f"{url}/opinion", params=params, json=OPINION)
        assert written.status_code == 201, written.text
    return first


async def _load(stack: ReviewStack, reviewer_id: str) -> int:
    async with stack.client() as http:
        return int((await http.get(f"/v1/reviewers/{reviewer_id}")).json()["load"])


async def test_an_urgent_opinion_waits_for_the_second_readers_agreement(
    stack: ReviewStack,
) -> None:
    p = unique("uro")
    await stack.add_reviewer(f"{p}-1", ["urology"], ["fr"])
    await stack.add_reviewer(f"{p}-2", ["urology"], ["fr"])
    async with stack.client() as http:
        ruled = await http.put("/v1/second-reading-rules", json={"urgencies": ["urgent"]})
        assert ruled.status_code == 200, ruled.text
    first = await _answered(stack, "urology", urgency="urgent")
    case_id = first["case_id"]
    (requested,) = await stack.log.wait(case_id, REQUESTED)
    assert requested["reason"] == "coordinator_rule" and requested["version"] == 1
    second = requested["second_reader_id"]
    assert second is not None and second != first["reviewer_id"]
    assert await _load(stack, second) == 1
    assert not stack.log.of(case_id, COMPLETED)
    async with stack.client(second, "reviewer") as http:
        agreed = await http.post(f"/v1/second-readings/{first['id']}/agreement")
        assert agreed.status_code == 200, agreed.text
    (completed,) = await stack.log.wait(case_id, COMPLETED)
    (agreement,) = stack.log.payloads(case_id, AGREED)
    assert agreement["seq"] < completed["seq"], "the agreement comes before the release"
    assert completed["version"] == 1
    assert await _load(stack, second) == 0
    async with stack.client() as http:
        cleared = await http.put("/v1/second-reading-rules", json={})
        assert cleared.json()["urgencies"] == []


async def test_with_nobody_else_to_read_it_the_opinion_waits_unmatched(
    stack: ReviewStack,
) -> None:
    p = unique("nep")
    await stack.add_reviewer(f"{p}-1", ["nephrology"], ["fr"])
    first = await _answered(stack, "nephrology", second_reading=True)
    (requested,) = await stack.log.wait(first["case_id"], REQUESTED)
    assert requested["second_reader_id"] is None
    async with stack.client() as http:
        shown = await http.get(
            f"/v1/second-readings/{first['id']}", headers={"X-Avis-Reason": "check"}
        )
    reading = shown.json()
    assert reading["state"] == "unmatched"
    why = {c["reviewer_id"]: c["excluded"] for c in reading["rationale"]["candidates"]}
    assert why == {f"{p}-1": "first_reader"}
    assert not stack.log.of(first["case_id"], COMPLETED)
    # A reader joins: the waiting reading is matched again at once, as the queue is offered.
    await stack.add_reviewer(f"{p}-2", ["nephrology"], ["fr"])
    again = await stack.log.wait(first["case_id"], REQUESTED, count=2)
    assert (again[-1]["second_reader_id"], again[-1]["version"]) == (f"{p}-2", 1)
    assert await _load(stack, f"{p}-2") == 1
    # The first's next version goes to that reader.
    async with stack.client(f"{p}-1", "reviewer") as http:
        corrected = await http.put(
            f"/v1/assignments/{first['id']}/opinion", json=OPINION | {"further_tests": "Aucun."}
        )
        assert corrected.status_code == 200, corrected.text
    again = await stack.log.wait(first["case_id"], REQUESTED, count=3)
    assert (again[-1]["second_reader_id"], again[-1]["version"]) == (f"{p}-2", 2)
    assert not stack.log.of(first["case_id"], COMPLETED)


async def test_a_withdrawn_case_leaves_its_readers_load(stack: ReviewStack) -> None:
    p = unique("end")
    await stack.add_reviewer(f"{p}-1", ["endocrinology"], ["fr"])
    await stack.add_reviewer(f"{p}-2", ["endocrinology"], ["fr"])
    first = await _answered(stack, "endocrinology", second_reading=True)
    (requested,) = await stack.log.wait(first["case_id"], REQUESTED)
    second = requested["second_reader_id"]
    assert await _load(stack, second) == 1
    await stack.withdraw(first["case_id"])

    async def freed() -> bool:
        return await _load(stack, second) == 0

    assert await eventually(freed, timeout=30)
    # The reading is closed, as the assignment is: nothing to agree with any more.
    async with stack.client() as http:
        shown = await http.get(
            f"/v1/second-readings/{first['id']}", headers={"X-Avis-Reason": "check"}
        )
    assert shown.json()["state"] == "withdrawn", shown.text
    async with stack.client(second, "reviewer") as http:
        late = await http.post(f"/v1/second-readings/{first['id']}/agreement")
        assert late.status_code == 409, late.text


async def test_a_correction_after_the_agreement_is_read_again(stack: ReviewStack) -> None:
    p = unique("rhu")
    await stack.add_reviewer(f"{p}-1", ["rheumatology"], ["fr"])
    await stack.add_reviewer(f"{p}-2", ["rheumatology"], ["fr"])
    first = await _answered(stack, "rheumatology", second_reading=True)
    case_id = first["case_id"]
    (requested,) = await stack.log.wait(case_id, REQUESTED)
    second = requested["second_reader_id"]
    async with stack.client(second, "reviewer") as http:
        agreed = await http.post(f"/v1/second-readings/{first['id']}/agreement")
        assert agreed.status_code == 200, agreed.text
    await stack.log.wait(case_id, COMPLETED)
    # The first asked for the reading: their correction goes to the second reader again.
    async with stack.client(first["reviewer_id"], "reviewer") as http:
        corrected = await http.put(
            f"/v1/assignments/{first['id']}/opinion", json=OPINION | {"further_tests": "Aucun."}
        )
        assert corrected.status_code == 200, corrected.text
    again = await stack.log.wait(case_id, REQUESTED, count=2)
    assert (again[-1]["second_reader_id"], again[-1]["version"]) == (second, 2)
    assert len(stack.log.of(case_id, COMPLETED)) == 1, "not released before a new agreement"
    assert await _load(stack, second) == 1
    async with stack.client(second, "reviewer") as http:
        agreed = await http.post(f"/v1/second-readings/{first['id']}/agreement")
        assert agreed.status_code == 200, agreed.text
    released = await stack.log.wait(case_id, COMPLETED, count=2)
    assert released[-1]["version"] == 2
    assert await _load(stack, second) == 0


async def test_a_correction_after_the_agreement_waits_while_its_reader_is_full(
    stack: ReviewStack,
) -> None:
    """The second reader agreed, then took other work up to their capacity: the correction is
    not pushed onto them over it. It waits unmatched, as a reading nobody fitted at first,
    until they have room again; then it is theirs once more."""
    p = unique("car")
    await stack.add_reviewer(f"{p}-1", ["cardiology"], ["fr"])
    await stack.add_reviewer(f"{p}-2", ["cardiology", "dermatology"], ["fr"], capacity=1)
    first = await _answered(stack, "cardiology", second_reading=True)
    case_id = first["case_id"]
    (requested,) = await stack.log.wait(case_id, REQUESTED)
    second = requested["second_reader_id"]
    assert second == f"{p}-2"
    async with stack.client(second, "reviewer") as http:
        agreed = await http.post(f"/v1/second-readings/{first['id']}/agreement")
        assert agreed.status_code == 200, agreed.text
    await stack.log.wait(case_id, COMPLETED)
    assert await _load(stack, second) == 0
    # Another case fills the second reader's only place (nobody else reads dermatology).
    other = await stack.submit("dermatology")
    await stack.log.wait(other, ASSIGNED)
    assert await _load(stack, second) == 1
    async with stack.client(first["reviewer_id"], "reviewer") as http:
        corrected = await http.put(
            f"/v1/assignments/{first['id']}/opinion", json=OPINION | {"further_tests": "Aucun."}
        )
        assert corrected.status_code == 200, corrected.text
    again = await stack.log.wait(case_id, REQUESTED, count=2)
    assert (again[-1]["second_reader_id"], again[-1]["version"]) == (None, 2)
    assert await _load(stack, second) == 1, "never over their capacity"
    assert len(stack.log.of(case_id, COMPLETED)) == 1, "not released without a reading"
    async with stack.client() as http:
        shown = await http.get(
            f"/v1/second-readings/{first['id']}", headers={"X-Avis-Reason": "check"}
        )
    reading = shown.json()
    assert reading["state"] == "unmatched", reading
    assert reading["rationale"]["rule"] == "nobody_fits"
    why = {c["reviewer_id"]: c["excluded"] for c in reading["rationale"]["candidates"]}
    assert why == {second: "at_capacity"}
    # The other case is answered: the reader has room, and the waiting reading is theirs again.
    filled = await stack.assignment(other)
    async with stack.client(second, "reviewer") as http:
        url = f"/v1/assignments/{filled['id']}"
        assert (await http.post(f"{url}/accept")).status_code == 200
        answered = await http.post(f"{url}/opinion", json=OPINION)
        assert answered.status_code == 201, answered.text
    again = await stack.log.wait(case_id, REQUESTED, count=3)
    assert (again[-1]["second_reader_id"], again[-1]["version"]) == (second, 2)
    assert await _load(stack, second) == 1


async def _stopped(*_: Any) -> None:
    raise RuntimeError("stopped here")


async def test_an_unmatched_reading_stopped_after_its_write_is_still_offered(
    stack: ReviewStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped right after the opinion and its reading nobody fitted were written: the reading
    is still offered again when a reader joins, not left waiting for nobody."""
    p = unique("neu")
    await stack.add_reviewer(f"{p}-1", ["neurology"], ["fr"])
    case_id = await stack.submit("neurology")
    await stack.log.wait(case_id, ASSIGNED)
    first = await stack.assignment(case_id)
    url = f"/v1/assignments/{first['id']}"
    monkeypatch.setattr(stack.review.second, "count", _stopped)  # the stop, after the write
    async with stack.client(first["reviewer_id"], "reviewer") as http:
        assert (await http.post(f"{url}/accept")).status_code == 200
        params = {"second_reading": "true"}
        stopped = await http.post(f"{url}/opinion", params=params, json=OPINION)
        assert stopped.status_code == 500, stopped.text
    monkeypatch.undo()
    (requested,) = await stack.log.wait(case_id, REQUESTED)
    assert requested["second_reader_id"] is None
    await stack.add_reviewer(f"{p}-2", ["neurology"], ["fr"])
    again = await stack.log.wait(case_id, REQUESTED, count=2)
    assert (again[-1]["second_reader_id"], again[-1]["version"]) == (f"{p}-2", 1)
    assert await _load(stack, f"{p}-2") == 1


async def test_an_agreement_stopped_before_its_release_is_finished_when_sent_again(
    stack: ReviewStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after the agreement was written, before the reading left its reader's load:
    agreeing again writes nothing more, but takes it out of the load."""
    p = unique("pul")
    await stack.add_reviewer(f"{p}-1", ["pulmonology"], ["fr"])
    await stack.add_reviewer(f"{p}-2", ["pulmonology"], ["fr"])
    first = await _answered(stack, "pulmonology", second_reading=True)
    case_id = first["case_id"]
    (requested,) = await stack.log.wait(case_id, REQUESTED)
    second = requested["second_reader_id"]
    assert await _load(stack, second) == 1
    at = f"/v1/second-readings/{first['id']}/agreement"
    async with stack.client(second, "reviewer") as http:
        monkeypatch.setattr(stack.review.matcher, "release", _stopped)
        stopped = await http.post(at)
        monkeypatch.undo()
        assert stopped.status_code == 500, stopped.text
        assert await _load(stack, second) == 1, "the stop left the reading in the load"
        again = await http.post(at)
        assert again.status_code == 200, again.text
    assert await _load(stack, second) == 0
    await stack.log.wait(case_id, COMPLETED)
    assert len(stack.log.of(case_id, AGREED)) == 1
    assert len(stack.log.of(case_id, COMPLETED)) == 1
