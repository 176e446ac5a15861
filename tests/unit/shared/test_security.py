"""Bearer JWT verification: what is accepted, what is refused and how the refusal reads."""

import base64
import json
import re
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
    DEV_ISSUER,
    REMEMBER_SECONDS,
    InvalidToken,
    Principal,
    TokenVerifier,
    authenticated,
    is_committed_secret,
    mint_main,
    mint_token,
    require_roles,
)
from avis.shared.settings import CommonSettings

DEV_SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
ISSUER = "https://id.avis.test/realms/avis"  # the JWKS's issuer
ACCESS = {"typ": "at+jwt"}  # RFC 9068: the header of an access token


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for a patient, with overrides (None removes a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": DEV_ISSUER,
        "sub": "patient-1",
        "role": "patient",
        "aud": "avis",
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = DEV_SECRET, **headers: Any) -> str:
    """An access token signed with an HMAC secret."""
    return jwt.encode(payload, secret, algorithm="HS256", headers={**ACCESS, **headers})


def signed(
    key: Any, alg: str, *, kid: str | None = None, typ: str | None = "at+jwt", **o: Any
) -> str:
    """A token of the JWKS's issuer signed with `key` (claims `o` over the valid ones)."""
    headers = {k: v for k, v in {"kid": kid, "typ": typ}.items() if v is not None}
    return jwt.encode(claims(**{"iss": ISSUER, **o}), key, algorithm=alg, headers=headers)


def b64url_json(obj: dict[str, Any]) -> str:
    """One base64url JWT segment."""
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.fixture(autouse=True)
def _default_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifetime these tests check is the default one, whatever the stack exported (the test
    stack allows the walkthroughs' 8-hour tokens)."""
    monkeypatch.delenv("AVIS_JWT_MAX_LIFETIME_SECONDS", raising=False)


@pytest.fixture
def dev_settings() -> CommonSettings:
    """Settings with only the HS256 secret (explicit, so the environment cannot add keys)."""
    return CommonSettings(
        avis_env="development", jwt_secret=DEV_SECRET, jwt_jwks="", jwt_audience="avis"
    )


@pytest.fixture
def jwks_settings(jwks_path: Path) -> CommonSettings:
    """Settings with only the JWKS file: no HS256 secret."""
    return CommonSettings(
        avis_env="production",
        jwt_secret="",
        jwt_jwks=str(jwks_path),
        jwt_issuer=ISSUER,
        jwt_audience="avis",
    )


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


def test_a_token_verified_lately_is_known_until_its_memory_or_its_exp_ends() -> None:
    now = [time.time()]
    verifier = TokenVerifier(audience="avis", secret=DEV_SECRET, clock=lambda: now[0])
    token, brief = hs256(claims()), hs256(claims(exp=int(now[0]) + 10))
    assert verifier.known(token) is None  # never verified
    principal = verifier.verify(token)
    verifier.verify(brief)
    assert verifier.known(token) == principal
    assert verifier.known(token + "x") is None  # another string: not the token verified
    now[0] += 12
    assert verifier.known(brief) is None, "known past its exp"
    assert verifier.known(token) == principal
    now[0] += REMEMBER_SECONDS - 12
    assert verifier.known(token) is None, "known longer than REMEMBER_SECONDS"


def test_a_refused_token_is_never_known(verifier: TokenVerifier) -> None:
    token = hs256(claims(), secret="another-secret-that-is-long-enough-for-hs256")
    with pytest.raises(InvalidToken):
        verifier.verify(token)
    assert verifier.known(token) is None


async def test_a_known_token_is_not_verified_again(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = hs256(claims())
    principal = await verifier.principal_of(token)  # verified in a worker thread
    monkeypatch.setattr(verifier, "verify", lambda _: pytest.fail("verified again"))
    assert await verifier.principal_of(token) == principal


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
        (lambda: claims(iss=None), "lacks the iss claim"),
        (lambda: claims(iss="https://elsewhere.example"), "issuer is wrong"),
        (lambda: claims(iat=None), "lacks the iat claim"),
        (lambda: claims(iat=int(time.time()) + 120), "not valid yet"),
        (lambda: claims(iat="1700000000"), "must be numbers"),
        (lambda: claims(iat=int(time.time()) - 3000, exp=int(time.time()) + 1000), "too long"),
    ],
)
def test_refused_claims(
    verifier: TokenVerifier, token_claims: Callable[[], dict[str, Any]], message: str
) -> None:
    # Claims made when the test runs, not when it is collected: a long suite outlives `exp`.
    with pytest.raises(InvalidToken, match=message):
        verifier.verify(hs256(token_claims()))


def test_a_token_of_the_longest_lifetime_passes(verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert verifier.verify(hs256(claims(iat=now, exp=now + 3600))).sub == "patient-1"


def test_lifetime_is_a_setting(dev_settings: CommonSettings) -> None:
    now = int(time.time())
    token = hs256(claims(iat=now, exp=now + 8 * 3600))
    with pytest.raises(InvalidToken, match="too long"):
        TokenVerifier.from_settings(dev_settings).verify(token)
    longer = dev_settings.model_copy(update={"jwt_max_lifetime_seconds": 8 * 3600})
    assert TokenVerifier.from_settings(longer).verify(token).sub == "patient-1"


@pytest.mark.parametrize("typ", [None, "JWT", "id+jwt", "at+jwt2"])
def test_a_token_that_is_not_an_access_token_is_refused(verifier: TokenVerifier, typ: str) -> None:
    token = jwt.encode(claims(), DEV_SECRET, algorithm="HS256", headers={"typ": typ})
    with pytest.raises(InvalidToken, match="not an access token"):
        verifier.verify(token)


def test_an_id_token_used_as_an_access_token_is_refused(
    rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier
) -> None:
    # An ID token of the same provider, audience and key: only its type tells it apart.
    id_token = signed(rsa_key, "RS256", kid="rsa-1", typ="JWT", nonce="n-0S6_WzA2Mj")
    with pytest.raises(InvalidToken, match="not an access token"):
        jwks_verifier.verify(id_token)
    no_nonce = signed(rsa_key, "RS256", kid="rsa-1", typ=None)
    with pytest.raises(InvalidToken, match="not an access token"):
        jwks_verifier.verify(no_nonce)


def test_access_token_type_may_be_written_as_a_media_type(
    rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier
) -> None:
    token = signed(rsa_key, "RS256", kid="rsa-1", typ="application/at+JWT")
    assert jwks_verifier.verify(token).sub == "patient-1"


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
    token = signed(rsa_key, "RS256", kid="rsa-1")
    assert jwks_verifier.verify(token).sub == "patient-1"


def test_es256_from_jwks_file(
    ec_key: ec.EllipticCurvePrivateKey, jwks_verifier: TokenVerifier
) -> None:
    token = signed(ec_key, "ES256", kid="ec-1", role="reviewer", sub="rev-2")
    assert jwks_verifier.verify(token) == Principal(sub="rev-2", role="reviewer")


def test_jwks_token_without_kid_uses_the_one_fitting_key(
    ec_key: ec.EllipticCurvePrivateKey, jwks_verifier: TokenVerifier
) -> None:
    token = signed(ec_key, "ES256")
    assert jwks_verifier.verify(token).sub == "patient-1"


def test_jwks_unknown_kid(rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier) -> None:
    token = signed(rsa_key, "RS256", kid="rsa-9")
    with pytest.raises(InvalidToken, match="key id is unknown"):
        jwks_verifier.verify(token)


def test_jwks_kid_of_another_algorithm(
    rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier
) -> None:
    # An RS256 token pointing at the EC key must not be verified with it.
    token = signed(rsa_key, "RS256", kid="ec-1")
    with pytest.raises(InvalidToken, match="does not match"):
        jwks_verifier.verify(token)


def test_jwks_signature_by_another_key(jwks_verifier: TokenVerifier) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = signed(other, "RS256", kid="rsa-1")
    with pytest.raises(InvalidToken, match="signature is invalid"):
        jwks_verifier.verify(token)


def test_jwks_token_of_another_issuer(
    rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier
) -> None:
    for issuer in ("https://id.avis.test/realms/other", DEV_ISSUER):
        token = signed(rsa_key, "RS256", kid="rsa-1", iss=issuer)
        with pytest.raises(InvalidToken, match=f"issuer is wrong; expected {ISSUER}"):
            jwks_verifier.verify(token)


def test_jwks_token_that_lives_too_long(
    rsa_key: rsa.RSAPrivateKey, jwks_verifier: TokenVerifier
) -> None:
    now = int(time.time())
    token = signed(rsa_key, "RS256", kid="rsa-1", iat=now, exp=now + 3601)
    with pytest.raises(InvalidToken, match="too long"):
        jwks_verifier.verify(token)


def test_jwks_alg_none_is_refused(jwks_verifier: TokenVerifier) -> None:
    token = f"{b64url_json({'alg': 'none', 'typ': 'at+jwt', 'kid': 'rsa-1'})}."
    token += f"{b64url_json(claims(iss=ISSUER))}."
    with pytest.raises(InvalidToken, match="algorithm none is refused"):
        jwks_verifier.verify(token)


def test_hs256_refused_when_only_jwks_is_configured(jwks_verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken, match="algorithm HS256 is refused"):
        jwks_verifier.verify(hs256(claims()))


def test_development_takes_both_each_with_its_issuer(
    jwks_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = CommonSettings(
        avis_env="development", jwt_secret=DEV_SECRET, jwt_jwks=str(jwks_path), jwt_issuer=ISSUER
    )
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.verify(hs256(claims())).sub == "patient-1"
    assert verifier.verify(signed(rsa_key, "RS256", kid="rsa-1")).sub == "patient-1"
    # A token of the development secret cannot pass as the provider's, nor the other way.
    with pytest.raises(InvalidToken, match="issuer is wrong"):
        verifier.verify(hs256(claims(iss=ISSUER)))


def test_hs256_signed_with_the_public_key_is_refused(jwks_path: Path) -> None:
    # Algorithm confusion: an attacker HMAC-signs with the (public) RSA JWK as the secret.
    public_jwk = json.loads(jwks_path.read_text())["keys"][0]
    token = f"{b64url_json({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64url_json(claims())}.c2ln"
    verifier = TokenVerifier(audience="avis", jwks=jwt.PyJWKSet([public_jwk]), issuer=ISSUER)
    with pytest.raises(InvalidToken, match="refused"):
        verifier.verify(token)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"jwt_secret": "", "jwt_jwks": ""}, "no token keys"),
        ({"avis_env": "development", "jwt_secret": "short", "jwt_jwks": ""}, "at least 32 bytes"),
        ({"jwt_secret": "", "jwt_jwks": "/nonexistent/jwks.json"}, "cannot load"),
        ({"jwt_secret": "", "jwt_jwks": "http://keys.example/jwks.json"}, "https"),
        ({"jwt_secret": "", "jwt_jwks": "https://keys.example/jwks.json"}, "AVIS_JWT_ISSUER"),
    ],
)
def test_misconfiguration_fails_at_start(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenVerifier.from_settings(CommonSettings(**kwargs))  # type: ignore[arg-type]


def test_production_refuses_a_secret() -> None:
    settings = CommonSettings(avis_env="production", jwt_secret="a-fresh-secret-" + "q" * 40)
    with pytest.raises(ValueError, match=r"for development only.*AVIS_ENV=development"):
        TokenVerifier.from_settings(settings)


def test_production_refuses_a_secret_beside_a_jwks(jwks_path: Path) -> None:
    settings = CommonSettings(
        avis_env="production",
        jwt_secret="a-fresh-secret-" + "q" * 40,
        jwt_jwks=str(jwks_path),
        jwt_issuer=ISSUER,
    )
    with pytest.raises(ValueError, match="beside AVIS_JWT_JWKS"):
        TokenVerifier.from_settings(settings)


def test_production_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVIS_ENV", raising=False)
    assert CommonSettings().avis_env == "production"


def compose_default_secret() -> str:
    """The development secret docker-compose.yml falls back to."""
    compose = Path(__file__).resolve().parents[3] / "docker-compose.yml"
    found = re.search(r"\$\{AVIS_JWT_SECRET:-([^}]+)\}", compose.read_text(encoding="utf-8"))
    assert found, "docker-compose.yml has no default AVIS_JWT_SECRET"
    return found.group(1)


@pytest.mark.parametrize(
    "secret", [compose_default_secret(), "test-secret-" + "x" * 40, "bench-" + "x" * 40, DEV_SECRET]
)
def test_production_refuses_a_committed_secret(secret: str, jwks_path: Path) -> None:
    assert is_committed_secret(secret)
    for jwks in ("", str(jwks_path)):
        settings = CommonSettings(
            avis_env="production", jwt_secret=secret, jwt_jwks=jwks, jwt_issuer=ISSUER
        )
        with pytest.raises(ValueError, match="committed in the Avis repository"):
            TokenVerifier.from_settings(settings)
    # development takes it: docker-compose and the test stack run with it
    TokenVerifier.from_settings(settings.model_copy(update={"avis_env": "development"}))


def test_a_fresh_secret_is_not_committed() -> None:
    assert not is_committed_secret("a-fresh-secret-" + "q" * 40)


def test_https_jwks_uses_a_client_without_fetching() -> None:
    settings = CommonSettings(
        jwt_secret="", jwt_jwks="https://keys.example/jwks.json", jwt_issuer=ISSUER
    )
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


def test_minted_token_is_an_access_token_of_the_development_issuer(
    dev_settings: CommonSettings,
) -> None:
    token = mint_token(dev_settings, "coord-1", "coordinator")
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    minted = jwt.decode(token, options={"verify_signature": False})
    assert minted["iss"] == DEV_ISSUER
    assert minted["exp"] - minted["iat"] == 3600


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
