"""Matching on the real broker and store: who gets a case, declines, the queue, withdrawals and
capacity under simultaneous submissions.

Each test uses a specialty of its own, so the reviewers of one test are never candidates for the
cases of another in this module's database.
"""

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from avis.shared.events import CaseSubmitted
from avis.shared.topics import CASE_SUBMITTED
from tests.support.basics import eventually, publish, unique
from tests.support.review import ReviewStack
from tests.support.topics import header

pytestmark = pytest.mark.infra

ASSIGNED = "avis.review.assigned.v1"
DECLINED = "avis.review.declined.v1"


def days_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 86400


async def test_matched_by_specialty_language_institution_then_least_load(
    stack: ReviewStack,
) -> None:
    p = unique("nep")
    # The misfits sort first by id: were a rule ignored, the tie-break would pick them.
    await stack.add_reviewer(f"{p}-0-language", ["nephrology"], ["en"], "HOSP-Z")
    await stack.add_reviewer(f"{p}-0-institution", ["nephrology"], ["fr"], "HOSP-TREATING")
    await stack.add_reviewer(f"{p}-0-full", ["nephrology"], ["fr"], "HOSP-Z", capacity=0)
    await stack.add_reviewer(f"{p}-0-inactive", ["nephrology"], ["fr"], "HOSP-Z", active=False)
    await stack.add_reviewer(f"{p}-0-specialty", ["orthopaedics"], ["fr"], "HOSP-Z")
    await stack.add_reviewer(f"{p}-a", ["nephrology"], ["fr", "en"], "HOSP-X")
    await stack.add_reviewer(f"{p}-b", ["nephrology", "orthopaedics"], ["fr"], "HOSP-Y")

    chosen = []
    for _ in range(3):
        # One at a time: each decision must see the load the previous one added.
        case_id = await stack.submit("nephrology", language="fr", institution="hosp-treating")
        (event,) = await stack.log.wait(case_id, ASSIGNED)
        assert event["specialty"] == "nephrology"
        assert days_between(event["assigned_at"], event["due_at"]) == pytest.approx(7)
        chosen.append((case_id, event["reviewer_id"]))

    assert [r for _, r in chosen] == [f"{p}-a", f"{p}-b", f"{p}-a"]
    first = await stack.assignment(chosen[0][0])
    second = await stack.assignment(chosen[1][0])
    assert first["rationale"]["rule"] == "tie_break_by_id"
    assert second["rationale"]["rule"] == "least_load"
    excluded = {c["reviewer_id"]: c["excluded"] for c in first["rationale"]["candidates"]}
    assert excluded == {
        f"{p}-0-full": "at_capacity",
        f"{p}-0-institution": "institution_conflict",
        f"{p}-0-language": "language",
        f"{p}-a": None,
        f"{p}-b": None,
    }
    assert first["case_url"].endswith(chosen[0][0])
    # Kept as one text, which the local store decodes at once (docs/store-contract.md).
    stored = await stack.db["assignments"].find_one({"_id": first["id"]}, {"rationale": 1})
    assert stored is not None and json.loads(stored["rationale"])["rule"] == "tie_break_by_id"

    async with stack.client(f"{p}-a", "reviewer") as http:
        mine = (await http.get("/v1/assignments")).json()["items"]
        me = (await http.get(f"/v1/reviewers/{p}-a")).json()
    assert {a["case_id"] for a in mine} == {chosen[0][0], chosen[2][0]}
    assert all(a["rationale"] is None for a in mine), "the rationale is for coordinators"
    assert me["load"] == 2


async def test_decline_reassigns_to_the_next_best_and_never_back(stack: ReviewStack) -> None:
    p = unique("hae")
    await stack.add_reviewer(f"{p}-1", ["haematology"], ["fr"])
    await stack.add_reviewer(f"{p}-2", ["haematology"], ["fr"])
    case_id = await stack.submit("haematology")
    await stack.log.wait(case_id, ASSIGNED)
    first = await stack.assignment(case_id)
    assert first["reviewer_id"] == f"{p}-1"

    reason = "I treated a close relative of this patient"
    async with stack.client(f"{p}-1", "reviewer") as http:
        response = await http.post(
            f"/v1/assignments/{first['id']}/decline",
            json={"reason_code": "conflict_of_interest", "reason": reason},
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "declined"
        assert response.json()["decline_reason"] is None, "free text is for coordinators"
        again = await http.post(
            f"/v1/assignments/{first['id']}/decline",
            json={"reason_code": "conflict_of_interest", "reason": reason},
        )
        assert again.status_code == 200, "declining twice is a replay"

    assigned = await stack.log.wait(case_id, ASSIGNED, count=2)
    assert [a["reviewer_id"] for a in assigned] == [f"{p}-1", f"{p}-2"]
    (declined,) = await stack.log.wait(case_id, DECLINED)
    assert declined["reason_code"] == "conflict_of_interest"
    assert declined["reviewer_id"] == f"{p}-1"
    for record in stack.log.of(case_id):
        assert reason.encode() not in record.value, "the free-text reason never leaves review"
    coordinator_view = await stack.assignment(case_id, round_=1)
    assert coordinator_view["decline_reason"] == reason

    second = await stack.assignment(case_id)
    assert second["round"] == 2
    async with stack.client(f"{p}-2", "reviewer") as http:
        response = await http.post(
            f"/v1/assignments/{second['id']}/decline",
            json={"reason_code": "no_availability", "reason": "On leave"},
        )
        assert response.status_code == 200, response.text
    await stack.log.wait(case_id, DECLINED, count=2)
    # Both declined: nobody is left, so the case waits, and neither is asked again.
    await eventually(lambda: stack.case_status(case_id), timeout=10)
    assert await stack.case_status(case_id) == "waiting"
    async with stack.client() as http:
        queue = (await http.get("/v1/queue", params={"specialty": "haematology"})).json()
    (waiting,) = [c for c in queue["items"] if c["case_id"] == case_id]
    assert waiting["declined_by"] == [f"{p}-1", f"{p}-2"]

    # A new reviewer joins: the queue is offered to them at once.
    await stack.add_reviewer(f"{p}-3", ["haematology"], ["fr"])
    assigned = await stack.log.wait(case_id, ASSIGNED, count=3)
    assert [a["reviewer_id"] for a in assigned] == [f"{p}-1", f"{p}-2", f"{p}-3"]
    assert case_id not in await stack.queued()
    assert len(stack.log.of(case_id, DECLINED)) == 2, "the replayed decline published nothing"
    # One partition per case: every consumer meets the steps in the order they happened.
    steps = [
        (header(r, "ce_type"), json.loads(r.value or b"")["reviewer_id"])
        for r in stack.log.of(case_id)
    ]
    assert steps == [
        (ASSIGNED, f"{p}-1"),
        (DECLINED, f"{p}-1"),
        (ASSIGNED, f"{p}-2"),
        (DECLINED, f"{p}-2"),
        (ASSIGNED, f"{p}-3"),
    ]


async def test_a_decline_offers_the_freed_place_to_a_case_waiting_at_capacity(
    stack: ReviewStack,
) -> None:
    """A full reviewer declines one case: the place it frees goes to the case waiting for
    them (nobody_fits: at_capacity), through the queue offered as after an opinion."""
    p, first, waiting = await _full_with_one_waiting(stack, "neurology")
    async with stack.client() as http:
        queue = (await http.get("/v1/queue", params={"specialty": "neurology"})).json()
    (queued,) = [c for c in queue["items"] if c["case_id"] == waiting]
    assert [c["excluded"] for c in queued["last_attempt"]["candidates"]] == ["at_capacity"]

    declined = await stack.assignment(first)
    async with stack.client(f"{p}-1", "reviewer") as http:
        response = await http.post(
            f"/v1/assignments/{declined['id']}/decline",
            json={"reason_code": "no_availability", "reason": "On leave"},
        )
        assert response.status_code == 200, response.text

    (event,) = await stack.log.wait(waiting, ASSIGNED)
    assert event["reviewer_id"] == f"{p}-1"
    assert await stack.case_status(waiting) == "assigned"
    # The declined case waits (its only reviewer declined it), never back to them.
    await eventually(lambda: _waiting(stack, first))
    assert len(stack.log.of(first, ASSIGNED)) == 1


async def test_a_place_freed_by_the_sla_watch_goes_to_a_case_waiting_at_capacity(
    stack: ReviewStack,
) -> None:
    """A process stopped between ending a round and releasing its reviewer leaves the round in
    the reviewer's load; the SLA watch releases it, and offers the freed place to the case
    waiting for that reviewer at capacity."""
    p, first, waiting = await _full_with_one_waiting(stack, "rheumatology")

    # The round ends (its opinion written) and the process stops before the release.
    ended = await stack.assignment(first)
    await stack.db["assignments"].update_one(
        {"_id": ended["id"]}, {"$set": {"status": "completed"}}
    )

    (event,) = await stack.log.wait(waiting, ASSIGNED)
    assert event["reviewer_id"] == f"{p}-1"
    reviewer = await stack.db["reviewers"].find_one({"_id": f"{p}-1"})
    assert reviewer is not None and ended["id"] not in reviewer["open_assignments"]


async def test_a_case_nobody_fits_waits_until_a_coordinator_assigns_it(
    stack: ReviewStack,
) -> None:
    p = unique("rhe")
    await stack.add_reviewer(f"{p}-fr", ["rheumatology"], ["fr"])
    case_id = await stack.submit("rheumatology", language="en")
    await eventually(lambda: _waiting(stack, case_id))
    async with stack.client() as http:
        queue = (await http.get("/v1/queue", params={"specialty": "rheumatology"})).json()
        (waiting,) = [c for c in queue["items"] if c["case_id"] == case_id]
        assert waiting["last_attempt"]["rule"] == "nobody_fits"
        assert waiting["last_attempt"]["candidates"][0]["excluded"] == "language"
        stored = await stack.db["cases"].find_one({"_id": case_id}, {"last_attempt": 1})
        assert stored is not None and isinstance(stored["last_attempt"], str)

        assign = f"/v1/queue/{case_id}/assign"
        refused = await http.post(assign, json={"reviewer_id": f"{p}-fr"})
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "language" in refused.json()["detail"]
        unknown = await http.post(assign, json={"reviewer_id": f"{p}-nobody"})
        assert unknown.status_code == 404

        # A reviewer who reads English but has no room: the matcher leaves the case waiting...
        await stack.add_reviewer(f"{p}-en", ["rheumatology"], ["en"], capacity=0)
        await asyncio.sleep(0.5)
        assert await stack.case_status(case_id) == "waiting"
        # ...and a coordinator may override capacity, never the other rules.
        response = await http.post(assign, json={"reviewer_id": f"{p}-en"})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["reviewer_id"] == f"{p}-en"
        assert body["rationale"]["rule"] == "coordinator"
        assert body["rationale"]["decided_by"] == "coord-1"

        again = await http.post(assign, json={"reviewer_id": f"{p}-en"})
        assert again.status_code == 409
        missing = await http.post(f"/v1/queue/{unique('case')}/assign", json={"reviewer_id": "x"})
        assert missing.status_code == 404
    (event,) = await stack.log.wait(case_id, ASSIGNED)
    assert event["reviewer_id"] == f"{p}-en"
    assert case_id not in await stack.queued()


async def _waiting(stack: ReviewStack, case_id: str) -> bool:
    return case_id in await stack.queued()


async def _full_with_one_waiting(stack: ReviewStack, specialty: str) -> tuple[str, str, str]:
    """One reviewer of `specialty` at its capacity of 1, a first case assigned to them and a
    second waiting for them; the reviewers' prefix and the two cases."""
    p = unique(specialty[:3])
    await stack.add_reviewer(f"{p}-1", [specialty], ["fr"], capacity=1)
    first = await stack.submit(specialty)
    await stack.log.wait(first, ASSIGNED)
    waiting = await stack.submit(specialty)
    await eventually(lambda: _waiting(stack, waiting))
    return p, first, waiting


async def test_withdrawal_releases_the_reviewer_and_leaves_the_queue(stack: ReviewStack) -> None:
    p = unique("uro")
    await stack.add_reviewer(f"{p}-1", ["urology"], ["fr"], capacity=1)
    first = await stack.submit("urology")
    await stack.log.wait(first, ASSIGNED)
    second = await stack.submit("urology")
    await eventually(lambda: _waiting(stack, second))
    third = await stack.submit("urology")
    await eventually(lambda: _waiting(stack, third))

    await stack.withdraw(third)
    await eventually(lambda: _status_is(stack, third, "withdrawn"))
    assert third not in await stack.queued()

    await stack.withdraw(first)
    (event,) = await stack.log.wait(second, ASSIGNED)
    assert event["reviewer_id"] == f"{p}-1"
    cancelled = await stack.assignment(first)
    assert cancelled["status"] == "cancelled"
    assert stack.log.of(third, ASSIGNED) == []

    # Withdrawn before review ever saw it: a late submission changes nothing.
    early = unique("case")
    await stack.withdraw(early)
    await eventually(lambda: _status_is(stack, early, "withdrawn"))
    late = stack.case_event("urology", case_id=early)
    await publish(stack.publisher, late)
    await stack.consumed(late)
    await stack.log.caught_up()
    assert await stack.case_status(early) == "withdrawn"
    assert stack.log.of(early) == []


async def _status_is(stack: ReviewStack, case_id: str, status: str) -> bool:
    return await stack.case_status(case_id) == status


async def test_two_cases_at_the_same_moment_never_push_a_reviewer_over_capacity(
    stack: ReviewStack,
) -> None:
    p = unique("endo")
    await stack.add_reviewer(f"{p}-1", ["endocrinology"], ["fr"], capacity=1)
    events = [stack.case_event("endocrinology") for _ in range(2)]
    await asyncio.gather(*(publish(stack.publisher, e) for e in events))
    ids = [e.subject for e in events]
    await eventually(lambda: _all_decided(stack, ids))
    statuses = [await stack.case_status(i) for i in ids]
    assert sorted(s or "" for s in statuses) == ["assigned", "waiting"]
    async with stack.client() as http:
        me = (await http.get(f"/v1/reviewers/{p}-1")).json()
    assert me["load"] == 1

    # The same race straight at the service, many at once: the matching lock is what holds.
    await stack.add_reviewer(f"{p}-cap2", ["pulmonology"], ["en"], capacity=2)
    await stack.add_reviewer(f"{p}-cap1", ["pulmonology"], ["en"], capacity=1)
    payloads = [stack.case_event("pulmonology", language="en").payload() for _ in range(8)]
    await asyncio.gather(
        *(
            stack.review.case_submitted(case=c, traceparent="")
            for c in payloads
            if isinstance(c, CaseSubmitted)
        )
    )
    loads = await stack.review.store.loads([f"{p}-cap2", f"{p}-cap1"])
    assert loads == {f"{p}-cap2": 2, f"{p}-cap1": 1}
    # the loads on the reviewers' documents are what the assignments say
    active = {"$in": ["assigned", "accepted"]}
    counted = {
        rid: await stack.review.store.assignments.count_documents(
            {"reviewer_id": rid, "status": active}
        )
        for rid in loads
    }
    assert counted == loads
    decided = [await stack.case_status(c.case_id) for c in payloads]
    assert decided.count("assigned") == 3
    assert decided.count("waiting") == 5


async def _all_decided(stack: ReviewStack, ids: list[str]) -> bool:
    statuses = [await stack.case_status(i) for i in ids]
    return all(s in ("assigned", "waiting") for s in statuses)


async def test_a_matching_left_half_way_is_finished_at_start_up(stack: ReviewStack) -> None:
    p = unique("pae")
    await stack.add_reviewer(f"{p}-1", ["paediatrics"], ["fr"])
    cases = stack.db["cases"]

    # Stopped half-way through a decline: the case was marked for matching, the round was not
    # declined yet. The start-up puts the case back as it was, with no new round.
    kept = stack.case_event("paediatrics").payload()
    assert isinstance(kept, CaseSubmitted)
    await stack.review.case_submitted(case=kept, traceparent="")
    before = await stack.assignment(kept.case_id)
    await stack.review.store.set_case_matching(kept.case_id)  # as the decline's first write

    # Stopped after the case was stored, before any decision: the start-up matches it.
    late = stack.case_event("paediatrics").payload()
    assert isinstance(late, CaseSubmitted)
    await stack.review.case_submitted(case=late, traceparent="")  # assigned now; undo it by hand:
    undone = await stack.assignment(late.case_id)
    await stack.db["assignments"].delete_many({"case_id": late.case_id})
    await stack.review.store.remove_open(undone["reviewer_id"], undone["id"])
    await stack.review.store.set_case_matching(late.case_id)  # as when the case was stored
    await cases.update_one(
        {"_id": late.case_id}, {"$set": {"round": 0}, "$unset": {"assignment_id": ""}}
    )

    await stack.review.matcher.recover()
    after = await stack.assignment(kept.case_id)
    assert (after["id"], after["round"], after["status"]) == (before["id"], 1, "assigned")
    assert await stack.case_status(kept.case_id) == "assigned"
    assert await stack.case_status(late.case_id) == "assigned"
    assert (await stack.assignment(late.case_id))["reviewer_id"] == f"{p}-1"
    await stack.review.matcher.recover()
    async with stack.client() as http:
        rounds = (await http.get("/v1/assignments", params={"case_id": kept.case_id})).json()
    assert len(rounds["items"]) == 1, "recovering twice adds nothing"


async def test_a_redelivered_submission_is_turned_away_by_the_stored_case(
    stack: ReviewStack,
) -> None:
    """No inbox look-up precedes a submission (it is `recorded`): the same event twice more,
    each applied again, assigns nothing new."""
    p = unique("derm")
    await stack.add_reviewer(f"{p}-1", ["dermatology"], ["fr"], capacity=5)
    event = stack.case_event("dermatology")
    case_id = event.subject
    labels = {"service": stack.settings.service_name, "topic": CASE_SUBMITTED, "type": event.type}

    def outcomes(outcome: str) -> float:
        found = REGISTRY.get_sample_value(
            "avis_events_consumed_total", labels | {"outcome": outcome}
        )
        return found or 0.0

    applied, duplicates = outcomes("applied"), outcomes("duplicate")
    await publish(stack.publisher, event)
    await stack.log.wait(case_id, ASSIGNED)
    for _ in range(2):
        await publish(stack.publisher, event)
    await eventually(lambda: outcomes("applied") == applied + 3)
    assert outcomes("duplicate") == duplicates, "never looked up in the inbox"
    await stack.log.caught_up()
    assert len(stack.log.of(case_id, ASSIGNED)) == 1, "one assignment, published once"
    assert (await stack.assignment(case_id))["round"] == 1


class _CountedFinds:
    """A collection whose filter queries (`find`) are noted; everything else as it is."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.filters: list[dict[str, Any]] = []

    def find(self, filter_: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.filters.append(filter_)
        return self.collection.find(filter_, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)


async def test_cases_submitted_at_once_share_one_read_of_the_reviewers(
    stack: ReviewStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = unique("batch")
    await stack.add_reviewer(f"{p}-a", ["gastroenterology"], ["en"], capacity=2)
    await stack.add_reviewer(f"{p}-b", ["gastroenterology"], ["en"], capacity=1)
    await stack.add_reviewer(f"{p}-c", ["rare_diseases"], ["en"], capacity=1)
    counted = _CountedFinds(stack.review.store.reviewers)
    monkeypatch.setattr(stack.review.store, "reviewers", counted)
    specialties = ["gastroenterology"] * 4 + ["rare_diseases"] * 2
    payloads = [stack.case_event(s, language="en").payload() for s in specialties]
    await asyncio.gather(
        *(
            stack.review.case_submitted(case=c, traceparent="")
            for c in payloads
            if isinstance(c, CaseSubmitted)
        )
    )
    # decided together: one read of the active reviewers for the six decisions, not one each
    # (the overdue gauge may read the whole directory meanwhile)
    assert [f for f in counted.filters if f.get("active") is True] == [{"active": True}]
    # and each reviewer's choice counted for the next decision of the batch
    loads = await stack.review.store.loads([f"{p}-a", f"{p}-b", f"{p}-c"])
    assert loads == {f"{p}-a": 2, f"{p}-b": 1, f"{p}-c": 1}
    decided = [await stack.case_status(c.case_id) for c in payloads]
    assert decided == ["assigned"] * 3 + ["waiting", "assigned", "waiting"]
