"""Claiming a partner-filed case, as pure rules: the keyed digest of the one-time secret, its
check in constant time, and who may claim what."""

import hmac

import pytest

from avis.intake import rules
from avis.shared.problems import Problem
from avis.shared.sealing import Keyring

KEY = bytes(range(32))
CASE = "6f1c1d9e-4a4b-4c55-9d2e-8a1f3b2c7d10"


def test_a_new_secret_is_long_random_and_url_safe() -> None:
    made = {rules.new_claim_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(len(s) >= 43 and s.replace("-", "").replace("_", "").isalnum() for s in made)


def test_the_digest_is_keyed_and_bound_to_the_case() -> None:
    secret = rules.new_claim_secret()
    digest = rules.claim_digest(KEY, CASE, secret)
    assert secret not in digest
    assert rules.claim_matches(KEY, CASE, secret, digest)
    assert not rules.claim_matches(KEY, CASE, secret + "x", digest)
    assert not rules.claim_matches(bytes(32), CASE, secret, digest), "another key"
    other = "6f1c1d9e-4a4b-4c55-9d2e-8a1f3b2c7d11"
    assert not rules.claim_matches(KEY, other, secret, digest), "another case"
    assert not rules.claim_matches(KEY, CASE, secret, None), "a case with no claim"


def test_the_digest_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def compare(a: str, b: str) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(rules.hmac, "compare_digest", compare)
    digest = rules.claim_digest(KEY, CASE, "s" * 43)
    assert rules.claim_matches(KEY, CASE, "s" * 43, digest)
    assert calls == [(digest, digest)]


def test_a_case_is_claimable_once_and_a_wrong_secret_is_not_found() -> None:
    rules.check_claimable(matches=True, patient_id=None)
    with pytest.raises(Problem) as wrong:
        rules.check_claimable(matches=False, patient_id=None)
    assert wrong.value.status == 404 and wrong.value.type.endswith("case-not-found")
    with pytest.raises(Problem) as wrong_and_claimed:
        rules.check_claimable(matches=False, patient_id="patient-1")
    assert wrong_and_claimed.value.status == 404, "no oracle: a wrong secret never learns more"
    with pytest.raises(Problem) as again:
        rules.check_claimable(matches=True, patient_id="patient-1")
    assert again.value.status == 409 and again.value.type.endswith("already-claimed")


def test_only_a_case_without_a_patient_waits_for_a_claim() -> None:
    assert rules.needs_claim(None)
    assert not rules.needs_claim("patient-1")


def test_the_keyring_derives_a_key_per_purpose_and_key_id() -> None:
    ring = Keyring({"k2": bytes([2]) * 32, "k1": bytes([1]) * 32})
    kid, key = ring.derive(rules.CLAIM_PURPOSE)
    assert kid == "k2" and len(key) == 32
    assert ring.derive(rules.CLAIM_PURPOSE, "k2") == (kid, key)
    assert ring.derive(rules.CLAIM_PURPOSE, "k1")[1] != key, "rotated keys derive apart"
    assert ring.derive("another purpose")[1] != key
    assert key != bytes([2]) * 32, "never the sealing key itself"
