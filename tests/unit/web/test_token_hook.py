"""Web's token hook, which the OpenID provider asks before it issues a client-credentials token:
only the provider's key is heard; a partner's machine gets role partner and its partner id, a
service's machine role service alone, a client of neither gets no token, and other grants are left
as the provider made them. The pure rule (rules.machine_claims) beside it."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from avis.web import rules
from avis.web.main import create_app
from avis.web.oidc import HOOK_PATH
from avis.web.settings import Settings

KEY = "k" * 64
CLIENTS = {"c-acme": "insurer-42"}
SERVICES = ["avis-operations"]
CC = ["client_credentials"]


def hook(client_id: str = "c-acme", grants: tuple[str, ...] = ("client_credentials",)) -> Any:
    return {
        "session": {"extra": {}, "client_id": client_id},
        "request": {"client_id": client_id, "grant_types": list(grants), "granted_scopes": []},
    }


async def web(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    values: dict[str, Any] = {"avis_env": "development", "jwt_secret": "s" * 40}
    settings = Settings(
        **(
            values
            | {"token_hook_key": KEY, "partner_clients": CLIENTS, "service_clients": SERVICES}
            | overrides
        )
    )
    app = create_app(settings, transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as client,
    ):
        yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for c in web():
        yield c


async def test_a_partners_machine_acts_as_its_partner(client: httpx.AsyncClient) -> None:
    answer = await client.post(HOOK_PATH, json=hook(), headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200
    assert answer.json() == {
        "session": {"access_token": {"role": "partner", "partner_id": "insurer-42"}, "id_token": {}}
    }


async def test_a_client_of_no_partner_gets_no_token(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        HOOK_PATH, json=hook("c-other"), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 403


async def test_other_grants_are_left_as_the_provider_made_them(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        HOOK_PATH,
        json=hook("c-other", ("authorization_code",)),
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.status_code == 204


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x"])
async def test_only_the_providers_key_is_heard(
    client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    answer = await client.post(HOOK_PATH, json=hook(), headers=headers)
    assert answer.status_code == 401
    assert "partner_id" not in answer.text


async def test_the_hook_is_off_without_a_key() -> None:
    async for client in web(token_hook_key=""):
        answer = await client.post(HOOK_PATH, json=hook(), headers={"Authorization": "Bearer "})
        assert answer.status_code == 404


async def test_a_services_machine_acts_as_role_service(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        HOOK_PATH, json=hook("avis-operations"), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 200
    assert answer.json() == {"session": {"access_token": {"role": "service"}, "id_token": {}}}


def test_the_services_clients_are_read_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIS_WEB_SERVICE_CLIENTS", '["avis-operations","monitor"]')
    settings = Settings(avis_env="development", jwt_secret="s" * 40)
    assert settings.service_clients == ["avis-operations", "monitor"]


def test_the_rule_gives_a_partners_machine_its_partner() -> None:
    claims = rules.machine_claims("c-acme", CC, CLIENTS, SERVICES)
    assert claims == {"role": "partner", "partner_id": "insurer-42"}


def test_the_rule_gives_a_services_machine_role_service_and_no_partner() -> None:
    assert rules.machine_claims("avis-operations", CC, CLIENTS, SERVICES) == {"role": "service"}


@pytest.mark.parametrize(
    ("client_id", "partners", "services"),
    [
        ("c-other", CLIENTS, SERVICES),  # neither
        ("avis-operations", CLIENTS, []),  # no services configured
        ("c-acme", CLIENTS, ["c-acme"]),  # named as both: which role is meant is unknown
    ],
)
def test_the_rule_refuses_a_client_of_neither_kind(
    client_id: str, partners: dict[str, str], services: list[str]
) -> None:
    with pytest.raises(rules.MachineUnknown):
        rules.machine_claims(client_id, CC, partners, services)


def test_the_rule_leaves_other_grants_alone() -> None:
    assert rules.machine_claims("avis-operations", ["authorization_code"], {}, SERVICES) is None
