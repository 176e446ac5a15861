"""`avis-keys in-use`: the sealed values under each key id, wherever they sit in a document."""

from avis.shared.key_usage import CASE_KEYS, count, sealed_kids
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
