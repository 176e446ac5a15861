"""The assignment lists' keyed ways in give the same items as the walk over every round: a
reviewer's open list (from the reviewer's document) follows an assignment through acceptance,
its opinion and a decline that hands the case to another reviewer.

The specialty is this module's own, so no other test's reviewers are candidates for its cases.
"""

from typing import Any

import httpx
import pytest

from tests.support.basics import eventually, unique
from tests.support.review import ReviewStack
from tests.support.samples import OPINION

pytestmark = pytest.mark.infra

SPECIALTY = "rare_diseases"
ASSIGNED = "avis.review.assigned.v1"


async def _ids(http: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await http.get("/v1/assignments", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["items"]]


async def _open_lists_agree(stack: ReviewStack, reviewer: str) -> dict[str, list[str]]:
    """A reviewer's assignments by status, as the keyed open list gives the open ones, checked
    against the walk over every round (the day buckets) of the same reviewer; both open
    statuses asked at once give the open ones of either."""
    async with stack.client(reviewer, "reviewer") as http:
        walked = (await http.get("/v1/assignments", params={"limit": 100})).json()["items"]
        keyed = {s: await _ids(http, status=s) for s in ("assigned", "accepted")}
        either = await _ids(http, status=["assigned", "accepted"])
    for status, ids in keyed.items():
        assert ids == [a["id"] for a in walked if a["status"] == status], status
    assert either == [a["id"] for a in walked if a["status"] in keyed], "open, in either status"
    async with stack.client() as coordinator:
        for status, ids in keyed.items():
            assert await _ids(coordinator, status=status, reviewer_id=reviewer) == ids
    return keyed | {"all": [a["id"] for a in walked]}


async def test_the_open_lists_follow_acceptance_opinion_and_a_decline(stack: ReviewStack) -> None:
    p = unique("rare")
    first, second = f"{p}-1", f"{p}-2"
    await stack.add_reviewer(first, [SPECIALTY], ["fr"], capacity=2)
    answered = await stack.submit(SPECIALTY)
    (event,) = await stack.log.wait(answered, ASSIGNED)
    one = event["assignment_id"]
    assert await _open_lists_agree(stack, first) == {
        "assigned": [one],
        "accepted": [],
        "all": [one],
    }

    async with stack.client(first, "reviewer") as http:
        assert (await http.post(f"/v1/assignments/{one}/accept")).status_code == 200
        lists = await _open_lists_agree(stack, first)
        assert (lists["assigned"], lists["accepted"]) == ([], [one])
        written = await http.post(f"/v1/assignments/{one}/opinion", json=OPINION)
        assert written.status_code == 201, written.text
    lists = await _open_lists_agree(stack, first)
    assert (lists["assigned"], lists["accepted"], lists["all"]) == ([], [], [one])

    declined = await stack.submit(SPECIALTY)
    (event,) = await stack.log.wait(declined, ASSIGNED)
    two = event["assignment_id"]
    assert (await _open_lists_agree(stack, first))["assigned"] == [two]
    await stack.add_reviewer(second, [SPECIALTY], ["fr"], capacity=2)
    async with stack.client(first, "reviewer") as http:
        body = {"reason_code": "conflict_of_interest", "reason": "I know the family."}
        assert (await http.post(f"/v1/assignments/{two}/decline", json=body)).status_code == 200
    handed = await stack.log.wait(declined, ASSIGNED, count=2)
    three = handed[1]["assignment_id"]
    assert handed[1]["reviewer_id"] == second

    lists = await _open_lists_agree(stack, first)
    assert (lists["assigned"], lists["accepted"]) == ([], [])
    assert set(lists["all"]) == {one, two}  # the answered and the declined ones, both closed
    assert (await _open_lists_agree(stack, second))["assigned"] == [three]
    async with stack.client() as coordinator:
        rounds = (await coordinator.get("/v1/assignments", params={"case_id": declined})).json()
        assert [(a["id"], a["status"]) for a in rounds["items"]] == [
            (two, "declined"),
            (three, "assigned"),
        ]

        async def listed() -> bool:
            return three in await _ids(coordinator, status="assigned")

        await eventually(listed)
