"""The stores of the version before per-case keys (tests/data/migration/previous_stores.json,
captured by tests/data/migration/capture_previous.py with that version's own code), loaded into
the test stack's store for the migration's test (`avis-case-keys`)."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

from bson import Binary, json_util
from pymongo import AsyncMongoClient

from avis.intake import rules as intake_rules
from avis.review import rules as review_rules
from avis.shared.key_usage import sealed_kids
from avis.shared.sealing import Keyring, Sealed
from tests.support.basics import MONGO_URL, ROOT

FIXTURE = ROOT / "tests/data/migration/previous_stores.json"
# What belongs to no running copy (leases, inbox markers, relay hints, due buckets): not loaded.
TRANSIENT = ("leases", "inbox_", "outbox_hints", "sections", "handoffs", "due")
SERVICES = ("intake", "review", "reports", "notify")


@dataclass
class Previous:
    """The captured stores, the keyring they were sealed under, their cases and clear values."""

    stores: dict[str, dict[str, list[dict[str, Any]]]]
    keyring: str
    cases: list[dict[str, Any]]
    clear: dict[str, Any]

    @property
    def secrets(self) -> dict[str, str]:
        """Every clear value of the fixture a store must not hold in clear: what -> text."""
        found: dict[str, str] = {}
        for n, person in enumerate(self.clear["patients"]):
            for field in ("given_name", "family_name", "email", "phone"):
                found[f"patient {n} {field}"] = person[field]
        for what in ("summaries", "physicians", "filenames"):
            found |= {f"{what} {n}": text for n, text in enumerate(self.clear[what])}
        found["decline reason"] = self.clear["decline_reason"]
        opinion = self.clear["opinion"]
        found["opinion explanation"] = opinion["diagnosis"]["explanation"]
        for field in ("imaging_and_lab_review", "risk_benefit", "summary_for_patient"):
            found[f"opinion {field}"] = opinion[field]
        return found

    @property
    def binaries(self) -> dict[str, bytes]:
        """The records' bytes: what -> bytes (found raw or as base64 by the scan)."""
        return {f"record {n}": bytes(c["record"]) for n, c in enumerate(self.cases)}


def load_previous(path: pathlib.Path = FIXTURE) -> Previous:
    """The fixture as captured."""
    data = json_util.loads(path.read_text())
    return Previous(data["stores"], data["sealing_keys"], data["cases"], data["clear"])


def in_clear(previous: Previous, case_id: str) -> None:
    """Turn one captured case back into the layout of the versions before sealing (which the
    current code still reads): intake's content, record details and byte pieces, review's
    opinions and decline reason in clear. Reports and notify sealed from the start."""
    keyring = Keyring.parse(previous.keyring)
    intake, review = previous.stores["intake"], previous.stores["review"]
    for doc in intake["cases"]:
        if doc["_id"] == case_id:
            content = keyring.open_json(
                Sealed(**doc.pop("content")), intake_rules.case_aad(case_id)
            )
            doc["patient"] = content["patient"]
            doc["clinical_summary"] = content["clinical_summary"]
            doc["physician"]["name"] = content["physician_name"]
    for doc in intake["documents"]:
        if doc["case_id"] == case_id:
            aad = intake_rules.record_aad(doc["_id"])
            doc.update(keyring.open_json(Sealed(**doc.pop("details")), aad))
    for doc in intake["record_chunks"]:
        if doc["case_id"] == case_id:
            aad = intake_rules.chunk_aad(doc["_id"])
            doc["data"] = Binary(keyring.open(Sealed(**doc.pop("sealed")), aad))
    for doc in review["assignments"]:
        if doc["case_id"] != case_id:
            continue
        for entry in doc.get("opinions", []):
            aad = review_rules.opinion_aad(doc["_id"], entry["version"])
            entry["opinion"] = keyring.open_json(Sealed(**entry.pop("sealed")), aad)
        decline = doc.get("decline")
        if decline and decline.get("sealed_reason"):
            aad = review_rules.decline_aad(doc["_id"])
            decline["reason"] = keyring.open(Sealed(**decline.pop("sealed_reason")), aad).decode()


async def load(previous: Previous, databases: dict[str, str]) -> None:
    """Write each service's captured documents into its database (service -> database)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        for service, collections in previous.stores.items():
            db = client[databases[service]]
            for name, docs in collections.items():
                if docs and not name.startswith(TRANSIENT):
                    await db[name].insert_many(docs)
    finally:
        await client.close()


def kids_of_case(case_id: str, store: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The key ids of every sealed value a copy of a service's store keeps about a case (in the
    documents that name it; the access trails' reasons belong to no case)."""
    kids: set[str] = set()
    for name, docs in store.items():
        if name.startswith("audit_"):
            continue
        for doc in docs:
            if case_id in json_util.dumps(doc):
                kids |= set(sealed_kids(doc))
    return kids
