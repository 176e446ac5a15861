"""Accept, opinion and correction on the real broker and store; bad input refused with nothing
half written; the reviewer directory; overdue assignments.

Each test uses a specialty of its own, so the reviewers of one test are never candidates for the
cases of another in this module's database.
"""

import json
from typing import Any

import httpx
import jwt
import pytest

from avis.shared.observability import trace_id_of
from avis.shared.sealing import Sealed
from tests.support.basics import eventually, publish, unique
from tests.support.problems import assert_problem
from tests.support.review import ReviewStack
from tests.support.topics import header

pytestmark = pytest.mark.infra

# Urgent cases fall due two seconds after assignment here; routine ones keep the default.
REVIEW_SETTINGS = {"sla_urgent_days": 2 / 86400}

ASSIGNED = "avis.review.assigned.v1"
ACCEPTED = "avis.review.accepted.v1"
DECLINED = "avis.review.declined.v1"
COMPLETED = "avis.review.completed.v1"
PROBLEM = "application/problem+json"


def opinion(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "diagnosis": {
            "assessment": "clarified",
            "explanation": "Findings fit a Crohn flare rather than ulcerative colitis.",
        },
        "imaging_and_lab_review": "Calprotectin markedly raised; MR enterography ileal thickening.",
        "alternative_pathways": "Biologic induction instead of a second steroid course.",
        "risk_benefit": "Steroid-sparing therapy lowers long-term bone and infection risks.",
        "further_tests": "Ileocolonoscopy with biopsies; TPMT before thiopurines.",
        "summary_for_patient": "Your doctors were right that your bowel is inflamed.",
    }
    body.update(changes)
    return body


async def test_accept_opinion_and_correction_each_version_sealed_on_the_topic(
    stack: ReviewStack,
) -> None:
    p = unique("gas")
    reviewer = await stack.add_reviewer(f"{p}-1", ["gastroenterology"], ["fr"], capacity=1)
    submitted = stack.case_event("gastroenterology")
    await publish(stack.publisher, submitted)
    case_id = submitted.subject
    await stack.log.wait(case_id, ASSIGNED)
    # The reviewer has no room left: the next case waits until the opinion is written.
    waiting = await stack.submit("gastroenterology")
    await eventually(lambda: _status_is(stack, waiting, "waiting"))

    async with stack.client(f"{p}-1", "reviewer") as http:
        (mine,) = [
            a
            for a in (await http.get("/v1/assignments")).json()["items"]
            if a["case_id"] == case_id
        ]
        url = f"/v1/assignments/{mine['id']}"
        assert mine["status"] == "assigned"
        accepted = await http.post(f"{url}/accept")
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["status"] == "accepted"
        assert (await http.post(f"{url}/accept")).status_code == 200, "accepting twice is a no-op"

        first = await http.post(f"{url}/opinion", json=opinion())
        assert first.status_code == 201, first.text
        assert first.json()["version"] == 1
        replay = await http.post(f"{url}/opinion", json=opinion())
        assert replay.status_code == 200
        assert replay.json() == first.json(), "the same opinion again gives the same result"
        different = await http.post(f"{url}/opinion", json=opinion(further_tests="None needed."))
        assert different.status_code == 409
        assert different.headers["content-type"] == PROBLEM
        assert "PUT" in different.json()["detail"]

        corrected = opinion(further_tests="Ileocolonoscopy with biopsies within four weeks.")
        second = await http.put(f"{url}/opinion", json=corrected)
        assert second.status_code == 200, second.text
        assert second.json()["version"] == 2
        same_again = await http.put(f"{url}/opinion", json=corrected)
        assert same_again.json()["version"] == 2, "repeating the latest version adds none"

        latest = (await http.get(f"{url}/opinion")).json()
        assert latest["version"] == 2
        assert latest["opinion"]["further_tests"] == corrected["further_tests"]
        original = (await http.get(f"{url}/opinion", params={"version": 1})).json()
        assert original["opinion"] == opinion()
        done = (await http.get(url)).json()
        assert (done["status"], done["opinion_version"]) == ("completed", 2)

    completed = await stack.log.wait(case_id, COMPLETED, count=2)
    await eventually(lambda: _outbox_empty(stack, mine["id"]))
    await stack.log.caught_up()  # whatever the assignment published is in the log now
    assert [c["version"] for c in stack.log.payloads(case_id, COMPLETED)] == [1, 2]
    for record, expected in zip(
        stack.log.of(case_id, COMPLETED), [opinion(), corrected], strict=True
    ):
        event_id = header(record, "ce_id")
        sealed = Sealed.model_validate(json.loads(record.value or b"")["opinion"])
        opened = stack.keyring.open_json(sealed, aad=event_id)
        assert {k: opened[k] for k in expected} == expected
        assert opened["reviewer_display_name"] == reviewer["display_name"]
        # Nothing clinical, and not the reviewer's name, in clear in the record.
        raw = (record.value or b"") + b"".join(v for _, v in record.headers or ())
        for text in [*_texts(expected), reviewer["display_name"]]:
            assert text.encode() not in raw
    assert completed[0]["specialty"] == "gastroenterology"
    assert completed[0]["reviewer_id"] == f"{p}-1"

    # Every step joins the case's trace, started by the submission.
    case_trace = trace_id_of(submitted.traceparent)
    assert case_trace
    for record in stack.log.of(case_id):
        assert trace_id_of(header(record, "traceparent")) == case_trace, header(record, "ce_type")
    assert len(stack.log.of(case_id, ACCEPTED)) == 1
    # Review numbers every event of the case that drives its status, one after the other.
    seqs = [
        e["seq"] for t in (ASSIGNED, ACCEPTED, COMPLETED) for e in stack.log.payloads(case_id, t)
    ]
    assert seqs == [1, 2, 3, 4], seqs

    # The answered case freed the reviewer: the waiting case is theirs now.
    (event,) = await stack.log.wait(waiting, ASSIGNED)
    assert event["reviewer_id"] == f"{p}-1"


def _texts(body: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for value in body.values():
        out.extend(_texts(value) if isinstance(value, dict) else [value])
    return [t for t in out if len(t) > 12]


async def _status_is(stack: ReviewStack, case_id: str, status: str) -> bool:
    return await stack.case_status(case_id) == status


async def test_bad_input_gets_a_clear_4xx_and_nothing_half_written(stack: ReviewStack) -> None:
    p = unique("neu")
    await stack.add_reviewer(f"{p}-1", ["neurology"], ["fr"])
    await stack.add_reviewer(f"{p}-other", ["neurology"], ["en"])
    case_id = await stack.submit("neurology")
    await stack.log.wait(case_id, ASSIGNED)
    assignment = await stack.assignment(case_id)
    url = f"/v1/assignments/{assignment['id']}"
    before = await stack.db["assignments"].find_one({"_id": assignment["id"]})

    async with (
        stack.client(f"{p}-1", "reviewer") as mine,
        stack.client(f"{p}-other", "reviewer") as other,
    ):
        assert_problem(await mine.post(f"{url}/opinion", json=opinion()), 409)
        assert_problem(await other.post(f"{url}/opinion", json=opinion()), 403)
        assert_problem(await other.post(f"{url}/accept"), 403)
        assert_problem(
            await other.post(f"{url}/decline", json={"reason_code": "other", "reason": "x"}), 403
        )
        assert_problem(
            await mine.post(f"{url}/decline", json={"reason_code": "other"}),
            422,
            fields=("body.reason",),
        )
        assert_problem(
            await mine.post(f"{url}/decline", json={"reason_code": "other", "reason": " "}),
            422,
            fields=("body.reason",),
        )
        assert_problem(await mine.put(f"{url}/opinion", json=opinion()), 409)
        assert_problem(await mine.post("/v1/assignments/no-such-assignment/accept"), 404)
        middle = await stack.db["assignments"].find_one({"_id": assignment["id"]})
        assert middle == before, "refused requests wrote nothing"

        assert (await mine.post(f"{url}/accept")).status_code == 200
        incomplete = opinion()
        del incomplete["risk_benefit"], incomplete["summary_for_patient"]
        assert_problem(
            await mine.post(f"{url}/opinion", json=incomplete),
            422,
            fields=("body.risk_benefit", "body.summary_for_patient"),
        )
        blank = opinion(diagnosis={"assessment": "confirmed", "explanation": "   "})
        body = assert_problem(
            await mine.post(f"{url}/opinion", json=blank),
            422,
            fields=("body.diagnosis.explanation",),
        )
        assert "Crohn" not in json.dumps(body), "an error never echoes clinical text"
        # Said in words, not as the regular expression the schema declares.
        (error,) = [e for e in body["errors"] if e["field"] == "body.diagnosis.explanation"]
        assert "blank" in error["message"] and "pattern" not in error["message"], error
        assert_problem(
            await mine.post(
                f"{url}/opinion",
                json=opinion(diagnosis={"assessment": "maybe", "explanation": "x"}),
            ),
            422,
        )
        assert_problem(
            await mine.post(f"{url}/decline", json={"reason_code": "other", "reason": "late"}), 409
        )

    forged = jwt.encode(
        {"sub": f"{p}-1", "role": "reviewer", "aud": "avis", "exp": 4102444800},
        "another-secret-" + "y" * 40,
        algorithm="HS256",
    )
    unsigned = jwt.encode(
        {"sub": f"{p}-1", "role": "reviewer", "aud": "avis", "exp": 4102444800},
        "",
        algorithm="none",
    )
    async with httpx.AsyncClient(base_url=stack.url) as anonymous:
        for headers in (
            {"Authorization": f"Bearer {forged}"},
            {"Authorization": f"Bearer {unsigned}"},
            {},
        ):
            response = await anonymous.post(f"{url}/opinion", json=opinion(), headers=headers)
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer")
    async with stack.client("patient-1", "patient") as patient:
        assert_problem(await patient.get("/v1/assignments"), 403)
        assert_problem(await patient.post(f"{url}/opinion", json=opinion()), 403)

    after = await stack.db["assignments"].find_one({"_id": assignment["id"]})
    assert after is not None
    assert after["status"] == "accepted"
    assert after["opinions"] == []
    assert "decline" not in after and "completed_at" not in after
    await eventually(lambda: _outbox_empty(stack, assignment["id"]))
    await stack.log.caught_up()
    assert [header(r, "ce_type") for r in stack.log.of(case_id)] == [ASSIGNED, ACCEPTED]


async def _outbox_empty(stack: ReviewStack, assignment_id: str) -> bool:
    doc = await stack.db["assignments"].find_one({"_id": assignment_id}, {"outbox_pending": 1})
    return doc is not None and doc["outbox_pending"] == 0


async def test_reviewer_directory_for_coordinators(stack: ReviewStack) -> None:
    p = unique("der")
    ids = [f"{p}-{n}" for n in range(5)]
    for rid in ids:
        await stack.add_reviewer(rid, ["dermatology"], ["fr", "en"], capacity=2)
    async with stack.client() as http:
        same = await http.post(
            "/v1/reviewers",
            json={
                "id": ids[0],
                "display_name": f"Reviewer {ids[0]}",
                "specialties": ["dermatology"],
                "languages": ["fr", "en"],
                "institution_code": None,
                "capacity": 2,
            },
        )
        assert same.status_code == 200, "the same reviewer again is a no-op"
        clash = await http.post(
            "/v1/reviewers",
            json={
                "id": ids[0],
                "display_name": "Someone else",
                "specialties": ["dermatology"],
                "languages": ["fr"],
                "capacity": 2,
            },
        )
        assert_problem(clash, 409)

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"specialty": "dermatology", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await http.get("/v1/reviewers", params=params)).json()
            assert len(page["items"]) <= 2
            seen.extend(r["id"] for r in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids, "every reviewer once, by id"

        patched = await http.patch(f"/v1/reviewers/{ids[1]}", json={"active": False, "capacity": 4})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["active"], patched.json()["capacity"]) == (False, 4)
        inactive = (
            await http.get("/v1/reviewers", params={"specialty": "dermatology", "active": False})
        ).json()
        assert [r["id"] for r in inactive["items"]] == [ids[1]]

        assert_problem(await http.patch(f"/v1/reviewers/{p}-nobody", json={"capacity": 1}), 404)
        assert_problem(await http.patch(f"/v1/reviewers/{ids[1]}", json={"capacity": None}), 422)
        assert_problem(
            await http.patch(f"/v1/reviewers/{ids[1]}", json={"capacity": -1}),
            422,
            fields=("body.capacity",),
        )
        assert_problem(await http.get("/v1/reviewers", params={"cursor": ""}), 422)
        bad = {
            "id": f"{p}-x",
            "display_name": "X",
            "specialties": ["astrology"],
            "languages": ["fr"],
            "capacity": 1,
        }
        assert_problem(
            await http.post("/v1/reviewers", json=bad), 422, fields=("body.specialties.0",)
        )

    async with stack.client(ids[2], "reviewer") as self_:
        assert (await self_.get(f"/v1/reviewers/{ids[2]}")).status_code == 200
        assert_problem(await self_.get(f"/v1/reviewers/{ids[3]}"), 403)
        assert_problem(await self_.get("/v1/reviewers"), 403)
        assert_problem(await self_.get("/v1/queue"), 403)
        assert_problem(await self_.get("/v1/assignments", params={"reviewer_id": ids[3]}), 403)


async def test_overdue_assignments_are_listed_and_counted(stack: ReviewStack) -> None:
    p = unique("pul")
    await stack.add_reviewer(f"{p}-1", ["pulmonology"], ["fr"])
    case_id = await stack.submit("pulmonology", urgency="urgent")
    await stack.log.wait(case_id, ASSIGNED)
    assignment = await stack.assignment(case_id)

    async def overdue_ids() -> set[str]:
        async with stack.client() as http:
            page = (
                await http.get("/v1/assignments", params={"overdue": "true", "limit": 100})
            ).json()
        return {a["id"] for a in page["items"]}

    await eventually(lambda: _contains(overdue_ids(), assignment["id"]), timeout=15)
    async with stack.client() as http:
        current = await http.get("/v1/assignments", params={"overdue": "false", "limit": 100})
        assert assignment["id"] not in {a["id"] for a in current.json()["items"]}
        metrics = (await http.get("/metrics")).text
    gauge = [
        line
        for line in metrics.splitlines()
        if line.startswith("avis_review_overdue_assignments{")
        and f'service="{stack.settings.service_name}"' in line
    ]
    assert gauge and float(gauge[0].rsplit(" ", 1)[1]) >= 1
    async with stack.client(f"{p}-1", "reviewer") as http:
        mine = (await http.get(f"/v1/assignments/{assignment['id']}")).json()
    assert mine["overdue"] is True


async def _contains(ids: Any, wanted: str) -> bool:
    return wanted in await ids
