"""People sign in through the test stack's real OpenID provider (Ory Hydra) and identity server
(Ory Kratos), with web as `make run` configures it (AVIS_WEB_SIGNIN=oidc): an HTTP client plays
the browser (cookies, redirects, forms). Each seeded person signs in by the authorization-code
flow with PKCE, professionals with their TOTP code, and intake takes the token web got.

Then what must be refused: a wrong password, a professional without the second factor (a wrong
code, none, or none enrolled), PKCE `plain` or no challenge at all; and the role comes from the
identity's admin metadata, never from the traits the person edits.

A forgotten password is recovered in the identity server too: web's "Forgot your password?" link,
its rendering of the recovery form, the code the identity server mails (read from the SMTP sink),
the new password set through web's rendering of the settings form; that password signs in, the
old one no longer does.
"""

import secrets
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from avis.shared.access_log import trail_aad
from avis.shared.audit import AuditTrail
from avis.shared.sealing import Keyring
from avis.web import rules
from avis.web.roles import change_role
from avis.web.settings import Settings as WebSettings
from tests.support import oidc
from tests.support.basics import MONGO_URL, SEALING_KEYS
from tests.support.intake import Intake, intake_settings, running_intake
from tests.support.signin import (
    KRATOS,
    KRATOS_ADMIN,
    Browser,
    OidcWeb,
    asks_second_factor,
    claims,
    edit_own_traits,
    emailed_code,
    forget,
    new_person,
    oidc_web,
    people,
    set_metadata_admin,
    shows,
    totp,
)

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
async def intake() -> AsyncIterator[Intake]:
    """Intake taking the provider's tokens, as `make run` configures it."""
    settings = intake_settings(
        jwt_jwks=oidc.JWKS, jwt_issuer=oidc.ISSUER, jwt_access_token_mark="client_id"
    )
    async with running_intake(settings) as service:
        yield service


@pytest.fixture(scope="module")
async def web(intake: Intake) -> AsyncIterator[OidcWeb]:
    async with oidc_web(intake.url) as served:
        yield served


async def cases(intake: Intake, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(
            f"{intake.url}/v1/cases", headers={"Authorization": f"Bearer {token}"}
        )


async def test_each_seeded_person_signs_in_and_intake_takes_the_token(
    web: OidcWeb, intake: Intake
) -> None:
    for subject, person in people().items():
        async with Browser() as browser:
            page = await browser.password(
                await browser.begin(), person["email"], person["password"]
            )
            if person["role"] in rules.PROFESSIONALS:
                # The password alone is not enough for a professional: the code is asked for.
                assert asks_second_factor(page), (subject, page.url)
                assert web.token(browser) is None, subject
                page = await browser.code(page, totp(person["totp_secret"]))
            assert page.url.host == "127.0.0.1" and page.url.port == oidc.HOOK_PORT, page.url
            token = web.token(browser)
            assert token is not None, (subject, page.url, page.text[-1500:])
            got = claims(token)
            assert (got["sub"], got["role"], got.get("partner_id")) == (
                subject,
                person["role"],
                person["partner_id"],
            )
            assert (got["iss"], got["client_id"], got["aud"]) == (oidc.ISSUER, "avis-web", ["avis"])
            # The provider's token, straight to a service (its keys, issuer, audience checked).
            assert (await cases(intake, token)).status_code == 200, subject
            if subject == "patient-1":
                # Web's own pages call intake with it: the patient's list of cases.
                assert page.url.path == "/cases" and page.status_code == 200, page.text[-1500:]
                await signs_out(web, browser, page)


async def signs_out(web: OidcWeb, browser: Browser, page: httpx.Response) -> None:
    """Sign-out ends web's session, the identity server's and the provider's."""
    assert (await browser.identity_session()).status_code == 200
    out = await sign_out(browser, page)
    assert out.url.path == "/signin", out.url
    assert web.token(browser) is None
    assert (await browser.identity_session()).status_code == 401
    # Signing in again asks for the password again (no session left anywhere).
    again = await browser.begin()
    assert again.url.path == "/signin/password" and 'name="password"' in again.text


async def sign_out(browser: Browser, page: httpx.Response) -> httpx.Response:
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return await browser.http.post(str(page.url.join("/signout")), data={"csrf": csrf})


async def test_a_wrong_password_is_refused(web: OidcWeb) -> None:
    person = people()["patient-1"]
    async with Browser() as browser:
        page = await browser.password(await browser.begin(), person["email"], "not-the-password")
        assert page.url.path == "/signin/password", page.url
        assert shows(page, "That email address and password do not match"), page.text[-1500:]
        assert web.token(browser) is None
        assert (await browser.identity_session()).status_code == 401


async def test_a_professional_without_the_second_factor_gets_no_token(web: OidcWeb) -> None:
    person = people()["coordinator-1"]
    async with Browser() as browser:
        page = await browser.password(await browser.begin(), person["email"], person["password"])
        assert asks_second_factor(page), page.url
        wrong = await browser.code(
            page, "000000" if totp(person["totp_secret"]) != "000000" else "1"
        )
        assert asks_second_factor(wrong) and shows(wrong, "That code is not valid"), wrong.url
        # Starting over with the password's session: the code is asked for again, no token.
        again = await browser.begin()
        assert asks_second_factor(again), again.url
        assert web.token(browser) is None
    # A coordinator with no second factor enrolled is refused outright.
    bare = await new_person({"subject": "coordinator-bare", "role": "coordinator"})
    try:
        async with Browser() as browser:
            page = await browser.password(await browser.begin(), bare["email"], bare["password"])
            assert page.url.path == "/signin", page.url
            assert shows(page, "That sign-in was not accepted"), page.text[-1500:]
            assert web.token(browser) is None
    finally:
        await forget(bare)


def callback_query(page: httpx.Response) -> dict[str, list[str]]:
    """What the provider sent back to web's callback on the way to `page`."""
    for step in (*page.history, page):
        if step.url.path == "/signin/callback":
            return urllib.parse.parse_qs(step.url.query.decode())
    raise AssertionError(f"the provider never returned to web: {page.url}")


async def test_pkce_plain_and_a_flow_without_a_challenge_are_refused(web: OidcWeb) -> None:
    """Authorization requests of web's client made by hand, for a person already signed in at
    the identity server: only S256 yields a code, and only its verifier redeems it."""
    person = people()["patient-1"]
    verifier = "v" * 64
    base = {
        "client_id": "avis-web",
        "response_type": "code",
        "scope": "openid",
        "audience": "avis",
        "redirect_uri": f"{web.url}/signin/callback",
        "state": "state-of-this-test",
    }
    forms = {
        "plain": base | {"code_challenge": verifier, "code_challenge_method": "plain"},
        "no challenge": base,
        "S256": base
        | {"code_challenge": rules.pkce_challenge(verifier), "code_challenge_method": "S256"},
    }
    async with Browser() as browser:
        await browser.password(await browser.begin(), person["email"], person["password"])
        pages = {
            name: await browser.http.get(f"{oidc.ISSUER}oauth2/auth", params=query)
            for name, query in forms.items()
        }
        answers = {name: callback_query(page) for name, page in pages.items()}
        # A code web did not ask for (its state is not the session's) is not taken.
        assert pages["S256"].url.path == "/signin", pages["S256"].url
        assert shows(pages["S256"], "That sign-in was not accepted"), pages["S256"].text[-1500:]
        print({k: (v.get("error"), v.get("error_description")) for k, v in answers.items()})
        for refused in ("plain", "no challenge"):
            assert answers[refused].get("error") == ["invalid_request"], answers[refused]
            assert "code" not in answers[refused], answers[refused]
        code = answers["S256"]["code"][0]
        exchange = base | {"grant_type": "authorization_code", "code": code}
        wrong = await browser.http.post(
            f"{oidc.ISSUER}oauth2/token", data=exchange | {"code_verifier": "w" * 64}
        )
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant", wrong.text


async def test_the_role_comes_from_the_admin_metadata_not_the_traits(web: OidcWeb) -> None:
    person = await new_person({"subject": "patient-meta", "role": "patient"})
    try:
        # The person edits their own profile; a role among their traits is refused outright.
        edited = await edit_own_traits(person, {"email": person["email"], "name": "coordinator"})
        assert edited.status_code == 200, edited.text
        sneaked = await edit_own_traits(
            person, {"email": person["email"], "name": "x", "role": "coordinator"}
        )
        assert sneaked.status_code == 400, sneaked.text
        assert await signed_in_claims(web, person) == ("patient-meta", "patient", None)
        # Only the admin API changes the role: the next sign-in carries it.
        await set_metadata_admin(
            person, {"subject": "patient-meta", "role": "partner", "partner_id": "insurer-42"}
        )
        assert await signed_in_claims(web, person) == ("patient-meta", "partner", "insurer-42")
    finally:
        await forget(person)


async def signed_in_claims(web: OidcWeb, person: dict[str, str]) -> tuple[str, str, str | None]:
    async with Browser() as browser:
        await browser.password(await browser.begin(), person["email"], person["password"])
        token = web.token(browser)
        assert token is not None
        got = claims(token)
        return got["sub"], got["role"], got.get("partner_id")


async def test_web_sends_no_password_through_itself(web: OidcWeb) -> None:
    """The form web renders posts to the identity server itself, under a policy that lets it;
    every page's forms may lead to the provider (the sign-in button, the sign-out form)."""
    allowed = f"form-action 'self' {KRATOS} {oidc.ISSUER.rstrip('/')}"
    async with Browser() as browser:
        first = await browser.http.get(f"{web.url}/signin")
        assert allowed in first.headers["content-security-policy"]
        page = await browser.begin()
        assert f'action="{KRATOS}/self-service/login?flow=' in page.text
        assert allowed in page.headers["content-security-policy"]


async def test_a_role_change_goes_through_the_admin_api_and_is_audited(web: OidcWeb) -> None:
    subject = f"role-{uuid.uuid4().hex[:8]}"
    person = await new_person({"subject": subject, "role": "patient"})
    settings = WebSettings(
        identity_admin_url=KRATOS_ADMIN,
        mongo_url=MONGO_URL,
        mongo_database=f"test_roles_{uuid.uuid4().hex[:8]}",
        sealing_keys=SEALING_KEYS,
    )
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(MONGO_URL)
    trail = AuditTrail(mongo[settings.database])
    try:
        assert await signed_in_claims(web, person) == (subject, "patient", None)
        done = await change_role(
            settings,
            email=person["email"],
            role="partner",
            partner_id="insurer-42",
            by="coordinator-1",
            reason="moved to the insurer's team",
        )
        assert (done.subject, done.before, done.after, done.seq) == (
            subject,
            "patient",
            "partner",
            1,
        )
        with pytest.raises(ValueError, match="not a person's role"):
            await change_role(
                settings, email=person["email"], role="service", partner_id=None, by="x", reason="y"
            )
        entries, _ = await trail.page(rules.role_trail(subject), after=0, limit=10)
        assert [(e.actor, e.action, e.target) for e in entries] == [
            ("coordinator-1", rules.ROLE_CHANGE, "patient->partner")
        ]
        assert entries[0].reason is not None
        keyring = Keyring.parse(SEALING_KEYS)
        opened = keyring.open(entries[0].reason, trail_aad(rules.role_trail(subject)))
        assert opened == b"moved to the insurer's team"
        assert await trail.verify(rules.role_trail(subject)) is None
        # The next sign-in carries the new role.
        assert await signed_in_claims(web, person) == (subject, "partner", "insurer-42")
    finally:
        await forget(person)
        await mongo.drop_database(settings.database)
        await mongo.close()


async def test_a_forgotten_password_is_recovered_in_the_identity_server(web: OidcWeb) -> None:
    person = await new_person({"subject": f"patient-{uuid.uuid4().hex[:8]}", "role": "patient"})
    new_password = secrets.token_urlsafe(18)
    try:
        async with Browser() as browser:
            login = await browser.begin()
            assert 'href="/signin/recovery"' in login.text, login.text[-1500:]
            asked = await browser.http.get(str(login.url.join("/signin/recovery")))
            assert asked.url.path == "/signin/recovery" and 'name="email"' in asked.text, asked.url
            sent = await browser.submit(asked, {"email": person["email"]}, "code")
            assert sent.url.path == "/signin/recovery" and 'name="code"' in sent.text, sent.url
            assert shows(sent, "an email with a code is on its way"), sent.text[-1500:]
            code = await emailed_code(person["email"])
            wrong = await browser.submit(sent, {"code": "000000" if code != "000000" else "1"})
            assert shows(wrong, "That code is not valid"), wrong.text[-1500:]
            settings = await browser.submit(wrong, {"code": code})
            assert settings.url.path == "/signin/settings", (settings.url, settings.text[-1500:])
            assert 'name="password"' in settings.text and 'name="totp_code"' not in settings.text
            saved = await browser.submit(settings, {"password": new_password}, "password")
            assert shows(saved, "Your new password is saved"), (saved.url, saved.text[-1500:])
            assert web.token(browser) is None  # recovery is no sign-in to web
        async with Browser() as browser:
            page = await browser.password(await browser.begin(), person["email"], new_password)
            token = web.token(browser)
            assert token is not None, (page.url, page.text[-1500:])
            assert claims(token)["role"] == "patient"
        async with Browser() as browser:
            page = await browser.password(
                await browser.begin(), person["email"], person["password"]
            )
            assert shows(page, "That email address and password do not match"), page.url
            assert web.token(browser) is None
    finally:
        await forget(person)
