"""Intake's access trail anchored outside its store, on the real broker: a chain rewritten whole
(every hash recomputed, which the chain alone cannot show) and a trail removed whole are found
by `avis-audit verify` against the anchors (avis.shared.anchors)."""

import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from avis.shared.anchors import read_anchors
from avis.shared.audit import GENESIS, AuditHead, AuditRecord, AuditTrail, chained, verify_all
from avis.shared.events import TrailAnchored
from tests.support.basics import KAFKA, MONGO_URL, eventually

pytestmark = pytest.mark.infra

DRAFT = {
    "patient": {
        "given_name": "Aurèle",
        "family_name": "Vasseur",
        "birth_date": "1968-09-30",
        "email": "aurele.vasseur@example.org",
        "preferred_language": "fr",
    },
    "specialty": "neurology",
    "questions": ["treatment_alternatives"],
    "clinical_summary": "Headaches since the spring.",
}

RECORD = b"%PDF-1.4\n% anchors\ntrailer << >>\n%%EOF\n"


async def submitted(intake: Any) -> str:
    """A case a patient created, read and submitted: four entries in its trail."""
    patient = intake.client()
    case_id: str = (await patient.post("/v1/cases", json=DRAFT)).json()["case_id"]
    upload = await patient.post(
        f"/v1/cases/{case_id}/documents",
        files={"file": ("mri.pdf", RECORD, "application/pdf")},
        data={"kind": "imaging_report"},
    )
    assert upload.status_code == 201, upload.text
    at = datetime.now(UTC).isoformat()
    consent = {"text_version": "c-1", "accepted_at": at, "scopes": ["review"]}
    assert (await patient.get(f"/v1/cases/{case_id}/clinical")).is_success
    submit = await patient.post(f"/v1/cases/{case_id}/submit", json={"consent": consent})
    assert submit.status_code == 200, submit.text
    return case_id


async def anchored_head(intake: Any, case_id: str) -> TrailAnchored:
    """The anchor of the case's head, once intake published it (every 0.5 s in tests)."""
    (head,) = await intake.store.trail.heads_of([case_id])  # its chain's true end

    async def published() -> TrailAnchored | None:
        anchors = await read_anchors(KAFKA, intake.settings.service_name)
        found = anchors.get(case_id)
        return found if found is not None and found.seq == head.seq else None

    anchor: TrailAnchored = await eventually(published, timeout=20)
    return anchor


async def rewrite_whole(trail: AuditTrail, case_id: str) -> None:
    """What someone with write access to the store could do: every entry given another actor,
    every hash recomputed in order, the head moved to the new last one."""
    entries, last = await trail.page(case_id, after=0, limit=100)
    prev = GENESIS
    for entry in entries:
        fields = entry.model_dump(include=set(AuditRecord.model_fields))
        record = AuditRecord.model_validate({**fields, "actor": "someone-else"})
        forged = chained(case_id, entry.seq, prev, record, entry.at)
        await trail.trail.replace_one({"_id": forged.id}, forged.to_doc())
        prev = forged.hash
    await trail.heads.replace_one({"_id": case_id}, AuditHead.of(forged).to_doc())
    assert forged.seq == last


async def audit_command(intake: Any, case_id: str) -> tuple[int, str]:
    """`avis-audit verify` on intake's store and the broker, for one case: status and output."""
    env = {
        **os.environ,
        "AVIS_MONGO_URL": MONGO_URL,
        "AVIS_KAFKA_BOOTSTRAP": KAFKA.bootstrap,
        "AVIS_KAFKA_ADMIN_USERNAME": KAFKA.username,
        "AVIS_KAFKA_ADMIN_PASSWORD": KAFKA.password,
    }
    args = ["verify", "--service", intake.settings.service_name, "--case", case_id]
    args += ["--database", intake.settings.database]
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avis.shared.audit_command", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await command.communicate()
    assert command.returncode is not None
    return command.returncode, out.decode()


async def test_a_trail_rewritten_whole_is_found_by_its_anchor(intake: Any) -> None:
    case_id = await submitted(intake)
    trail: AuditTrail = intake.store.trail
    anchor = await anchored_head(intake, case_id)
    status, out = await audit_command(intake, case_id)
    assert (status, out.splitlines()[-1]) == (0, "every chain holds"), out

    await rewrite_whole(trail, case_id)
    assert await trail.verify(case_id) is None  # the chain alone holds
    broken = await trail.verify(case_id, anchor=anchor)
    assert broken is not None and (broken.seq, broken.kind) == (anchor.seq, "rewritten")
    status, out = await audit_command(intake, case_id)
    assert status == 1 and f"case {case_id}: entry {anchor.seq} rewritten" in out, out


async def test_a_trail_removed_whole_is_found_by_its_anchor(intake: Any) -> None:
    case_id = await submitted(intake)
    trail: AuditTrail = intake.store.trail
    anchor = await anchored_head(intake, case_id)
    await trail.trail.delete_many({"case_id": case_id})
    await trail.heads.delete_one({"_id": case_id})
    assert [c async for c in trail.cases() if c == case_id] == []  # nothing left to check

    anchors = await read_anchors(KAFKA, intake.settings.service_name)
    found = [b for b in await verify_all(trail, anchors=anchors) if b.case_id == case_id]
    assert [(b.seq, b.kind) for b in found] == [(anchor.seq, "removed")]
