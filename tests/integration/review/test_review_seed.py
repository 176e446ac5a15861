"""The reviewer directory seeded from a file, on the real store: a seed reviewer's work address
is kept, sealed as the directory keeps it (never in clear), so that their emails go out."""

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from avis.review import contacts, rules, store
from avis.shared.events import Language, ProfessionalContact
from avis.shared.sealing import Keyring, generate_key
from tests.support.basics import MONGO_URL, unique
from tests.support.privacy import assert_absent, stored_bytes

pytestmark = pytest.mark.infra

EMAIL = "dr.seed@hopital.example"


async def test_a_seed_reviewers_email_is_kept_sealed(tmp_path: Path) -> None:
    seed = tmp_path / "reviewers.json"
    reviewer = {
        "id": "rev-seed-1",
        "display_name": "Seed reviewer",
        "specialties": ["cardiology"],
        "languages": ["fr", "en"],
        "capacity": 2,
        "email": EMAIL,
    }
    seed.write_text(json.dumps({"reviewers": [reviewer]}))
    keyring = Keyring.parse(f"k1:{generate_key()}")
    name = unique("review-seed").replace("-", "_")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        seal = partial(contacts.sealed_contact, keyring)  # as main.py wires it
        await store.init(client[name], seed_file=seed, seal=seal)
        reviews = store.Store(client[name])
        doc = await reviews.reviewer("rev-seed-1")
        assert doc is not None
        assert contacts.contact_of(keyring, doc) == ProfessionalContact(
            email=EMAIL, languages=[Language.FR, Language.EN]
        )
        assert_absent({"email": EMAIL}, {name: await stored_bytes(MONGO_URL, name)})
    finally:
        await client.drop_database(name)
        await client.close()


async def test_a_seed_translators_email_is_kept_sealed(tmp_path: Path) -> None:
    seed = tmp_path / "directory.json"
    translator = {
        "id": "tr-seed-1",
        "display_name": "Seed translator",
        "languages": ["fr", "en"],
        "capacity": 2,
        "email": EMAIL,
    }
    seed.write_text(json.dumps({"reviewers": [], "translators": [translator]}))
    keyring = Keyring.parse(f"k1:{generate_key()}")
    name = unique("review-seed").replace("-", "_")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        seal = partial(contacts.sealed_translator_contact, keyring)  # as main.py wires it
        await store.init(client[name], seed_file=seed, seal_translator=seal)
        doc = await store.Store(client[name]).translations.translator("tr-seed-1")
        assert doc is not None and doc.contact is not None
        kept = keyring.open_model(
            doc.contact, rules.translator_contact_aad("tr-seed-1"), ProfessionalContact
        )
        assert kept == ProfessionalContact(email=EMAIL, languages=[Language.FR, Language.EN])
        assert_absent({"email": EMAIL}, {name: await stored_bytes(MONGO_URL, name)})
    finally:
        await client.drop_database(name)
        await client.close()
