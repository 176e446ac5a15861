"""Two copies of review over one store and one consumer group: cases reach both (each copy owns
some of `case-submitted`'s partitions), HTTP writes reach either, and still no reviewer is ever
over capacity and conflicting writes to one assignment have one outcome. Both hold to the
`matcher` lease's sections (matching.py): the duplicate-key insert of the lease's next epoch is
the only arbiter, since the store lets racing version-guarded updates all "match"."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from avis.review.main import create_app
from avis.shared.runtime import Runtime
from tests.support.basics import eventually, serve, unique
from tests.support.review import ReviewStack, review_settings, running_review

pytestmark = pytest.mark.infra

ASSIGNED = "avis.review.assigned.v1"
ACCEPTED = "avis.review.accepted.v1"
DECLINED = "avis.review.declined.v1"
NOT_AVAILABLE = {"reason_code": "no_availability", "reason": "Away that week."}


@pytest.fixture(scope="module")
async def copies() -> AsyncIterator[tuple[ReviewStack, str]]:
    """Copy A (the test's ReviewStack) and the URL of copy B, a second app on the same settings:
    the same database, the same consumer group."""
    async with running_review(review_settings()) as a:
        second = create_app(a.settings)
        runtime: Runtime = second.state.runtime
        async with serve(second) as b_url:
            await eventually(lambda: runtime.kafka_started, timeout=60)
            yield a, b_url


def client(stack: ReviewStack, url: str, sub: str, role: str) -> httpx.AsyncClient:
    token = stack.token(sub, role)  # type: ignore[arg-type]
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
    )


async def loads(stack: ReviewStack, ids: list[str]) -> dict[str, tuple[int, int]]:
    """Each reviewer's (load, capacity), as the directory says."""
    found = {}
    async with stack.client() as http:
        for rid in ids:
            me = (await http.get(f"/v1/reviewers/{rid}")).json()
            found[rid] = (me["load"], me["capacity"])
    return found


async def test_cases_at_both_copies_never_overfill_a_reviewer(
    copies: tuple[ReviewStack, str],
) -> None:
    stack, _ = copies
    p = unique("uro")
    ids = [f"{p}-1", f"{p}-2"]
    for rid in ids:
        await stack.add_reviewer(rid, ["urology"], ["fr"], capacity=2)
    # Published at once: their partitions spread them over both copies.
    cases = await asyncio.gather(*(stack.submit("urology") for _ in range(8)))

    async def settled() -> bool:
        statuses = [await stack.case_status(c) for c in cases]
        return all(s in ("assigned", "waiting") for s in statuses)

    await eventually(settled, timeout=60)
    statuses = [await stack.case_status(c) for c in cases]
    assert statuses.count("assigned") == 4, statuses
    assert await loads(stack, ids) == {rid: (2, 2) for rid in ids}
    assert len(await stack.log.settled()) >= 4


async def test_conflicting_answers_at_two_copies_have_one_outcome(
    copies: tuple[ReviewStack, str],
) -> None:
    stack, b_url = copies
    p = unique("end")
    reviewer = f"{p}-1"
    await stack.add_reviewer(reviewer, ["endocrinology"], ["fr"], capacity=8)
    await stack.add_reviewer(f"{p}-2", ["endocrinology"], ["fr"], capacity=8)
    cases = [await stack.submit("endocrinology") for _ in range(6)]
    assignments = []
    for case_id in cases:
        await stack.log.wait(case_id, ASSIGNED)
        assignments.append(await stack.assignment(case_id, 1))

    outcomes = []
    for assignment in assignments:
        aid, who = assignment["id"], assignment["reviewer_id"]
        async with (
            client(stack, stack.url, who, "reviewer") as at_a,
            client(stack, b_url, who, "reviewer") as at_b,
        ):
            # The same reviewer, two devices, two copies: accept here, decline there, at once.
            accept, decline = await asyncio.gather(
                at_a.post(f"/v1/assignments/{aid}/accept"),
                at_b.post(f"/v1/assignments/{aid}/decline", json=NOT_AVAILABLE),
            )
        codes = (accept.status_code, decline.status_code)
        assert codes in ((200, 409), (409, 200)), (codes, accept.text, decline.text)
        status = (await stack.assignment(assignment["case_id"], 1))["status"]
        assert status == ("accepted" if codes[0] == 200 else "declined")
        outcomes.append((assignment["case_id"], status))

    # One event per assignment: its outcome's, never both.
    for case_id, status in outcomes:
        wanted = ACCEPTED if status == "accepted" else DECLINED
        other = DECLINED if status == "accepted" else ACCEPTED
        await stack.log.wait(case_id, wanted)
        await stack.log.settled()
        assert stack.log.payloads(case_id, other) == [], (case_id, status)
    for rid, (load, capacity) in (await loads(stack, [reviewer, f"{p}-2"])).items():
        assert load <= capacity, rid
