"""Bearer JWT verification: what is accepted, what is refused and how the refusal reads."""

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from avis.shared.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers, problem_responses
from avis.shared.security import (
    InvalidToken,
    Principal,
    TokenVerifier,
    authenticated,
    mint_main,
    mint_token,
    require_roles,
)
from avis.shared.settings import CommonSettings

DEV_SECRET = "unit-test-secret-that-is-long-enough-for-hs256"


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for a patient, with overrides (None removes a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": "patient-1", "role": "patient", "aud": "avis", "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = DEV_SECRET) -> str:
    """A token signed with an HMAC secret."""
    return jwt.encode(payload, secret, algorithm="HS256")


def b64url_json(obj: dict[str, Any]) -> str:
    """One base64url JWT segment."""
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.fixture
def dev_settings() -> CommonSettings:
    """Settings with only the HS256 secret (explicit, so the environment cannot add keys)."""
    return CommonSettings(jwt_secret=DEV_SECRET, jwt_jwks="", jwt_audience="avis")


@pytest.fixture
def jwks_settings(jwks_path: Path) -> CommonSettings:
    """Settings with only the JWKS file: no HS256 secret."""
    return CommonSettings(jwt_secret="", jwt_jwks=str(jwks_path), jwt_audience="avis")


@pytest.fixture
def verifier(dev_settings: CommonSettings) -> TokenVerifier:
    """A verifier with the HS256 development secret only."""
    return TokenVerifier.from_settings(dev_settings)


@pytest.fixture
def jwks_verifier(jwks_settings: CommonSettings) -> TokenVerifier:
    """A verifier with the JWKS file only."""
    return TokenVerifier.from_settings(jwks_settings)


# --- the verifier ---------------------------------------------------------------------------


def test_valid_hs256_token(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs256(claims())) == Principal(sub="patient-1", role="patient")


def test_minted_token_round_trips(dev_settings: CommonSettings, verifier: TokenVerifier) -> None:
    token = mint_token(dev_settings, "partner-user-7", "partner", partner_id="insurer-3")
    assert verifier.verify(token) == Principal(
        sub="partner-user-7", role="partner", partner_id="insurer-3"
    )


def test_principal_is_frozen() -> None:
    principal = Principal(sub="s", role="patient")
    with pytest.raises(ValueError, match="frozen"):
        principal.role = "coordinator"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("token_claims", "message"),
    [
        (lambda: claims(exp=int(time.time()) - 120), "expired"),
        (lambda: claims(aud="someone-else"), "audience"),
        (lambda: claims(exp=None), "lacks the exp claim"),
        (lambda: claims(sub=None), "lacks the sub claim"),
        (lambda: claims(role=None), "lacks the role claim"),
        (lambda: claims(aud=None), "lacks the aud claim"),
        (lambda: claims(role="admin"), "role is not one of"),
        (lambda: claims(role="partner"), "partner_id"),
        (lambda: claims(role="partner", partner_id=""), "partner_id"),
        (lambda: claims(nbf=int(time.time()) + 3600), "not valid yet"),
    ],
)
def test_refused_claims(
    verifier: TokenVerifier, token_claims: Callable[[], dict[str, Any]], message: str
) -> None:
    # Claims made when the test runs, not when it is collected: a long suite outlives `exp`.
    with pytest.raises(InvalidToken, match=message):
        verifier.verify(hs256(token_claims()))


def test_leeway_accepts_a_token_just_expired(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs256(claims(exp=int(time.time()) - 5))).sub == "patient-1"


def test_bad_signature(verifier: TokenVerifier) -> None:
    forged = hs256(claims(), secret="another-secret-that-is-also-long-enough-x")
    with pytest.raises(InvalidToken, match="signature is invalid"):
        verifier.verify(forged)


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    token = f"{b64url_json({'alg': 'none', 'typ': 'JWT'})}.{b64url_json(claims())}."
    with pytest.raises(InvalidToken, match="algorithm none is refused"):
        verifier.verify(token)


@pytest.mark.parametrize("alg", ["HS384", "HS512", "PS256", "EdDSA", "RS256"])
def test_other_algorithms_are_refused_without_matching_keys(
    verifier: TokenVerifier, alg: str
) -> None:
    token = f"{b64url_json({'alg': alg})}.{b64url_json(claims())}.c2ln"
    with pytest.raises(InvalidToken, match="refused"):
        verifier.verify(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "....", "x" * 9000])
def test_garbled_tokens(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_rs256_from_jwks_file(rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert jwks_verifier.verify(token).sub == "patient-1"


def test_es256_from_jwks_file(
    ec_key: ec.EllipticCurvePrivateKey, jwks_verifier: TokenVerifier
) -> None:
    token = jwt.encode(
        claims(role="reviewer", sub="rev-2"),
        ec_key,
        algorithm="ES256",
        headers={"kid": "ec-1"},
    )
    assert jwks_verifier.verify(token) == Principal(sub="rev-2", role="reviewer")


def test_jwks_token_without_kid_uses_the_one_fitting_key(
    ec_key: ec.EllipticCurvePrivateKey, jwks_verifier: TokenVerifier
) -> None:
    token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert jwks_verifier.verify(token).sub == "patient-1"


def test_jwks_unknown_kid(rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-9"})
    with pytest.raises(InvalidToken, match="key id is unknown"):
        jwks_verifier.verify(token)


def test_jwks_kid_of_another_algorithm(
    rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier
) -> None:
    # An RS256 token pointing at the EC key must not be verified with it.
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    with pytest.raises(InvalidToken, match="does not match"):
        jwks_verifier.verify(token)


def test_jwks_signature_by_another_key(jwks_verifier: TokenVerifier) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "rsa-1"})
    with pytest.raises(InvalidToken, match="signature is invalid"):
        jwks_verifier.verify(token)


def test_hs256_refused_when_only_jwks_is_configured(jwks_verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken, match="algorithm HS256 is refused"):
        jwks_verifier.verify(hs256(claims()))


def test_hs256_signed_with_the_public_key_is_refused(jwks_path: Path) -> None:
    # Algorithm confusion: an attacker HMAC-signs with the (public) RSA JWK as the secret.
    public_jwk = json.loads(jwks_path.read_text())["keys"][0]
    token = f"{b64url_json({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64url_json(claims())}.c2ln"
    verifier = TokenVerifier(audience="avis", jwks=jwt.PyJWKSet([public_jwk]))
    with pytest.raises(InvalidToken, match="refused"):
        verifier.verify(token)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"jwt_secret": "", "jwt_jwks": ""}, "no token keys"),
        ({"jwt_secret": "short", "jwt_jwks": ""}, "at least 32 bytes"),
        ({"jwt_secret": "", "jwt_jwks": "/nonexistent/jwks.json"}, "cannot load"),
        ({"jwt_secret": "", "jwt_jwks": "http://keys.example/jwks.json"}, "https"),
    ],
)
def test_misconfiguration_fails_at_start(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenVerifier.from_settings(CommonSettings(**kwargs))  # type: ignore[arg-type]


def test_https_jwks_uses_a_client_without_fetching() -> None:
    settings = CommonSettings(jwt_secret="", jwt_jwks="https://keys.example/jwks.json")
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.algorithms == ("RS256", "ES256")


# --- minting ---------------------------------------------------------------------------------


def test_mint_token_refuses_partner_without_partner_id(dev_settings: CommonSettings) -> None:
    with pytest.raises(ValueError, match="partner_id"):
        mint_token(dev_settings, "p", "partner")


def test_mint_token_needs_the_secret() -> None:
    with pytest.raises(ValueError, match="AVIS_JWT_SECRET"):
        mint_token(CommonSettings(jwt_secret=""), "p", "patient")


def test_mint_main_prints_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], verifier: TokenVerifier
) -> None:
    monkeypatch.setenv("AVIS_JWT_SECRET", DEV_SECRET)
    monkeypatch.delenv("AVIS_JWT_AUDIENCE", raising=False)
    assert mint_main(["--sub", "coord-1", "--role", "coordinator", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert verifier.verify(token) == Principal(sub="coord-1", role="coordinator")


def test_module_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "avis.shared.security", "--sub", "s", "--role", "service"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "", "AVIS_JWT_SECRET": DEV_SECRET},
    )
    assert result.stdout.count(".") == 2


# --- through FastAPI -------------------------------------------------------------------------


@pytest.fixture
def client(verifier: TokenVerifier) -> TestClient:
    """A tiny app with one route per kind of access."""
    app = FastAPI()
    app.state.token_verifier = verifier
    install_problem_handlers(app)

    @app.get("/me", responses=problem_responses(401))
    def me(principal: Annotated[Principal, Depends(authenticated)]) -> dict[str, str]:
        return {"sub": principal.sub, "role": principal.role}

    @app.get("/assignments", responses=problem_responses(401, 403))
    def assignments(
        principal: Annotated[Principal, Depends(require_roles("coordinator", "service"))],
    ) -> dict[str, str]:
        return {"sub": principal.sub}

    return TestClient(app)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def test_http_accepts_a_valid_token(client: TestClient) -> None:
    response = client.get("/me", headers=bearer(hs256(claims())))
    assert response.status_code == 200
    assert response.json() == {"sub": "patient-1", "role": "patient"}


@pytest.mark.parametrize(
    ("make_headers", "detail"),
    [
        (lambda: {}, "missing Authorization header"),
        (lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer scheme"),
        (lambda: {"Authorization": "Bearer "}, "empty"),
        (lambda: {"Authorization": "Bearer not.a.token"}, "malformed"),
        (lambda: bearer(hs256(claims(exp=int(time.time()) - 120))), "expired"),
        (lambda: bearer(hs256(claims(), secret="x" * 40)), "signature is invalid"),
        (lambda: bearer(hs256(claims(aud="elsewhere"))), "audience"),
        (
            lambda: {
                "Authorization": f"Bearer {b64url_json({'alg': 'none'})}.{b64url_json(claims())}."
            },
            "algorithm none is refused",
        ),
    ],
)
def test_http_401_is_a_problem_with_a_challenge(
    client: TestClient, make_headers: Callable[[], dict[str, str]], detail: str
) -> None:
    headers = make_headers()  # made when the test runs: a long suite outlives a token's `exp`
    response = client.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.headers["www-authenticate"].startswith('Bearer realm="avis"')
    body = response.json()
    assert body["status"] == 401
    assert body["type"] == "https://avis.health/problems/unauthorized"
    assert detail in body["detail"]
    token = headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if len(token) > 8:
        assert token not in response.text


def test_http_missing_header_has_no_error_code(client: TestClient) -> None:
    response = client.get("/me")
    assert response.headers["www-authenticate"] == 'Bearer realm="avis"'


def test_http_403_for_a_role_not_allowed(client: TestClient) -> None:
    response = client.get("/assignments", headers=bearer(hs256(claims())))
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == "https://avis.health/problems/forbidden"
    assert "patient" in body["detail"]


def test_http_allowed_role_passes(client: TestClient) -> None:
    token = hs256(claims(role="coordinator", sub="coord-1"))
    response = client.get("/assignments", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"sub": "coord-1"}


def test_http_401_before_403(client: TestClient) -> None:
    assert client.get("/assignments").status_code == 401


def test_openapi_declares_bearer_and_problems(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/assignments"]["get"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert set(operation["responses"]) == {"200", "401", "403"}
    assert list(operation["responses"]["403"]["content"]) == [PROBLEM_MEDIA_TYPE]


def test_require_roles_refuses_unknown_roles() -> None:
    with pytest.raises(ValueError, match="roles"):
        require_roles("admin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="roles"):
        require_roles()


def test_missing_verifier_is_a_server_error() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/me")
    def me(principal: Annotated[Principal, Depends(authenticated)]) -> dict[str, str]:
        return {"sub": principal.sub}

    response = TestClient(app).get("/me", headers=bearer(hs256(claims())))
    assert response.status_code == 500
    assert "token_verifier" not in response.text
