"""`avis-keys in-use`: the sealed values under each key id, wherever they sit in a document."""

from avis.shared.key_usage import CASE_KEYS, count, keyed_kids, sealed_kids
from avis.shared.sealing import Keyring, generate_key


def test_every_sealed_value_is_counted_under_its_key_and_case_keys_together() -> None:
    old = Keyring.parse(f"k1:{generate_key()}")
    new = Keyring.parse(f"k2:{generate_key()},k1:{generate_key()}")
    case_a = new.led_by("case.17", bytes(32))
    case_b = new.led_by("case.18", bytes(32))
    docs = [
        {"_id": "a", "content": case_a.seal(b"x", "a").model_dump()},
        {"_id": "b", "chunks": [{"sealed": case_b.seal(b"y", "b").model_dump()}]},
        {"_id": "c", "nested": {"reason": old.seal(b"z", "c").model_dump(), "n": 3}},
        {"_id": "d", "secrets": [new.seal(b"w", "d").model_dump(), {"kid": "k9"}]},
    ]
    per_kid, cases = count(docs)
    assert per_kid == {CASE_KEYS: 2, "k1": 1, "k2": 1}
    assert cases == {"case.17", "case.18"}
    assert list(sealed_kids({"alg": "A256GCM", "kid": "k1"})) == [], "no ciphertext: not sealed"


def test_keyed_digests_are_counted_under_the_key_they_were_made_with() -> None:
    sealed = Keyring.parse(f"k1:{generate_key()}").seal(b"x", "a").model_dump()
    doc = {
        "_id": "a",
        "fingerprint": "k1:" + "ab" * 32,  # a request's fingerprint
        "opinions": [{"version": 1, "digest": "k4:" + "cd" * 32}],
        "claim": {"kid": "k2", "digest": "00ff"},
        "used": {"kid": "k2", "digest": "00ff", "claimed_at": "2026-01-01T00:00:00Z"},
        "checkpoint": {"_id": "c", "kid": "k3", "mac": "00ff", "seq": 4},
        "sealed": sealed,
        "plain": ["k1:not-hex", "ab" * 32],
        "record": {"_id": "case-1:" + "ef" * 32},  # a record's id: a digest, but no key id
    }
    assert sorted(keyed_kids(doc)) == ["k1", "k2", "k3", "k4"], "a used claim needs no key"
