"""Who may read a case's notifications, paging, and problems for bad input; schemathesis with
every role's token finds no failure."""

import pytest

from tests.support.fuzz import assert_clean, fuzz
from tests.support.notify import NotifyStack

pytestmark = pytest.mark.infra


async def test_coordinators_and_the_patient_read_others_do_not(stack: NotifyStack) -> None:
    p = stack.patient("fr")
    submitted = stack.submitted(p)
    await stack.publish(submitted, stack.assigned(p, 4, submitted.traceparent))
    await stack.settled(p.case_id, 2)
    async with stack.client(p.patient_id, "patient") as own:
        page = await own.get("/v1/notifications", params={"case_id": p.case_id, "limit": 1})
        assert page.status_code == 200, page.text
        first = page.json()
        assert len(first["items"]) == 1 and first["next_cursor"] == "1"
        rest = await own.get(
            "/v1/notifications",
            params={"case_id": p.case_id, "limit": 1, "cursor": first["next_cursor"]},
        )
        assert [n["template"] for n in rest.json()["items"]] == ["review_assigned"]
        assert rest.json()["next_cursor"] is None
        one = await own.get(f"/v1/notifications/{first['items'][0]['id']}")
        assert one.status_code == 200
        for field in ("email", "to", "address"):
            assert field not in one.json()
        assert p.email not in one.text
    async with stack.client("someone-else", "patient") as other:
        hidden = await other.get("/v1/notifications", params={"case_id": p.case_id})
        assert hidden.status_code == 404
        assert hidden.headers["content-type"] == "application/problem+json"
        one = await other.get(f"/v1/notifications/{first['items'][0]['id']}")
        assert one.status_code == 404
    for role in ("reviewer", "partner", "service"):
        async with stack.client("x", role) as http:  # type: ignore[arg-type]
            refused = await http.get("/v1/notifications", params={"case_id": p.case_id})
            assert refused.status_code == 403, role
    async with stack.client() as coordinator:
        assert (await coordinator.get("/v1/notifications")).status_code == 422
        bad = await coordinator.get(
            "/v1/notifications", params={"case_id": p.case_id, "cursor": "x"}
        )
        assert bad.status_code == 422 and bad.json()["errors"]
        unknown = await coordinator.get("/v1/notifications", params={"case_id": "case-nope"})
        assert unknown.status_code == 404


async def test_openapi_fuzzing_with_each_role_finds_nothing(stack: NotifyStack) -> None:
    p = stack.patient("en")
    await stack.publish(stack.submitted(p))
    await stack.settled(p.case_id, 1)
    # The notifications' operations; the webhooks' are fuzzed in test_notify_webhooks.py.
    only = ("--include-path-regex", "^/v1/notifications")
    for sub, role in (("coord-fuzz", "coordinator"), (p.patient_id, "patient")):
        token = stack.token(sub, role)  # type: ignore[arg-type]
        assert_clean(await fuzz(stack.url, token, *only, seed="20260301", max_seconds=8))
    for sub, role in (("rev-fuzz", "reviewer"), ("partner-fuzz", "partner")):
        token = stack.token(sub, role)  # type: ignore[arg-type]
        assert_clean(await fuzz(stack.url, token, *only, seed="20260301", max_seconds=5))
