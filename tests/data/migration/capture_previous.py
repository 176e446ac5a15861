"""Capture the stores of the version before per-case keys (commit a6e0af7, the parent of
4aaa183) into previous_stores.json, the fixture of the migration's test
(tests/integration/shared/test_case_key_migration.py).

This is a test of THAT version, run in a worktree of it, on its own test stack:

    git worktree add --detach /tmp/avis-prev a6e0af73be9023666d60353b1d3128be210a87d9
    cp tests/data/migration/capture_previous.py /tmp/avis-prev/tests/e2e/test_capture_previous.py
    cd /tmp/avis-prev && make install-test && \
      AVIS_CAPTURE_TO=$OLDPWD/tests/data/migration/previous_stores.json \
      make test PYTEST_ARGS="-q tests/e2e/test_capture_previous.py"

Intake, review, reports and notify run as that version runs them (in-process, over the real
broker and store); two patients each draft, document and submit a case; a reviewer declines the
second with a free-text reason, another answers both; reports issues each report and renders
its PDF. Then every document of the four services' databases is written out (MongoDB extended
JSON, binary as base64), with the keyring that version sealed under (a test key, made here for
the fixture, never used anywhere else) and the clear values a scan must not find after the
migration.
"""

import asyncio
import os
import pathlib
from typing import Any

import httpx
import pytest
from bson import json_util
from pymongo import AsyncMongoClient

import tests.support.basics as basics
from avis.shared.sealing import generate_key

# The previous version's values are sealed under this keyring (a key id of its own, so the
# current services hold it after their own key, as an operator's keyring holds a rotated key).
basics.SEALING_KEYS = f"k0:{generate_key()}"

from avis.reports.main import create_app as create_reports_app  # noqa: E402
from avis.review.main import create_app as create_review_app  # noqa: E402
from avis.shared.security import Role, mint_token  # noqa: E402
from avis.shared.topics import CASE_SUBMITTED, REVIEW_COMPLETED  # noqa: E402
from tests.support.basics import MONGO_URL, eventually, serve, skip_history, unique  # noqa: E402
from tests.support.intake import running_intake  # noqa: E402
from tests.support.notify import running_notify  # noqa: E402
from tests.support.reports import reports_settings  # noqa: E402
from tests.support.review import review_settings  # noqa: E402
from tests.support.samples import case_body, consent_body, pdf, upload  # noqa: E402

pytestmark = pytest.mark.infra

PATIENTS = [
    {
        "given_name": "Aurélien",
        "family_name": "Vasseur-Migration",
        "birth_date": "1962-05-17",
        "email": "aurelien.vasseur.migration@example.org",
        "phone": "+33 6 41 52 63 74",
        "preferred_language": "fr",
    },
    {
        "given_name": "Henrietta",
        "family_name": "Blackwood-Migration",
        "birth_date": "1980-11-02",
        "email": "henrietta.blackwood.migration@example.org",
        "phone": "+44 7700 900462",
        "preferred_language": "en",
    },
]
SUMMARIES = [
    "Persistent cough since spring; a lesion of the left upper lobe on the scan.",
    "Recurrent palpitations at night; a Holter recording shows pauses of four seconds.",
]
PHYSICIANS = ["Dr Gwendoline Prud'homme", "Dr Ebenezer Tattersall"]
FILENAMES = ["scanner-vasseur-aurelien.pdf", "holter-henrietta-blackwood.pdf"]
DECLINE_REASON = "I treated this patient's sister last year at the Hôpital Sainte-Anne."
OPINION = {
    "diagnosis": {
        "assessment": "confirmed",
        "explanation": "The lesion's margins and the biopsy agree on an adenocarcinoma.",
    },
    "imaging_and_lab_review": "The scanner and the pathology report are consistent.",
    "alternative_pathways": "Stereotactic radiotherapy should surgery be refused.",
    "risk_benefit": "Lobectomy offers the best control for an acceptable operative risk.",
    "further_tests": "A PET scanner before the operation, then lung function tests.",
    "summary_for_patient": "The diagnosis stands and the proposed treatment is the right one.",
}


async def dump(database: str) -> dict[str, list[Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        db = client[database]
        names = sorted(await db.list_collection_names())
        return {name: [doc async for doc in db[name].find()] for name in names}
    finally:
        await client.close()


async def test_capture_the_previous_versions_stores() -> None:
    target = pathlib.Path(os.environ["AVIS_CAPTURE_TO"])
    review_config = review_settings()
    reports_config = reports_settings()
    await skip_history(f"avis-{review_config.service_name}", [CASE_SUBMITTED])
    await skip_history(f"avis-{reports_config.service_name}", [CASE_SUBMITTED, REVIEW_COMPLETED])
    review_app = create_review_app(review_config)
    reports_app = create_reports_app(reports_config)

    def client(url: str, sub: str, role: Role) -> httpx.AsyncClient:
        token = mint_token(review_config, sub, role)
        return httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )

    async with (
        running_intake() as intake,
        running_notify() as notify,
        serve(review_app) as review_url,
        serve(reports_app) as reports_url,
    ):
        await eventually(lambda: review_app.state.runtime.kafka_started, timeout=60)
        await eventually(lambda: reports_app.state.runtime.kafka_started, timeout=60)
        declining, answering = unique("decl"), unique("answ")

        async def reviewer_joins(reviewer_id: str) -> None:
            async with client(review_url, "coord-capture", "coordinator") as coordinator:
                created = await coordinator.post(
                    "/v1/reviewers",
                    json={
                        "id": reviewer_id,
                        "display_name": f"Dr {reviewer_id}",
                        "specialties": ["oncology"],
                        "languages": ["fr", "en"],
                        "capacity": 5,
                    },
                )
                assert created.status_code == 201, created.text

        await reviewer_joins(declining)

        cases = []
        for n, person in enumerate(PATIENTS):
            patient = intake.client(role="patient")
            body = case_body(
                patient=person,
                physician={"name": PHYSICIANS[n], "institution_code": "750712184"},
                specialty="oncology",
                clinical_summary=SUMMARIES[n],
            )
            draft = await patient.post("/v1/cases", json=body)
            assert draft.status_code == 201, draft.text
            case_id = draft.json()["case_id"]
            record = pdf(f"record of {person['family_name']} {unique('bytes')}")
            stored = await patient.post(
                f"/v1/cases/{case_id}/documents", **upload(record, filename=FILENAMES[n])
            )
            assert stored.status_code == 201, stored.text
            submitted = await patient.post(f"/v1/cases/{case_id}/submit", json=consent_body())
            assert submitted.status_code == 200, submitted.text
            cases.append({"case_id": case_id, "patient_sub": patient.sub, "record": record})  # type: ignore[attr-defined]

        async def assignment(reviewer: httpx.AsyncClient, case_id: str) -> Any:
            items = (await reviewer.get("/v1/assignments")).json()["items"]
            return next((a for a in items if a["case_id"] == case_id), None)

        # The first reviewer declines the second case, with a reason in free text, and answers
        # the first; a second reviewer, joining then, answers the second.
        async with client(review_url, declining, "reviewer") as reviewer:
            second = cases[1]["case_id"]
            found = await eventually(lambda: assignment(reviewer, second), timeout=60)
            declined = await reviewer.post(
                f"/v1/assignments/{found['id']}/decline",
                json={"reason_code": "conflict_of_interest", "reason": DECLINE_REASON},
            )
            assert declined.status_code == 200, declined.text
            first = await eventually(lambda: assignment(reviewer, cases[0]["case_id"]), timeout=60)
            assert (await reviewer.post(f"/v1/assignments/{first['id']}/accept")).status_code == 200
            answered = await reviewer.post(f"/v1/assignments/{first['id']}/opinion", json=OPINION)
            assert answered.status_code == 201, answered.text
        await reviewer_joins(answering)
        async with client(review_url, answering, "reviewer") as reviewer:
            found = await eventually(lambda: assignment(reviewer, second), timeout=60)
            assert (await reviewer.post(f"/v1/assignments/{found['id']}/accept")).status_code == 200
            answered = await reviewer.post(f"/v1/assignments/{found['id']}/opinion", json=OPINION)
            assert answered.status_code == 201, answered.text

        for case in cases:
            async with client(reports_url, case["patient_sub"], "patient") as patient:

                async def ready(case_id: str = case["case_id"]) -> Any:
                    response = await patient.get(f"/v1/cases/{case_id}/report")
                    return response.json() if response.status_code == 200 else None

                report = await eventually(ready, timeout=60)
                printed = await patient.get(
                    f"/v1/reports/{report['report_id']}", headers={"Accept": "application/pdf"}
                )
                assert printed.status_code == 200

            async def known(case_id: str = case["case_id"]) -> Any:
                found = await notify.db["cases"].find_one({"_id": case_id})
                return found if found and found.get("contact") else None

            await eventually(known, timeout=60)
        databases = {
            "intake": intake.settings.database,
            "review": review_config.database,
            "reports": reports_config.database,
            "notify": notify.settings.database,
        }
        stores = {service: await dump(name) for service, name in databases.items()}
    fixture = {
        "captured_from": "a6e0af73be9023666d60353b1d3128be210a87d9",
        "sealing_keys": basics.SEALING_KEYS,
        "cases": [
            {"case_id": c["case_id"], "patient_sub": c["patient_sub"], "record": c["record"]}
            for c in cases
        ],
        "clear": {
            "patients": PATIENTS,
            "summaries": SUMMARIES,
            "physicians": PHYSICIANS,
            "filenames": FILENAMES,
            "decline_reason": DECLINE_REASON,
            "opinion": OPINION,
        },
        "stores": stores,
    }
    text = json_util.dumps(fixture, indent=1, json_options=json_util.CANONICAL_JSON_OPTIONS)
    await asyncio.to_thread(target.write_text, text)
