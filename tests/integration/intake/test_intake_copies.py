"""Two copies of intake over one store and one consumer group, and a patient whose requests
reach either, as behind a load balancer: conflicting writes to one case have one outcome. The
in-process lock of one copy cannot see the other's writes, and the store applies two updates of
one document at the same instant read-modify-write (one is lost), so a case's writes hold it
among the copies (avis.shared.lease.Sections, docs/replicas.md)."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from avis.intake.main import create_app
from avis.shared import topics
from avis.shared.runtime import Runtime
from tests.support.basics import eventually, serve
from tests.support.intake import Intake, running_intake
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra

ROUNDS = 4


@pytest.fixture(scope="module")
async def copies() -> AsyncIterator[tuple[Intake, str]]:
    """Copy A (the test's Intake) and the URL of copy B, a second app on the same settings: the
    same database, the same consumer group."""
    async with running_intake() as a:
        second = create_app(a.settings)
        runtime: Runtime = second.state.runtime
        async with serve(second) as b_url:
            await eventually(lambda: runtime.kafka_started, timeout=60)
            yield a, b_url


def both(intake: Intake, b_url: str) -> list[httpx.AsyncClient]:
    """One patient's clients of copy A and of copy B."""
    a = intake.client()
    b = httpx.AsyncClient(base_url=b_url, headers=a.headers, timeout=30.0)
    intake.clients.append(b)
    return [a, b]


async def test_uploads_at_two_copies_all_stay_on_the_case(copies: tuple[Intake, str]) -> None:
    intake, b_url = copies
    for _ in range(ROUNDS):
        clients = both(intake, b_url)
        case_id = (await clients[0].post("/v1/cases", json=case_body())).json()["case_id"]
        files = [pdf() for _ in range(6)]
        responses = await asyncio.gather(
            *(
                clients[i % 2].post(f"/v1/cases/{case_id}/documents", **upload(data))
                for i, data in enumerate(files)
            )
        )
        assert {r.status_code for r in responses} == {201}
        listed = (await clients[1].get(f"/v1/cases/{case_id}")).json()["documents"]
        assert len(listed) == len(files), "an upload at one copy lost another's record"


async def test_submissions_at_two_copies_have_one_outcome(copies: tuple[Intake, str]) -> None:
    intake, b_url = copies
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    for _ in range(ROUNDS):
        clients = both(intake, b_url)
        case_id = (await clients[0].post("/v1/cases", json=case_body())).json()["case_id"]
        await clients[1].post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
        submit = f"/v1/cases/{case_id}/submit"
        responses = await asyncio.gather(
            *(clients[i % 2].post(submit, json=consent_body()) for i in range(6))
        )
        assert {r.status_code for r in responses} == {200}
        timeline = (await clients[0].get(f"/v1/cases/{case_id}")).json()["timeline"]
        assert [e["kind"] for e in timeline].count("submitted") == 1, timeline
        # The withdrawal's event lands behind the submissions' on the case's partition: once it
        # is read, nothing else of this case is on its way.
        assert (await clients[1].post(f"/v1/cases/{case_id}/withdraw")).status_code == 200
        records = await tail.records_for(case_id, expect=2)
        types = [dict(r.headers)["ce_type"] for r in records]
        assert types == [b"avis.case.submitted.v1", b"avis.case.withdrawn.v1"]
