"""Requests for more information on the real broker and store: while one is open the SLA clock
stands (the overdue list and gauge honour the pause), and an unanswered one expires, resumes the
clock with the due date moved by exactly the pause, and is listed for coordinators."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.basics import eventually, unique
from tests.support.review import ReviewStack

pytestmark = pytest.mark.infra

# Urgent cases fall due six seconds after assignment; a request expires ten seconds after it
# was asked.
REVIEW_SETTINGS = {"sla_urgent_days": 6 / 86400, "information_expiry_days": 10 / 86400}

ASSIGNED = "avis.review.assigned.v1"
REQUESTED = "avis.review.information-requested.v1"
RESUMED = "avis.review.resumed.v1"


async def test_the_clock_stands_while_a_request_waits_and_an_expiry_resumes_it(
    stack: ReviewStack,
) -> None:
    p = unique("nep")
    await stack.add_reviewer(f"{p}-1", ["nephrology"], ["fr"])
    case_id = await stack.submit("nephrology", urgency="urgent")
    await stack.log.wait(case_id, ASSIGNED)
    assigned = await stack.assignment(case_id)
    url = f"/v1/assignments/{assigned['id']}"
    async with stack.client(f"{p}-1", "reviewer") as http:
        assert (await http.post(f"{url}/accept")).status_code == 200
        asked = await http.post(f"{url}/information-requests", json={"text": "Quel traitement ?"})
        assert asked.status_code == 201, asked.text
    (request,) = asked.json()["information_requests"]
    due, paused_since = _at(assigned["due_at"]), _at(asked.json()["paused_since"])
    (published,) = await stack.log.wait(case_id, REQUESTED)
    assert published["request_id"] == request["id"] and "question" in published
    assert published["seq"] > 0
    async with stack.client() as coordinator:
        listed = await coordinator.get("/v1/information-requests", params={"state": "open"})
        assert request["id"] in [r["id"] for r in listed.json()["items"]]
        gauge = "avis_information_requests_waiting"
        await eventually(lambda: _metric_at_least(coordinator, gauge, stack, 1), timeout=5)

    # Past the due date, the standing clock keeps the assignment off the overdue list, unless
    # it was overdue already when the request was made.
    await eventually(lambda: _past(due + timedelta(seconds=1)), timeout=15)
    was_late = paused_since > due
    async with stack.client() as coordinator:
        mine = (await coordinator.get(url)).json()
        assert mine["overdue"] is was_late
        late = await coordinator.get("/v1/assignments", params={"overdue": "true", "limit": 100})
        assert (assigned["id"] in {a["id"] for a in late.json()["items"]}) is was_late

    # Unanswered, it expires: the clock resumes, the due date moved by exactly the pause.
    (resumed,) = await stack.log.wait(case_id, RESUMED, timeout=60)
    assert resumed["outcome"] == "expired" and resumed["request_id"] == request["id"]
    pause = _at(request["expires_at"]) - _at(request["requested_at"])
    assert _at(resumed["due_at"]) - due == pause
    assert resumed["seq"] == published["seq"] + 1
    async with stack.client() as coordinator:
        expired = await coordinator.get("/v1/information-requests", params={"state": "expired"})
        (shown,) = [r for r in expired.json()["items"] if r["id"] == request["id"]]
        assert shown["paused_seconds"] == pause.total_seconds()
        after = (await coordinator.get(url)).json()
        assert after["paused_since"] is None and _at(after["due_at"]) == due + pause
        # Filed again under its new due date: the list finds it there.
        page = await coordinator.get("/v1/assignments", params={"limit": 100})
        assert assigned["id"] in [a["id"] for a in page.json()["items"]]
        bad = await coordinator.get("/v1/information-requests", params={"cursor": "x"})
        assert bad.status_code == 422


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _past(moment: datetime) -> bool:
    return datetime.now(UTC) > moment


async def _metric_at_least(http: Any, name: str, stack: ReviewStack, least: float) -> bool:
    text = (await http.get("/metrics")).text
    lines = [
        line
        for line in text.splitlines()
        if line.startswith(name + "{") and f'service="{stack.settings.service_name}"' in line
    ]
    return bool(lines) and float(lines[0].rsplit(" ", 1)[1]) >= least
