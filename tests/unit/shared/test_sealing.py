"""The sealed-field format: round trips, key rotation, and loud failure on anything amiss."""

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest
from pydantic import BaseModel, ValidationError

from avis.shared.sealing import (
    Keyring,
    Sealed,
    SealingError,
    generate_key,
    new_kid,
)
from avis.shared.settings import CommonSettings
from tests.support.basics import ROOT

EVENT_ID = "0f8b6c1e-3f1a-4a51-9d0e-7b1c2d3e4f50"


def ring(*kids: str, keys: dict[str, str] | None = None) -> Keyring:
    """A keyring of the given ids, reusing known keys so rings can share them."""
    keys = keys if keys is not None else {}
    for kid in kids:
        keys.setdefault(kid, generate_key())
    return Keyring.parse(",".join(f"{kid}:{keys[kid]}" for kid in kids))


def flip_first_char(text: str) -> str:
    """Change the first base64url character, which always carries 6 significant bits."""
    return ("B" if text[0] == "A" else "A") + text[1:]


def test_round_trip_bytes() -> None:
    keyring = ring("k1")
    sealed = keyring.seal(b"Jeanne Martin, +33 6 12 34 56 78", EVENT_ID)
    assert sealed.alg == "A256GCM"
    assert sealed.kid == "k1"
    assert keyring.open(sealed, EVENT_ID) == b"Jeanne Martin, +33 6 12 34 56 78"


def test_round_trip_through_json_event_payload() -> None:
    keyring = ring("k1")

    class Payload(BaseModel):
        case_id: str
        contact: Sealed

    sealed = keyring.seal_json(
        {"email": "jeanne@example.org", "at": datetime(2025, 1, 2, tzinfo=UTC)}, EVENT_ID
    )
    wire = Payload(case_id="c-1", contact=sealed).model_dump_json()
    assert "jeanne" not in wire
    back = Payload.model_validate_json(wire)
    assert keyring.open_json(back.contact, EVENT_ID) == {
        "email": "jeanne@example.org",
        "at": "2025-01-02T00:00:00Z",
    }


def test_seal_json_accepts_a_model() -> None:
    class Contact(BaseModel):
        email: str

    keyring = ring("k1")
    sealed = keyring.seal_json(Contact(email="a@b.c"), EVENT_ID)
    assert keyring.open_json(sealed, EVENT_ID) == {"email": "a@b.c"}


def test_open_json_refuses_a_non_object() -> None:
    keyring = ring("k1")
    sealed = keyring.seal(b"[1, 2]", EVENT_ID)
    with pytest.raises(SealingError, match="not a JSON object"):
        keyring.open_json(sealed, EVENT_ID)


def test_each_seal_uses_a_fresh_nonce() -> None:
    keyring = ring("k1")
    a, b = keyring.seal(b"same", EVENT_ID), keyring.seal(b"same", EVENT_ID)
    assert a.nonce != b.nonce
    assert a.ct != b.ct
    assert len(base64.urlsafe_b64decode(a.nonce + "==")) == 12


def test_rotation() -> None:
    keys: dict[str, str] = {}
    old = ring("k1", keys=keys)
    sealed_old = old.seal(b"opinion", EVENT_ID)

    rotated = ring("k2", "k1", keys=keys)
    assert rotated.open(sealed_old, EVENT_ID) == b"opinion"
    sealed_new = rotated.seal(b"opinion", EVENT_ID)
    assert sealed_new.kid == "k2"
    assert rotated.primary_kid == "k2"
    assert rotated.kids == ("k2", "k1")

    retired = ring("k2", keys=keys)
    assert retired.open(sealed_new, EVENT_ID) == b"opinion"
    with pytest.raises(SealingError, match="key id k1 is not in the keyring"):
        retired.open(sealed_old, EVENT_ID)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: s.model_copy(update={"ct": flip_first_char(s.ct)}), id="ct"),
        pytest.param(lambda s: s.model_copy(update={"ct": s.ct[:-4]}), id="truncated-ct"),
        pytest.param(
            lambda s: s.model_copy(update={"nonce": flip_first_char(s.nonce)}), id="nonce"
        ),
        pytest.param(lambda s: s.model_copy(update={"nonce": s.nonce[:8]}), id="short-nonce"),
        pytest.param(lambda s: s.model_copy(update={"kid": "k2"}), id="kid-other-key"),
        pytest.param(lambda s: s.model_copy(update={"kid": "k9"}), id="kid-unknown"),
        pytest.param(lambda s: s.model_copy(update={"ct": s.ct + "!"}), id="ct-not-base64url"),
        pytest.param(lambda s: s.model_copy(update={"ct": "AAAA"}), id="ct-shorter-than-tag"),
    ],
)
def test_tampering_fails_loudly(tamper: Callable[[Sealed], Sealed]) -> None:
    keyring = ring("k1", "k2")
    sealed = keyring.seal(b'{"diagnosis": "..."}', EVENT_ID)
    with pytest.raises(SealingError):
        keyring.open(tamper(sealed), EVENT_ID)


def test_wrong_event_id_fails() -> None:
    keyring = ring("k1")
    sealed = keyring.seal(b"contact", EVENT_ID)
    with pytest.raises(SealingError, match="failed authentication"):
        keyring.open(sealed, "another-event")


def test_non_canonical_encoding_is_refused() -> None:
    keyring = ring("k1")
    sealed = keyring.seal(b"contact", EVENT_ID)
    padded = sealed.model_copy(update={"nonce": sealed.nonce + "=="})
    with pytest.raises(SealingError, match="base64url"):
        keyring.open(padded, EVENT_ID)


def test_sealed_rejects_garbage_on_parse() -> None:
    with pytest.raises(ValidationError):
        Sealed.model_validate({"alg": "A128GCM", "kid": "k1", "nonce": "AAAA", "ct": "AAAA"})
    with pytest.raises(ValidationError):
        Sealed.model_validate({"alg": "A256GCM", "kid": "k1", "nonce": "AA AA", "ct": "AAAA"})


def test_empty_aad_is_refused() -> None:
    with pytest.raises(ValueError, match="event id"):
        ring("k1").seal(b"x", "")


def test_repr_keeps_logs_short_and_keys_hidden() -> None:
    key = generate_key()
    keyring = Keyring.parse(f"k1:{key}")
    sealed = keyring.seal(b"x" * 500, EVENT_ID)
    assert sealed.ct not in repr(sealed)
    assert sealed.ct not in str(sealed)
    assert "k1" in repr(sealed)
    assert key not in repr(keyring)


def test_parse_json_format_keeps_order() -> None:
    k1, k2 = generate_key(), generate_key()
    keyring = Keyring.parse(json.dumps({"k2": k2, "k1": k1}))
    assert keyring.kids == ("k2", "k1")
    assert keyring.seal(b"x", EVENT_ID).kid == "k2"


def test_parse_accepts_urlsafe_and_unpadded_keys() -> None:
    raw = bytes(range(251, 256)) + bytes(27)
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert Keyring.parse(f"k1:{urlsafe}").kids == ("k1",)


def test_from_settings() -> None:
    settings = CommonSettings(sealing_keys=f"k1:{generate_key()}")
    assert Keyring.from_settings(settings).primary_kid == "k1"


def test_production_refuses_the_sealing_key_committed_in_compose() -> None:
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    committed = re.search(r"AVIS_SEALING_KEYS:-([^}]+)\}", compose)
    assert committed, "docker-compose.yml no longer has a default keyring: drop this test's subject"
    keys = f"{committed.group(1)},k2:{generate_key()}"
    dev = CommonSettings(avis_env="development", sealing_keys=keys)
    assert Keyring.from_settings(dev).primary_kid == "dev1"
    with pytest.raises(ValueError, match="dev1 is committed"):
        Keyring.from_settings(CommonSettings(avis_env="production", sealing_keys=keys))
    fresh = CommonSettings(avis_env="production", sealing_keys=f"k1:{generate_key()}")
    assert Keyring.from_settings(fresh).primary_kid == "k1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("k1", "<key id>:<base64 key>"),
        ("k1:not base64!!", "not valid base64"),
        (f"k1:{base64.b64encode(bytes(16)).decode()}", "16 bytes"),
        (
            f"k1:{base64.b64encode(bytes(32)).decode()},k1:{base64.b64encode(bytes(32)).decode()}",
            "twice",
        ),
        (f"bad id:{base64.b64encode(bytes(32)).decode()}", "key id"),
        (f":{base64.b64encode(bytes(32)).decode()}", "key id"),
        ('{"k1": ', "does not parse"),
        ('{"k1": 5}', "base64 string"),
        ("{}", "no key"),
    ],
)
def test_bad_keyrings(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Keyring.parse(text)


def test_bad_key_error_does_not_echo_the_key() -> None:
    short = base64.b64encode(b"secret-material-16").decode()
    with pytest.raises(ValueError, match="k1") as info:
        Keyring.parse(f"k1:{short}")
    assert short not in str(info.value)


def test_generate_key_is_a_fresh_256_bit_key() -> None:
    a, b = generate_key(), generate_key()
    assert a != b
    assert len(base64.b64decode(a)) == 32


def test_new_kid_is_dated_and_unique() -> None:
    day = date(2025, 3, 4)
    assert new_kid(today=day) == "k20250304"
    assert new_kid(["k20250304"], today=day) == "k20250304-2"


def test_command_prints_a_usable_keyring() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "avis.shared.sealing"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": ""},
    ).stdout.strip()
    keyring = Keyring.parse(out)
    assert keyring.primary_kid.startswith("k20")
    sealed = keyring.seal(b"x", EVENT_ID)
    assert keyring.open(sealed, EVENT_ID) == b"x"


def test_command_rotate_keeps_old_keys_after_the_new_one() -> None:
    current = f"old:{generate_key()}"
    out = subprocess.run(
        [sys.executable, "-m", "avis.shared.sealing", "--rotate"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "", "AVIS_SEALING_KEYS": current},
    ).stdout.strip()
    keyring = Keyring.parse(out)
    assert keyring.kids[1:] == ("old",)
    assert keyring.primary_kid != "old"
    sealed_old = Keyring.parse(current).seal(b"x", EVENT_ID)
    assert keyring.open(sealed_old, EVENT_ID) == b"x"


def test_open_model_returns_the_contract_and_names_bad_fields_without_values() -> None:
    from avis.shared.events import PatientContact

    keyring = Keyring.parse(f"k1:{generate_key()}")
    contact = PatientContact(
        given_name="Élodie",
        family_name="Martin",
        email="e@example.org",
        birth_date=date(1980, 2, 29),
        preferred_language="fr",
    )
    sealed = keyring.seal_json(contact, EVENT_ID)
    assert keyring.open_model(sealed, EVENT_ID, PatientContact) == contact
    broken = keyring.seal_json({"given_name": "Élodie", "email": "secret@x.y"}, EVENT_ID)
    with pytest.raises(SealingError) as err:
        keyring.open_model(broken, EVENT_ID, PatientContact)
    assert "family_name" in str(err.value) and "secret" not in str(err.value)
