"""A partner's machine signs in to the real OpenID provider of the test stack (Ory Hydra) by
client credentials and files a case in intake, which takes it as that partner: its token's role
and partner id come from web's token hook, its signature from the provider's published keys. A
service's machine (an operator's script) signs in the same way as role service: it reads a case's
status, never its clinical content. A client of neither kind gets no token.

Then what intake must refuse, each token differing from the accepted one in one respect only
(signed again with the provider's own access-token key where a signature is needed, so the check
under test is the only one that can refuse it): another issuer, expired, living too long, issued
in the future, `alg=none`, an unknown key id; and a real ID token of the same provider, with the
same audience and the role claims, used as an access token.
"""

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from tests.support import oidc
from tests.support.intake import Intake, intake_settings, running_intake

pytestmark = pytest.mark.infra

DRAFT = {
    "patient": {
        "given_name": "Inès",
        "family_name": "Marchal",
        "birth_date": "1971-03-02",
        "email": "ines.marchal@example.org",
        "preferred_language": "fr",
    },
    "specialty": "cardiology",
    "questions": ["diagnosis_clarification"],
    "clinical_summary": "Palpitations on exertion.",
}


@pytest.fixture(scope="module")
async def intake() -> AsyncIterator[Intake]:
    """Intake as `make run` configures it: the provider's keys and issuer beside the HS256
    development secret; web's token hook served where the provider calls it."""
    settings = intake_settings(
        jwt_jwks=oidc.JWKS, jwt_issuer=oidc.ISSUER, jwt_access_token_mark="client_id"
    )
    async with oidc.token_hook(), running_intake(settings) as service:
        yield service


async def machine_token(partner_id: str) -> str:
    """The access token the partner's machine gets from the provider."""
    client = oidc.partners()[partner_id]
    return await oidc.client_credentials(client["client_id"], client["client_secret"])


def bearer(intake: Intake, token: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        base_url=intake.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    intake.clients.append(client)
    return client


async def test_a_partners_machine_files_a_case_by_client_credentials(intake: Intake) -> None:
    token = await machine_token("insurer-42")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["role"], claims["partner_id"], claims["iss"]) == (
        "partner",
        "insurer-42",
        oidc.ISSUER,
    )
    machine = bearer(intake, token)
    created = await machine.post("/v1/cases", json=DRAFT)
    assert created.status_code == 201, created.text
    case_id = created.json()["case_id"]
    view = await machine.get(f"/v1/cases/{case_id}")
    assert view.status_code == 200, view.text
    assert view.json()["partner_id"] == "insurer-42"
    # The other development partner's machine does not see it.
    other = bearer(intake, await machine_token("partner-1"))
    assert (await other.get(f"/v1/cases/{case_id}")).status_code in (403, 404)
    # The HS256 development tokens of `avis-token` still work beside the provider's.
    assert (await intake.client(role="partner").get("/v1/cases")).status_code == 200


async def test_a_services_machine_reads_a_status_but_no_clinical_content(intake: Intake) -> None:
    client = oidc.services()["avis-operations"]
    token = await oidc.client_credentials(client["client_id"], client["client_secret"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["role"], claims["iss"], claims["client_id"]) == (
        "service",
        oidc.ISSUER,
        "avis-operations",
    )
    assert "partner_id" not in claims
    partner = bearer(intake, await machine_token("insurer-42"))
    created = await partner.post("/v1/cases", json=DRAFT)
    assert created.status_code == 201, created.text
    case_id = created.json()["case_id"]
    service = bearer(intake, token)
    view = await service.get(f"/v1/cases/{case_id}")
    assert view.status_code == 200, view.text
    assert view.json()["status"] == created.json()["status"]
    assert "clinical_summary" not in view.text and "Marchal" not in view.text
    clinical = await service.get(f"/v1/cases/{case_id}/clinical")
    assert clinical.status_code == 403, clinical.text
    assert "Palpitations" not in clinical.text


async def test_a_client_of_no_partner_gets_no_token(intake: Intake) -> None:
    """A client the provider knows but web's configuration names neither a partner's nor a
    service's: the token hook refuses, so the provider issues nothing."""
    client_id, secret = f"stranger-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex * 2
    client = {
        "client_id": client_id,
        "client_secret": secret,
        "grant_types": ["client_credentials"],
        "audience": ["avis"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(f"{oidc.ADMIN}/admin/clients", json=client)).status_code == 201
        try:
            answer = await http.post(
                f"{oidc.ISSUER}oauth2/token",
                data={"grant_type": "client_credentials", "audience": "avis"},
                auth=(client_id, secret),
            )
        finally:
            await http.delete(f"{oidc.ADMIN}/admin/clients/{client_id}")
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "access_denied"
    assert "access_token" not in answer.json()


def no_signature(token: str) -> str:
    """`token` with `alg: none` and no signature (its key id kept)."""
    header = jwt.get_unverified_header(token) | {"alg": "none"}
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
    return f"{head}.{token.split('.')[1]}."


async def refused_forms(intake: Intake) -> dict[str, tuple[str, str]]:
    """Each token to refuse, with the words of the refusal that name its check."""
    token = await machine_token("insurer-42")
    key = await oidc.access_token_key()
    now = oidc.now()
    longest = intake.settings.jwt_max_lifetime_seconds
    return {
        "same, signed again": (oidc.resigned(token, key), ""),
        "another issuer": (
            oidc.resigned(token, key, iss=f"http://127.0.0.1:{oidc.PORT}/elsewhere/"),
            "issuer is wrong",
        ),
        "expired": (
            oidc.resigned(token, key, iat=now - 7200, nbf=now - 7200, exp=now - 3600),
            "expired",
        ),
        "lives too long": (
            oidc.resigned(token, key, iat=now, nbf=now, exp=now + longest + 60),
            "lives too long",
        ),
        "issued in the future": (
            oidc.resigned(token, key, iat=now + 600, exp=now + 1200),
            "not valid yet",
        ),
        "alg none": (no_signature(token), "algorithm none is refused"),
        "unknown kid": (
            oidc.resigned(token, key, header={"kid": str(uuid.uuid4())}),
            "key id is unknown",
        ),
        # A client named like the services' audience gets an ID token for it: same provider,
        # issuer, audience and role claims; only what marks an access token is missing.
        "ID token": (
            await oidc.id_token(
                intake.settings.jwt_audience, {"role": "partner", "partner_id": "insurer-42"}
            ),
            "not an access token",
        ),
    }


async def test_intake_refuses_each_bad_token_for_its_own_reason(intake: Intake) -> None:
    results: dict[str, Any] = {}
    for name, (token, reason) in (await refused_forms(intake)).items():
        answer = await bearer(intake, token).get("/v1/cases")
        results[name] = (answer.status_code, answer.json().get("detail", ""))
        if not reason:
            assert answer.status_code == 200, (name, answer.text)
            continue
        assert answer.status_code == 401, (name, answer.text)
        assert reason in answer.json()["detail"], (name, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer"), name
    print(results)
