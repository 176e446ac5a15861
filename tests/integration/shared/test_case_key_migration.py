"""The migration to per-case keys (`avis-case-keys`) on stores filled by the previous version.

The four services' stores as the version before per-case keys left them after two journeys
(tests/data/migration/previous_stores.json, captured with that version's own code by
capture_previous.py beside it): sealed under the services' keyring, and one case turned back
into the layout of the versions before sealing (in clear). They are loaded into the test
stack's store, the four services run over them (their keyring holding the previous key after
their own, as an operator's would), and the migration runs, stopped three times on the way: by
its limit, between making a case's key and recording it, and between sealing a case's values.
Then every case has its key in all four services, and exactly one in the key server; no clear
value of the fixture is in any store; every sealed value of a case is under its case's key and
reads back equal through the services' own doors; an erased migrated case opens nowhere while
the other one still does.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from avis.intake import migrate
from avis.intake.store import Store as IntakeStore
from avis.notify.store import contact_aad
from avis.reports.main import create_app as create_reports_app
from avis.review.main import create_app as create_review_app
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys, case_kid
from avis.shared.keys import KmipKeyService
from avis.shared.sealing import Sealed
from avis.shared.security import Role, mint_token
from avis.shared.topics import CASE_SUBMITTED, REVIEW_COMPLETED
from tests.support import kms
from tests.support.basics import MONGO_URL, SEALING_KEYS, eventually, serve, skip_history
from tests.support.intake import Intake, intake_settings, running_intake
from tests.support.migration import (
    SERVICES,
    Previous,
    in_clear,
    kids_of_case,
    load,
    load_previous,
)
from tests.support.notify import NotifyStack, notify_settings, running_notify
from tests.support.privacy import base64_forms, found, stored_bytes, stored_documents
from tests.support.reports import reports_settings
from tests.support.review import review_settings

pytestmark = pytest.mark.infra

WHY = {"X-Avis-Reason": "checking the migration to per-case keys"}


class Stack:
    """The four services over the loaded stores."""

    def __init__(self, intake: Intake, notify: NotifyStack, review: str, reports: str) -> None:
        self.intake, self.notify = intake, notify
        self.review_url, self.reports_url = review, reports
        self.databases = {
            "intake": intake.settings.database,
            "review": "",
            "reports": "",
            "notify": notify.settings.database,
        }

    def client(self, url: str, sub: str, role: Role) -> httpx.AsyncClient:
        token = mint_token(self.intake.settings, sub, role)
        return httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )

    async def copies(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return {s: await stored_documents(MONGO_URL, db) for s, db in self.databases.items()}

    async def case_doc(self, service: str, case_id: str) -> dict[str, Any] | None:
        docs = (await stored_documents(MONGO_URL, self.databases[service]))["cases"]
        return next((d for d in docs if d["_id"] == case_id), None)


@asynccontextmanager
async def services(previous: Previous) -> AsyncIterator[Stack]:
    """The four services, their stores loaded with the previous version's documents first."""
    keys = f"{SEALING_KEYS},{previous.keyring}"  # the previous key kept after the current one
    intake_config = intake_settings(sealing_keys=keys)
    review_config = review_settings(sealing_keys=keys)
    reports_config = reports_settings(sealing_keys=keys)
    notify_config = notify_settings(sealing_keys=keys)
    configs = (intake_config, review_config, reports_config, notify_config)
    await load(previous, {s: c.database for s, c in zip(SERVICES, configs, strict=True)})
    await skip_history(f"avis-{review_config.service_name}", [CASE_SUBMITTED])
    await skip_history(f"avis-{reports_config.service_name}", [CASE_SUBMITTED, REVIEW_COMPLETED])
    review_app = create_review_app(review_config)
    reports_app = create_reports_app(reports_config)
    async with (
        running_intake(intake_config) as intake,
        running_notify(notify_config) as notify,
        serve(review_app) as review_url,
        serve(reports_app) as reports_url,
    ):
        await eventually(lambda: review_app.state.runtime.kafka_started, timeout=60)
        await eventually(lambda: reports_app.state.runtime.kafka_started, timeout=60)
        stack = Stack(intake, notify, review_url, reports_url)
        stack.databases["review"] = review_config.database
        stack.databases["reports"] = reports_config.database
        yield stack


class Stop(Exception):
    """The migration stopped on purpose."""


def stopping(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Make the next call of intake's store `method` stop the migration (once)."""
    original = getattr(IntakeStore, method)

    async def stop(self: IntakeStore, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(IntakeStore, method, original)
        raise Stop(method)

    monkeypatch.setattr(IntakeStore, method, stop)


async def test_cases_of_the_previous_version_are_brought_under_keys_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    previous = load_previous()
    kept_id, erased_id = (c["case_id"] for c in previous.cases[::-1])
    in_clear(previous, kept_id)  # the case with the decline: as stored before sealing
    async with services(previous) as stack:
        settings = stack.intake.settings
        before = b"".join([await stored_bytes(MONGO_URL, db) for db in stack.databases.values()])
        # The scan's positive control: the case in clear is found before the migration.
        assert {"patient 1 email", "summaries 1", "filenames 1", "decline reason"} <= set(
            found(before, previous.secrets)
        )
        assert previous.binaries["record 1"] in before

        # Stopped by its limit, then between making a key and recording it, then between
        # sealing a case's values: each rerun goes on where the last one stopped.
        first = await migrate.migrate(settings, limit=1)
        assert (first.keyed, first.finished) == (1, False)
        stopping(monkeypatch, "begin_keying")
        with pytest.raises(Stop):
            await migrate.migrate(settings)
        stopping(monkeypatch, "reseal_pieces")
        with pytest.raises(Stop):
            await migrate.migrate(settings)
        last = await migrate.migrate(settings)
        assert (last.keyed, last.finished) == (1, True)
        again = await migrate.migrate(settings)
        assert (again.keyed, again.skipped) == (0, 0), "a finished migration has nothing left"

        # Every case under a key of its own, in all four services, and one key per case.
        refs = {}
        for case_id in (erased_id, kept_id):
            case = await stack.case_doc("intake", case_id)
            assert case is not None and case.get("key_ref") and "keying" not in case
            refs[case_id] = case["key_ref"]
            for service in ("review", "reports", "notify"):

                async def keyed(service: str = service, case_id: str = case_id) -> bool:
                    doc = await stack.case_doc(service, case_id)
                    return doc is not None and doc.get("key_ref") == refs[case_id]

                await eventually(keyed, timeout=60)
            made = await KmipKeyService(kms.endpoint("intake")).named(case_id)
            assert made == [refs[case_id]], "one key per case, however often it was stopped"

        # No clear value of the fixture in any store; every value of a case under its key.
        after = b"".join([await stored_bytes(MONGO_URL, db) for db in stack.databases.values()])
        assert found(after, previous.secrets) == {}
        for what, data in previous.binaries.items():
            assert data not in after and not any(f in after for f in base64_forms(data)), what
        copies = await stack.copies()
        for case_id, ref in refs.items():
            for service in SERVICES:
                kids = kids_of_case(case_id, copies[service])
                assert kids == {case_kid(ref)}, f"{service}'s values of {case_id}: {kids}"

        # Each value reads back equal through the services' own doors.
        for n, case in enumerate(previous.cases):
            await reads_back(stack, previous, n, case)

        # An erased migrated case opens nowhere (its key is gone, and its values are under no
        # other key), while the other migrated case still reads.
        coordinator = stack.intake.client(role="coordinator")
        erased = await coordinator.post(
            f"/v1/cases/{erased_id}/erasure", json={"reason": "the patient's written request"}
        )
        assert erased.status_code == 200, erased.text
        with pytest.raises(CaseKeyDestroyed):
            await CaseKeys.from_settings(settings).ring(refs[erased_id])
        patient = stack.intake.client(sub=previous.cases[0]["patient_sub"], role="patient")
        assert (await patient.get(f"/v1/cases/{erased_id}/clinical")).status_code == 410
        async with stack.client(stack.reports_url, patient.sub, "patient") as reader:  # type: ignore[attr-defined]

            async def report_gone() -> bool:
                answer = await reader.get(f"/v1/cases/{erased_id}/report")
                return answer.status_code == 410

            await eventually(report_gone, timeout=60)
        await reads_back(stack, previous, 1, previous.cases[1])


async def reads_back(stack: Stack, previous: Previous, n: int, case: dict[str, Any]) -> None:
    """The n-th case's values, read through intake, review, reports and notify, equal those the
    previous version stored."""
    case_id, person = case["case_id"], previous.clear["patients"][n]
    patient = stack.intake.client(sub=case["patient_sub"], role="patient")
    clinical = await patient.get(f"/v1/cases/{case_id}/clinical")
    assert clinical.status_code == 200, clinical.text
    body = clinical.json()
    assert body["patient"]["email"] == person["email"]
    assert body["patient"]["family_name"] == person["family_name"]
    assert body["clinical_summary"] == previous.clear["summaries"][n]
    assert body["physician"]["name"] == previous.clear["physicians"][n]
    [document] = body["documents"]
    assert document["filename"] == previous.clear["filenames"][n]
    download = await patient.get(f"/v1/cases/{case_id}/documents/{document['document_id']}")
    assert download.status_code == 200 and download.content == bytes(case["record"])

    async with stack.client(stack.review_url, "coord-migration", "coordinator") as coordinator:
        listed = await coordinator.get("/v1/assignments", params={"limit": 50})
        rounds = [a for a in listed.json()["items"] if a["case_id"] == case_id]
        assert rounds, "the case's rounds are listed"
        reasons = []
        for round_ in rounds:
            url = f"/v1/assignments/{round_['id']}"
            reasons.append((await coordinator.get(url, headers=WHY)).json().get("decline_reason"))
            if round_["status"] == "completed":
                opinion = await coordinator.get(f"{url}/opinion", headers=WHY)
                assert opinion.status_code == 200, opinion.text
                assert (
                    opinion.json()["opinion"]["risk_benefit"]
                    == (previous.clear["opinion"]["risk_benefit"])
                )
        if n == 1:
            assert previous.clear["decline_reason"] in reasons

    async with stack.client(stack.reports_url, case["patient_sub"], "patient") as reader:
        report = await reader.get(f"/v1/cases/{case_id}/report")
        assert report.status_code == 200, report.text
        assert person["family_name"] in report.json()["patient"]["name"]
        pdf = await reader.get(
            f"/v1/reports/{report.json()['report_id']}", headers={"Accept": "application/pdf"}
        )
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    notified = await stack.case_doc("notify", case_id)
    assert notified is not None
    contact = await kms.opened(
        stack.notify.settings, Sealed(**notified["contact"]), contact_aad(case_id)
    )
    assert json.loads(contact) == {
        "email": person["email"],
        "preferred_language": person["preferred_language"],
    }, "notify keeps only what its emails use"
