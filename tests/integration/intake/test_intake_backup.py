"""The backup and restore drill of docs/operations.md, on the real store and key server: intake's
database copied with `avis-backup`, the key server's with `deploy/kms/install.sh backup`, then
restored, then `avis-intake-reconcile`. A restored store opens its cases; a case erased after
the copy stays unopenable after the restore, whether the store or the key server was restored.
The store's half runs the runbook's commands as an operator does."""

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from avis.intake.reconcile import reconcile
from avis.shared.case_keys import CaseKeys
from tests.integration.intake.test_intake_access_log import DRAFT, RECORD, filed
from tests.integration.intake.test_intake_erasure import opens_with_a_key_that_exists, sealed_of
from tests.support.basics import MONGO_URL, ROOT, SEALING_KEYS
from tests.support.privacy import stored_documents

pytestmark = pytest.mark.infra

WHOLE = {"case content", "record details", "record bytes"}


def key_server(action: str, file: Path) -> None:
    """`deploy/kms/install.sh backup|restore FILE` on the test stack's key server."""
    script = ROOT / "deploy/kms/install.sh"
    subprocess.run([str(script), action, str(file)], check=True, cwd=ROOT, env=os.environ.copy())


def command(name: str, *args: str, database: str) -> str:
    """One of the runbook's commands (docs/operations.md) as an operator runs it, with intake's
    settings in the environment (the test stack's store and key server); what it prints."""
    env = os.environ | {"AVIS_INTAKE_MONGO_DATABASE": database, "AVIS_SEALING_KEYS": SEALING_KEYS}
    done = subprocess.run(
        [str(ROOT / ".venv/bin" / name), *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def restored_case(store: dict[str, list[dict[str, Any]]], case_id: str) -> dict[str, Any]:
    [doc] = [d for d in store["cases"] if d["_id"] == case_id]
    return doc


async def test_a_restored_store_opens_its_cases_and_not_one_erased_after_the_copy(
    intake: Any, tmp_path: Path
) -> None:
    patient, erased_id, _ = await filed(intake)
    keeper, kept_id, kept_record = await filed(intake)
    database = intake.settings.database
    copy = str(tmp_path / "intake")
    copied = command(
        "avis-backup", "dump", "--database", database, "--out", copy, database=database
    )
    assert f"{database}.cases: " in copied and f"{database}.record_chunks: " in copied

    asked = await patient.post(f"/v1/cases/{erased_id}/erasure-request")
    assert asked.status_code == 200 and asked.json()["erased_at"] is not None, asked.text

    command(
        "avis-backup",
        "restore",
        "--database",
        database,
        "--from",
        copy,
        "--drop",
        database=database,
    )
    restored = await stored_documents(MONGO_URL, database)
    whole = restored_case(restored, erased_id)
    assert whole.get("erased_at") is None and "content" in whole, "the copy predates the erasure"
    printed = command("avis-intake-reconcile", database=database)
    assert f"erased after the copy, its skeleton made again: {erased_id}" in printed, printed
    assert "destroyed again" not in printed and kept_id not in printed

    # The kept case opens through intake's API: its content and its record's bytes.
    clinical = await keeper.get(f"/v1/cases/{kept_id}/clinical")
    assert clinical.status_code == 200, clinical.text
    assert clinical.json()["clinical_summary"] == DRAFT["clinical_summary"]
    assert clinical.json()["patient"]["family_name"] == DRAFT["patient"]["family_name"]
    record = await keeper.get(f"/v1/cases/{kept_id}/documents/{kept_record}")
    assert record.status_code == 200 and record.content == RECORD

    # The erased one answers 410, left as its erasure left it: its skeleton, no record.
    gone = await patient.get(f"/v1/cases/{erased_id}/clinical")
    assert gone.status_code == 410 and gone.json()["type"].endswith("case-erased")
    view = (await patient.get(f"/v1/cases/{erased_id}")).json()
    assert view.get("erased_at") is not None and view["documents"] == [] and view["reference"]
    after = await stored_documents(MONGO_URL, database)
    assert sealed_of(erased_id, after, []) == [], "its content and records went again"

    # None of its sealed values in the restored documents opens with any key that exists; the
    # kept case's, found and tried the same way, do.
    keys = CaseKeys.from_settings(intake.settings)
    erased = sealed_of(erased_id, restored, [])
    kept = sealed_of(kept_id, restored, [])
    assert {what for what, _, _ in erased} == WHOLE == {what for what, _, _ in kept}
    for what, sealed, aad in kept:
        assert await opens_with_a_key_that_exists(keys, sealed, aad), f"kept {what}"
    for what, sealed, aad in erased:
        assert not await opens_with_a_key_that_exists(keys, sealed, aad), f"erased {what} opens"


async def test_a_key_server_restored_from_before_an_erasure_gives_back_no_key(
    intake: Any, tmp_path: Path
) -> None:
    patient, case_id, _ = await filed(intake)
    before = await stored_documents(MONGO_URL, intake.settings.database)
    key_server("backup", tmp_path / "kms.sqlite")

    asked = await patient.post(f"/v1/cases/{case_id}/erasure-request")
    assert asked.status_code == 200 and asked.json()["erased_at"] is not None, asked.text
    key_server("restore", tmp_path / "kms.sqlite")

    values = sealed_of(case_id, before, [])
    assert {what for what, _, _ in values} == WHOLE
    # What the reconciliation is for: the restored key server gave the destroyed key back.
    back = CaseKeys.from_settings(intake.settings)
    assert all([await opens_with_a_key_that_exists(back, s, aad) for _, s, aad in values])

    done = await reconcile(intake.settings)
    assert (done.erased, done.destroyed) == ([], [case_id]), done
    keys = CaseKeys.from_settings(intake.settings)  # a process that never held the key
    for what, sealed, aad in values:
        assert not await opens_with_a_key_that_exists(keys, sealed, aad), f"erased {what} opens"
    assert (await patient.get(f"/v1/cases/{case_id}/clinical")).status_code == 410
