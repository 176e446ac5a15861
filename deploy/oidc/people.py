"""The development people in the local identity server (Ory Kratos), one per role: made once per
state folder (their emails, passwords and, for professionals, second-factor secrets in a file of
mode 600 there, never in the repository), and created in Kratos's admin API at each start if
missing.

Each person's role, partner and subject are in the identity's `metadata_admin`, which only the
admin API writes: a person editing their own traits cannot change them. The subjects are the
web pages' development identities (`patient-1`, `rev-cardio-1`, ...), so the tokens of either
sign-in name the same people. Professionals (reviewer, coordinator) are enrolled in TOTP through
Kratos's own settings flow, as a person would be, and their secret is kept beside their password
so that the tests can compute codes.

    people.py --public URL --admin URL --file STATE/kratos/people.json

Standard library only: it runs before the project's environment is needed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

# subject -> (role, partner id): the development identities of web's pages, one per role.
PEOPLE: dict[str, tuple[str, str | None]] = {
    "patient-1": ("patient", None),
    "patient-2": ("patient", None),
    "rev-cardio-1": ("reviewer", None),
    "rev-cardio-2": ("reviewer", None),
    "coordinator-1": ("coordinator", None),
    "translator-1": ("translator", None),
    "partner-1": ("partner", "partner-1"),
}
PROFESSIONALS = frozenset({"reviewer", "coordinator", "translator"})


def totp(secret: str, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    """The RFC 6238 code of a base32 secret (SHA-1, 30 s, 6 digits, as Kratos's TOTP)."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def people(file: Path) -> dict[str, dict[str, Any]]:
    """subject -> {email, password, role, partner_id, totp_secret}, made once (mode 600)."""
    if file.exists():
        loaded: dict[str, dict[str, Any]] = json.loads(file.read_text(encoding="utf-8"))
        return loaded
    made = {
        sub: {
            "email": f"{sub}@avis.local",
            "password": secrets.token_urlsafe(18),
            "role": role,
            "partner_id": partner,
            "totp_secret": None,
        }
        for sub, (role, partner) in PEOPLE.items()
    }
    save(file, made)
    return made


def save(file: Path, made: dict[str, dict[str, Any]]) -> None:
    """Write the file for its owner alone."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{file}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(made, out, indent=2)
    os.replace(f"{file}.new", file)


def call(
    method: str, url: str, body: object | None = None, token: str | None = None
) -> tuple[int, Any]:
    """A JSON call; (status, body). Only http(s) URLs."""
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"[kratos] the URL must be http(s): {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (checked above)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("X-Session-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            raw = answer.read()
            return int(answer.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def found(admin: str, email: str) -> dict[str, Any] | None:
    """The identity whose password identifier is `email`, if Kratos has one."""
    query = urllib.parse.urlencode({"credentials_identifier": email})
    status, body = call("GET", f"{admin}/admin/identities?{query}")
    if status != 200:
        raise SystemExit(f"[kratos] listing identities: {status} {body}")
    return body[0] if body else None


def create(admin: str, sub: str, person: dict[str, Any]) -> str:
    """Create the identity with its password and admin metadata; its id."""
    metadata = {"subject": sub, "role": person["role"]}
    if person["partner_id"]:
        metadata["partner_id"] = person["partner_id"]
    status, body = call(
        "POST",
        f"{admin}/admin/identities",
        {
            "schema_id": "person",
            "state": "active",
            "traits": {"email": person["email"], "name": sub},
            "metadata_admin": metadata,
            "credentials": {"password": {"config": {"password": person["password"]}}},
        },
    )
    if status != 201:
        raise SystemExit(f"[kratos] creating {sub}: {status} {body}")
    identity_id: str = body["id"]
    return identity_id


def enrol_totp(public: str, person: dict[str, Any]) -> str:
    """Sign in by password (a native flow) and add TOTP through the settings flow; the secret."""
    status, flow = call("GET", f"{public}/self-service/login/api")
    if status != 200:
        raise SystemExit(f"[kratos] login flow: {status} {flow}")
    status, done = call(
        "POST",
        f"{public}/self-service/login?flow={flow['id']}",
        {"method": "password", "identifier": person["email"], "password": person["password"]},
    )
    if status != 200:
        raise SystemExit(f"[kratos] password sign-in of {person['email']}: {status} {done}")
    token = done["session_token"]
    try:
        status, flow = call("GET", f"{public}/self-service/settings/api", token=token)
        if status != 200:
            raise SystemExit(f"[kratos] settings flow: {status} {flow}")
        nodes = flow["ui"]["nodes"]
        secret = next(
            n["attributes"]["text"]["text"]
            for n in nodes
            if n["attributes"].get("id") == "totp_secret_key"
        )
        status, body = call(
            "POST",
            f"{public}/self-service/settings?flow={flow['id']}",
            {"method": "totp", "totp_code": totp(secret)},
            token=token,
        )
        if status != 200:
            raise SystemExit(f"[kratos] TOTP enrolment of {person['email']}: {status} {body}")
        return str(secret)
    finally:
        call("DELETE", f"{public}/self-service/logout/api", {"session_token": token})


def main() -> int:
    """Ensure the people."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--public", required=True, help="Kratos's public URL")
    parser.add_argument("--admin", required=True, help="Kratos's admin URL")
    args = parser.parse_args()
    public, admin = args.public.rstrip("/"), args.admin.rstrip("/")
    made = people(args.file)
    created = []
    for sub, person in made.items():
        identity = found(admin, person["email"])
        if identity is None:
            person["identity_id"] = create(admin, sub, person)
            person["totp_secret"] = None
            created.append(sub)
        else:
            person["identity_id"] = identity["id"]
        if person["role"] in PROFESSIONALS and not person["totp_secret"]:
            person["totp_secret"] = enrol_totp(public, person)
        save(args.file, made)
    if created:
        print(f"[kratos] people created: {', '.join(created)} ({args.file})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
