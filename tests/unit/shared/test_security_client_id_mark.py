"""A provider whose access tokens say `typ: JWT` (Ory Hydra v2.3): under
AVIS_JWT_ACCESS_TOKEN_MARK=client_id its RS256/ES256 tokens pass only with the `client_id` and
`jti` claims of RFC 9068 2.2, which an ID token lacks; everything else stays as under `typ`. And
a JWKS over plain http only from this machine, only in development."""

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from avis.shared.security import DEV_ISSUER, InvalidToken, TokenVerifier
from avis.shared.settings import CommonSettings

ISSUER = "http://127.0.0.1:4444/"
SECRET = "unit-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture(autouse=True)
def _default_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVIS_JWT_MAX_LIFETIME_SECONDS", raising=False)


def claims(**overrides: Any) -> dict[str, Any]:
    """A partner machine's access token as Hydra writes it (None removes a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "client-7",
        "client_id": "client-7",
        "jti": str(uuid.uuid4()),
        "role": "partner",
        "partner_id": "insurer-42",
        "aud": ["avis"],
        "scp": [],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hydra(key: rsa.RSAPrivateKey, typ: str | None = "JWT", **overrides: Any) -> str:
    headers = {"kid": "rsa-1", "typ": typ}  # None: no typ at all
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers=headers)


def verifier(jwks_path: Path, mark: str = "client_id", **more: Any) -> TokenVerifier:
    values: dict[str, Any] = {
        "avis_env": "production",
        "jwt_secret": "",
        "jwt_jwks": str(jwks_path),
        "jwt_issuer": ISSUER,
        "jwt_audience": "avis",
        "jwt_access_token_mark": mark,
    }
    return TokenVerifier.from_settings(CommonSettings(**(values | more)))


def test_a_hydra_access_token_passes(rsa_key: rsa.RSAPrivateKey, jwks_path: Path) -> None:
    principal = verifier(jwks_path).verify(hydra(rsa_key))
    assert (principal.sub, principal.role, principal.partner_id) == (
        "client-7",
        "partner",
        "insurer-42",
    )


def test_at_jwt_still_passes_under_the_client_id_mark(
    rsa_key: rsa.RSAPrivateKey, jwks_path: Path
) -> None:
    assert verifier(jwks_path).verify(hydra(rsa_key, typ="at+jwt", client_id=None)).sub


@pytest.mark.parametrize("missing", ["client_id", "jti"])
def test_an_id_token_typed_jwt_is_refused(
    rsa_key: rsa.RSAPrivateKey, jwks_path: Path, missing: str
) -> None:
    # An ID token of the same provider, key and audience, with the role claims: what an ID
    # token has not (RFC 9068 2.2's client_id; jti) refuses it.
    with pytest.raises(InvalidToken, match="not an access token"):
        verifier(jwks_path).verify(hydra(rsa_key, **{missing: None}))


@pytest.mark.parametrize("typ", [None, "id+jwt", "JOSE"])
def test_other_types_stay_refused(
    rsa_key: rsa.RSAPrivateKey, jwks_path: Path, typ: str | None
) -> None:
    with pytest.raises(InvalidToken, match="not an access token"):
        verifier(jwks_path).verify(hydra(rsa_key, typ=typ))


def test_without_the_mark_typ_jwt_is_refused(rsa_key: rsa.RSAPrivateKey, jwks_path: Path) -> None:
    with pytest.raises(InvalidToken, match="not an access token"):
        verifier(jwks_path, mark="typ").verify(hydra(rsa_key))


def test_development_hs256_tokens_still_need_at_jwt(jwks_path: Path) -> None:
    both = verifier(jwks_path, avis_env="development", jwt_secret=SECRET)
    dev = claims(iss=DEV_ISSUER)
    plain = jwt.encode(dev, SECRET, algorithm="HS256", headers={"typ": "JWT"})
    with pytest.raises(InvalidToken, match="not an access token"):
        both.verify(plain)
    typed = jwt.encode(dev, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})
    assert both.verify(typed).partner_id == "insurer-42"


@pytest.mark.parametrize(
    ("env", "url", "accepted"),
    [
        ("development", "http://127.0.0.1:4444/.well-known/jwks.json", True),
        ("development", "http://localhost:4444/.well-known/jwks.json", True),
        ("development", "http://keys.example/.well-known/jwks.json", False),
        ("development", "http://127.0.0.1.example/jwks.json", False),
        ("production", "http://127.0.0.1:4444/.well-known/jwks.json", False),
    ],
)
def test_a_jwks_over_http_only_on_loopback_in_development(
    env: str, url: str, accepted: bool
) -> None:
    settings = CommonSettings(avis_env=env, jwt_secret="", jwt_jwks=url, jwt_issuer=ISSUER)
    if accepted:
        assert TokenVerifier.from_settings(settings).algorithms == ("RS256", "ES256")
    else:
        with pytest.raises(ValueError, match="http only on loopback"):
            TokenVerifier.from_settings(settings)
