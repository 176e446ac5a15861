"""Web's pure decisions of people's sign-in: the role from the identity's admin metadata alone,
the second factor professionals need, the identity server's cookies passed on (never web's),
the PKCE challenge, and the identity server's form shown in our words."""

import base64
import hashlib

import pytest

from avis.web import rules


def test_the_role_and_subject_come_from_the_admin_metadata() -> None:
    person = rules.person_claims("id-1", {"subject": "rev-cardio-1", "role": "reviewer"})
    assert person == rules.PersonClaims("rev-cardio-1", "reviewer", None)
    assert person.token_claims() == {"role": "reviewer"}
    partner = rules.person_claims("id-2", {"role": "partner", "partner_id": "p-1"})
    assert partner.subject == "id-2"
    assert partner.token_claims() == {"role": "partner", "partner_id": "p-1"}


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {"role": "service"}, {"role": "admin"}, {"role": "partner"}, "patient"],
)
def test_an_identity_without_a_persons_role_is_no_person(metadata: object) -> None:
    with pytest.raises(rules.NotAPerson):
        rules.person_claims("id-1", metadata)


def test_professionals_need_the_second_factor() -> None:
    assert rules.second_factor_missing("reviewer", "aal1")
    assert rules.second_factor_missing("coordinator", None)
    assert not rules.second_factor_missing("coordinator", "aal2")
    assert not rules.second_factor_missing("patient", "aal1")
    assert not rules.second_factor_missing("partner", "aal1")


def test_only_the_identity_servers_cookies_are_passed_on() -> None:
    header = "avis_session=abc.def; ory_kratos_session=s1; csrf_token_806=c1; other=x"
    assert rules.identity_cookies(header) == "ory_kratos_session=s1; csrf_token_806=c1"
    assert rules.identity_cookies(None) == ""


def test_the_pkce_challenge_is_s256() -> None:
    # base64url(SHA-256(verifier)) without padding (RFC 7636 4.2); the provider checks it
    # against the verifier at the exchange (the integration test signs in with it).
    verifier = "a" * 43
    digest = hashlib.sha256(verifier.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert rules.pkce_challenge(verifier) == expected
    assert len(expected) == 43 and verifier not in expected


def test_the_form_lets_forms_post_to_the_sign_in_servers_only() -> None:
    policy = rules.signin_csp("default-src 'none'; form-action 'self'", "http://127.0.0.1:4433")
    assert policy == "default-src 'none'; form-action 'self' http://127.0.0.1:4433"


FLOW = {
    "requested_aal": "aal1",
    "ui": {
        "action": "http://127.0.0.1:4433/self-service/login?flow=f1",
        "method": "POST",
        "messages": [{"id": 4000006, "type": "error", "text": "The provided credentials..."}],
        "nodes": [
            {
                "type": "input",
                "group": "default",
                "attributes": {"name": "csrf_token", "type": "hidden", "value": "c"},
            },
            {
                "type": "input",
                "group": "default",
                "attributes": {
                    "name": "identifier",
                    "type": "text",
                    "value": "a@b.c",
                    "required": True,
                },
            },
            {
                "type": "input",
                "group": "password",
                "attributes": {"name": "password", "type": "password", "required": True},
            },
            {
                "type": "input",
                "group": "password",
                "attributes": {"name": "method", "type": "submit", "value": "password"},
            },
            {
                "type": "input",
                "group": "oidc",
                "attributes": {"name": "provider", "type": "submit", "value": "x"},
            },
            {"type": "a", "group": "default", "attributes": {"href": "/elsewhere"}},
        ],
    },
}


def test_the_identity_servers_form_is_shown_in_our_words() -> None:
    form = rules.identity_form(FLOW)
    assert form.action.endswith("flow=f1")
    assert [(f.name, f.type, f.label) for f in form.fields] == [
        ("csrf_token", "hidden", None),
        ("identifier", "text", "signin.email"),
        ("password", "password", "signin.password"),
        ("method", "submit", "signin.submit"),
    ]
    assert form.messages == ("signin.wrong_password",)
    assert not form.second_factor
    unknown = FLOW | {"ui": FLOW["ui"] | {"messages": [{"id": 4999999, "type": "error"}]}}
    assert rules.identity_form(unknown).messages == ("signin.refused",)

    assert form.recovery  # the login form offers "Forgot your password?"
    assert not rules.identity_form(FLOW | {"requested_aal": "aal2"}).recovery


def node(group: str, name: str, kind: str, value: str | None = None) -> dict[str, object]:
    attributes = {"name": name, "type": kind} | ({"value": value} if value is not None else {})
    return {"type": "input", "group": group, "attributes": attributes}


def test_the_recovery_form_shows_the_code_and_not_its_resend_button() -> None:
    flow = {
        "state": "sent_email",
        "ui": {
            "action": "http://127.0.0.1:4433/self-service/recovery?flow=r1",
            "method": "POST",
            "messages": [{"id": 1060003, "type": "info"}],
            "nodes": [
                node("default", "csrf_token", "hidden", "c"),
                node("code", "code", "text"),
                node("code", "method", "submit", "code"),
                node("code", "email", "submit", "a@b.c"),  # resend: not shown
                node("password", "password", "password"),  # another group: not shown
            ],
        },
    }
    form = rules.identity_form(flow, rules.RECOVERY)
    assert [(f.name, f.type, f.label) for f in form.fields] == [
        ("csrf_token", "hidden", None),
        ("code", "text", "signin.recovery_code"),
        ("method", "submit", "signin.recovery_submit"),
    ]
    assert (form.messages, form.title, form.recovery) == (
        ("signin.recovery_sent",),
        "signin.recovery_title",
        False,
    )


def test_the_settings_form_shows_the_new_password_alone() -> None:
    flow = {
        "ui": {
            "action": "http://127.0.0.1:4433/self-service/settings?flow=s1",
            "method": "POST",
            "messages": [{"id": 1060001, "type": "success"}],
            "nodes": [
                node("default", "csrf_token", "hidden", "c"),
                node("profile", "traits.email", "email", "a@b.c"),
                node("profile", "method", "submit", "profile"),
                node("password", "password", "password"),
                node("password", "method", "submit", "password"),
                node("totp", "totp_code", "text"),
                node("totp", "method", "submit", "totp"),
            ],
        },
    }
    form = rules.identity_form(flow, rules.SETTINGS)
    assert [(f.name, f.type, f.label) for f in form.fields] == [
        ("csrf_token", "hidden", None),
        ("password", "password", "signin.new_password"),
        ("method", "submit", "signin.save_password"),
    ]
    assert (form.messages, form.title) == (("signin.recovered",), "signin.settings_title")


def test_a_role_change_keeps_the_subject_and_checks_the_role() -> None:
    before = {"subject": "rev-cardio-1", "role": "reviewer"}
    assert rules.role_changed(before, "coordinator", None) == {
        "subject": "rev-cardio-1",
        "role": "coordinator",
    }
    partner = rules.role_changed(before, "partner", "insurer-42")
    assert partner == {"subject": "rev-cardio-1", "role": "partner", "partner_id": "insurer-42"}
    assert rules.role_changed(partner, "patient", None) == {
        "subject": "rev-cardio-1",
        "role": "patient",
    }
    for role, partner_id in (("service", None), ("partner", None), ("patient", "p-1")):
        with pytest.raises(ValueError, match=r"role|partner id"):
            rules.role_changed(before, role, partner_id)
    assert rules.role_trail("rev-cardio-1") == "identity:rev-cardio-1"
