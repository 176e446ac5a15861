"""Review's data at rest: an opinion's sections and a decline's free-text reason appear nowhere
in any document of review's store (sealed, bound to the assignment and version; the digest
that tells a replay is keyed), while the reviewer and coordinators still read them."""

from typing import Any

import pytest

from tests.support.basics import MONGO_URL, unique
from tests.support.privacy import assert_absent, record_bytes, stored_bytes
from tests.support.review import ReviewStack

pytestmark = pytest.mark.infra

ASSIGNED = "avis.review.assigned.v1"
REASON = "J'ai soigné la sœur de cette patiente à Quimper"
OPINION = {
    "diagnosis": {
        "assessment": "revised",
        "explanation": "Amylose AL plutôt qu'une cardiomyopathie hypertrophique.",
    },
    "imaging_and_lab_review": "Rehaussement tardif sous-endocardique diffus à l'IRM cardiaque.",
    "alternative_pathways": "Biopsie des glandes salivaires avant toute biopsie myocardique.",
    "risk_benefit": "Un traitement précoce par daratumumab améliore la survie.",
    "further_tests": "Électrophorèse des protéines sériques et chaînes légères libres.",
    "summary_for_patient": "Vos examens évoquent une maladie de dépôt à confirmer.",
}


async def test_an_opinion_and_a_decline_reason_are_sealed_at_rest(stack: ReviewStack) -> None:
    p = unique("car")
    await stack.add_reviewer(f"{p}-1", ["cardiology"], ["fr"])
    await stack.add_reviewer(f"{p}-2", ["cardiology"], ["fr"])
    case_id = await stack.submit("cardiology")
    await stack.log.wait(case_id, ASSIGNED)
    first = await stack.assignment(case_id)
    async with stack.client(first["reviewer_id"], "reviewer") as http:
        declined = await http.post(
            f"/v1/assignments/{first['id']}/decline",
            json={"reason_code": "conflict_of_interest", "reason": REASON},
        )
        assert declined.status_code == 200, declined.text
    await stack.log.wait(case_id, ASSIGNED, count=2)
    second = await stack.assignment(case_id)
    url = f"/v1/assignments/{second['id']}"
    async with stack.client(second["reviewer_id"], "reviewer") as http:
        assert (await http.post(f"{url}/accept")).status_code == 200
        written = await http.post(f"{url}/opinion", json=OPINION)
        assert written.status_code == 201, written.text
        replay = await http.post(f"{url}/opinion", json=OPINION)
        assert replay.status_code == 200  # the keyed digest still tells a replay
        changed = await http.post(f"{url}/opinion", json=OPINION | {"further_tests": "Aucun."})
        assert changed.status_code == 409
        read: dict[str, Any] = (await http.get(f"{url}/opinion")).json()
        assert read["opinion"] == OPINION
    assert (await stack.assignment(case_id, round_=1))["decline_reason"] == REASON

    stored = await stored_bytes(MONGO_URL, stack.settings.database)
    assert second["id"].encode() in stored  # the scan reads review's documents
    secrets = {"decline reason": REASON} | {
        f"opinion's {k}": v for k, v in OPINION.items() if isinstance(v, str)
    }
    secrets["diagnosis"] = OPINION["diagnosis"]["explanation"]
    assert_absent(secrets, {"review store": stored})


COMMENTS = "La biopsie de 2023 à Quimper ne figure pas dans votre relecture de l'IRM."
SECOND_READING = "avis.review.second-reading-requested.v1"
COMMENTED = "avis.review.second-reading-commented.v1"


async def test_a_second_readers_comments_are_sealed_at_rest(stack: ReviewStack) -> None:
    """And the specialists' work addresses: sealed in the directory, never shown back, and
    carried sealed by the events that tell each that work waits."""
    p = unique("neu")
    emails = {f"{p}-1": f"{p}-1@hopital.example", f"{p}-2": f"{p}-2@chu.example"}
    for rid, email in emails.items():
        added = await stack.add_reviewer(rid, ["neurology"], ["fr"], email=email)
        assert "email" not in added and email not in str(added)
    async with stack.client() as coordinator:  # a changed address is sealed the same way
        emails[f"{p}-1"] = f"{p}-1@clinique.example"
        patched = await coordinator.patch(f"/v1/reviewers/{p}-1", json={"email": emails[f"{p}-1"]})
        assert patched.status_code == 200 and "@" not in patched.text, patched.text
    case_id = await stack.submit("neurology")
    await stack.log.wait(case_id, ASSIGNED)
    first = await stack.assignment(case_id)
    url = f"/v1/assignments/{first['id']}"
    async with stack.client(first["reviewer_id"], "reviewer") as http:
        assert (await http.post(f"{url}/accept")).status_code == 200
        asked = await http.post(f"{url}/opinion", params={"second_reading": "true"}, json=OPINION)
        assert asked.status_code == 201, asked.text
    await stack.log.wait(case_id, SECOND_READING)
    second_id = f"{p}-2" if first["reviewer_id"] == f"{p}-1" else f"{p}-1"
    reading = f"/v1/second-readings/{first['id']}"
    async with stack.client(second_id, "reviewer") as http:
        sent = await http.post(f"{reading}/comments", json={"text": COMMENTS})
        assert sent.status_code == 201, sent.text
        read = (await http.get(reading)).json()
        assert read["comments"][0]["text"] == COMMENTS and read["reason"] == "first_reader"

    (commented,) = await stack.log.wait(case_id, COMMENTED)
    (requested,) = stack.log.payloads(case_id, SECOND_READING)
    assert requested["recipient"]["ct"] and commented["recipient"]["ct"]

    stored = await stored_bytes(MONGO_URL, stack.settings.database)
    assert first["id"].encode() in stored
    topics = record_bytes(stack.log.records)
    secrets = {"comments": COMMENTS} | {f"{rid}'s email": e for rid, e in emails.items()}
    assert_absent(secrets, {"review store": stored, "topics": topics})


TRANSLATED_SUMMARY = "Shortness of breath on exertion for three months, worse when lying flat."
TRANSLATED_OPINION = OPINION | {"risk_benefit": "Early daratumumab treatment improves survival."}


async def test_an_international_reviews_translations_are_sealed_at_rest(
    stack: ReviewStack,
) -> None:
    """Both translations (the summary to the specialist, the opinion back to the patient) and
    the translator's work address: sealed in review's store, never on the topics in clear, and
    read back by the translator and the specialist."""
    p = unique("ctr")
    translator_email = f"{p}-tr@traduction.example"
    await stack.add_reviewer(f"{p}-en", ["nephrology"], ["en"])
    async with stack.client() as coordinator:
        put = await coordinator.put(
            f"/v1/translators/{p}-tr",
            json={
                "display_name": "Translator",
                "languages": ["en", "fr"],
                "capacity": 2,
                "email": translator_email,
            },
        )
        assert put.status_code == 200 and "@" not in put.text, put.text
    case_id = await stack.submit("nephrology", language="fr", international_review=True)
    (queued,) = await stack.log.wait(case_id, "avis.review.translation-queued.v1")
    assert queued["translator_id"] == f"{p}-tr" and queued["recipient"]["ct"]
    assignment = await stack.assignment(case_id)
    first = f"/v1/translations/{queued['translation_id']}"
    async with stack.client(f"{p}-tr", "translator") as translator:
        assert (await translator.post(f"{first}/take")).status_code == 200
        done = await translator.put(f"{first}/text", json={"summary": TRANSLATED_SUMMARY})
        assert done.status_code == 200, done.text
    url = f"/v1/assignments/{assignment['id']}"
    async with stack.client(f"{p}-en", "reviewer") as specialist:
        read = (await specialist.get(first)).json()
        assert read["translated"]["summary"] == TRANSLATED_SUMMARY
        assert (await specialist.post(f"{url}/accept")).status_code == 200
        assert (await specialist.post(f"{url}/opinion", json=OPINION)).status_code == 201
    queued_back = await stack.log.wait(case_id, "avis.review.translation-queued.v1", count=2)
    back = f"/v1/translations/{queued_back[-1]['translation_id']}"
    async with stack.client(f"{p}-tr", "translator") as translator:
        assert (await translator.post(f"{back}/take")).status_code == 200
        released = await translator.put(f"{back}/text", json={"opinion": TRANSLATED_OPINION})
        assert released.status_code == 200, released.text
        assert (await translator.get(back)).json()["translated"]["opinion"] == TRANSLATED_OPINION
    (completed,) = await stack.log.wait(case_id, "avis.review.completed.v1")
    assert completed["opinion"]["ct"], "the translated opinion travels sealed"

    stored = await stored_bytes(MONGO_URL, stack.settings.database)
    assert assignment["id"].encode() in stored
    topics = record_bytes(stack.log.records)
    secrets = {
        "translated summary": TRANSLATED_SUMMARY,
        "translated opinion": TRANSLATED_OPINION["risk_benefit"],
        "translator's email": translator_email,
    }
    assert_absent(secrets, {"review store": stored, "topics": topics})
