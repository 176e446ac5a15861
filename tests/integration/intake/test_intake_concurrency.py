"""Concurrent writers on the real store: unique references across instances, one case per
Idempotency-Key, one record per file, one event per submission."""

import asyncio
import re
from collections import Counter

import pytest

from avis.intake.models import REFERENCE_PATTERN
from avis.intake.service import References
from avis.shared import topics
from tests.support.intake import Intake
from tests.support.samples import case_body, consent_body, pdf, upload
from tests.support.topics import TopicReader

pytestmark = pytest.mark.infra


async def test_references_are_unique_across_instances(intake: Intake) -> None:
    # Two allocators on one store stand for two service instances: neither serialises on a
    # counter, each claims blocks by inserting their natural _id.
    first, second = References(intake.store), References(intake.store)
    drawn = await asyncio.gather(*(a.next() for a in [first, second] * 120))
    assert len(set(drawn)) == len(drawn) == 240
    assert all(re.match(REFERENCE_PATTERN, r) for r in drawn)
    blocks = await intake.store.refblocks.find({}, {"_id": 1}).to_list()
    assert len(blocks) == len({b["_id"] for b in blocks}) >= 3


async def test_one_case_per_idempotency_key_under_concurrent_retries(intake: Intake) -> None:
    patient = intake.client()
    headers = {"Idempotency-Key": "retry-storm-1"}
    responses = await asyncio.gather(
        *(patient.post("/v1/cases", json=case_body(), headers=headers) for _ in range(6))
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 5}
    assert len({r.json()["case_id"] for r in responses}) == 1
    assert await intake.store.cases.count_documents({"created_by.sub": patient.sub}) == 1  # type: ignore[attr-defined]


async def test_the_same_file_uploaded_concurrently_is_one_record(intake: Intake) -> None:
    patient = intake.client()
    case_id = (await patient.post("/v1/cases", json=case_body())).json()["case_id"]
    record = pdf()
    responses = await asyncio.gather(
        *(patient.post(f"/v1/cases/{case_id}/documents", **upload(record)) for _ in range(5))
    )
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 4}
    assert await intake.store.documents.count_documents({"case_id": case_id}) == 1
    assert await intake.store.chunks.count_documents({"case_id": case_id}) == 1


async def test_concurrent_submissions_publish_one_event(intake: Intake) -> None:
    tail = await TopicReader(topics.CASE_SUBMITTED).mark()
    patient = intake.client()
    case_id = (await patient.post("/v1/cases", json=case_body())).json()["case_id"]
    await patient.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
    responses = await asyncio.gather(
        *(patient.post(f"/v1/cases/{case_id}/submit", json=consent_body()) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {200}
    submitted = {
        e["id"] for r in responses for e in r.json()["timeline"] if e["kind"] == "submitted"
    }
    assert len(submitted) == 1, "one submission, whoever won the race"
    records = await tail.records_for(case_id, expect=1)
    # withdraw afterwards: its event lands behind the submission on the same partition, so
    # once it is read, nothing else for this case is still on its way
    await patient.post(f"/v1/cases/{case_id}/withdraw")
    records = await tail.records_for(case_id, expect=2)
    types = [dict(r.headers)["ce_type"] for r in records]
    assert types == [b"avis.case.submitted.v1", b"avis.case.withdrawn.v1"]
