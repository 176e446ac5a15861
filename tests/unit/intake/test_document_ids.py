"""A record's document id: a keyed digest of its bytes on its case, the same under a rotated
keyring for a file stored under the earlier key."""

import hashlib

from avis.intake.service import document_ids
from avis.shared.sealing import Keyring, generate_key

DATA = b"%PDF-1.4\n% a record\n%%EOF\n"
CASE = "4d0c1d9e-8a1b-4c53-9a8e-0b1c2d3e4f50"


def test_an_id_is_no_plain_hash_and_differs_from_case_to_case() -> None:
    keyring = Keyring.parse(f"k1:{generate_key()}")
    (first,) = document_ids(keyring, CASE, DATA)
    (other,) = document_ids(keyring, CASE.replace("4d0c", "5e1d"), DATA)
    assert len(first) == 64 and first != hashlib.sha256(DATA).hexdigest()
    assert first != other
    assert document_ids(keyring, CASE, DATA) == [first]


def test_a_file_stored_under_the_earlier_key_is_found_after_a_rotation() -> None:
    old, new = f"k1:{generate_key()}", f"k2:{generate_key()}"
    (before,) = document_ids(Keyring.parse(old), CASE, DATA)
    after = document_ids(Keyring.parse(f"{new},{old}"), CASE, DATA)
    assert after[1] == before and after[0] != before
