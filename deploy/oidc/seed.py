"""The development partners' OAuth2 clients in the local OpenID provider (Hydra), one per partner,
and the development services' machines' (an operator's script, a monitoring job), both for the
client-credentials grant: made once per state folder (ids and secrets in files of mode 600 there,
partners.json and services.json beside it, never in the repository), and created in Hydra's
admin API at each start if missing. Beside them, web's own client for people's sign-in
(authorization code with PKCE), set at each start to return to the web pages' address (--web).

    seed.py --admin http://127.0.0.1:4445 --file STATE/oidc/partners.json [--web URL]
                                                        ensure the clients
    seed.py --file STATE/oidc/partners.json --mapping   print {client id: partner id} (web's
                                                        AVIS_WEB_PARTNER_CLIENTS)
    seed.py --file STATE/oidc/partners.json --services  print [client id, ...] of the services'
                                                        machines (AVIS_WEB_SERVICE_CLIENTS)

Standard library only: it runs before the project's environment is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

# The partners of the development data: the web pages' `partner-1` and the README's `insurer-42`.
PARTNERS = ("partner-1", "insurer-42")
# The services' machines of the development stack: role service (a case's status, never its
# clinical content); the client id is the name, the secret is made once.
SERVICES = ("avis-operations",)
AUDIENCE = "avis"  # the services' AVIS_JWT_AUDIENCE
# Web's client for people (AVIS_WEB_OIDC_CLIENT_ID): a public client, as the code can only be
# exchanged with the PKCE verifier web keeps in the person's session; no secret to keep.
WEB_CLIENT = "avis-web"


def clients(file: Path) -> dict[str, dict[str, str]]:
    """partner id -> {client_id, client_secret}, made once (mode 600) and then read."""
    return _made_once(file, {p: str(uuid.uuid4()) for p in PARTNERS})


def service_clients(file: Path) -> dict[str, dict[str, str]]:
    """service machine's name -> {client_id, client_secret}, made once (mode 600) in
    services.json beside the partners' file, and then read."""
    return _made_once(file.with_name("services.json"), {s: s for s in SERVICES})


def _made_once(file: Path, ids: dict[str, str]) -> dict[str, dict[str, str]]:
    if not file.exists():
        made = {
            name: {"client_id": client_id, "client_secret": secrets.token_urlsafe(32)}
            for name, client_id in ids.items()
        }
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{file}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(made, out, indent=2)
        os.replace(f"{file}.new", file)
    loaded: dict[str, dict[str, str]] = json.loads(file.read_text(encoding="utf-8"))
    return loaded


def _call(method: str, url: str, body: object | None = None) -> int:
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"[oidc] the admin URL must be http(s): {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (checked above)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return 404
        detail = exc.read().decode(errors="replace")[:500]
        raise SystemExit(f"[oidc] {method} {url}: {exc.code} {detail}") from None


def ensure(admin: str, partner: str, client: dict[str, str], *, service: bool = False) -> bool:
    """Create the partner's (or the service's) machine client unless Hydra has it; True if
    created."""
    url = f"{admin}/admin/clients/{client['client_id']}"
    if _call("GET", url) == 200:
        return False
    kind = "service" if service else "partner"
    _call(
        "POST",
        f"{admin}/admin/clients",
        {
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "client_name": f"{partner} (development {kind}'s machine)",
            "grant_types": ["client_credentials"],
            "response_types": ["token"],
            "token_endpoint_auth_method": "client_secret_basic",
            "audience": [AUDIENCE],
            "scope": "",
            "access_token_strategy": "jwt",
            "metadata": {"service": partner} if service else {"partner_id": partner},
        },
    )
    return True


def ensure_web(admin: str, web: str) -> None:
    """Create or update web's client for people's sign-in, returning to `web`."""
    body = {
        "client_id": WEB_CLIENT,
        "client_name": "Avis (the web pages)",
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "redirect_uris": [f"{web}/signin/callback"],
        "post_logout_redirect_uris": [f"{web}/signin"],
        "audience": [AUDIENCE],
        "scope": "openid",
        "access_token_strategy": "jwt",
    }
    url = f"{admin}/admin/clients/{WEB_CLIENT}"
    if _call("GET", url) == 200:
        _call("PUT", url, body)
    else:
        _call("POST", f"{admin}/admin/clients", body)


def main() -> int:
    """Ensure the clients, or print the mapping."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--admin", help="Hydra's admin URL")
    parser.add_argument("--mapping", action="store_true")
    parser.add_argument("--services", action="store_true")
    parser.add_argument("--web", help="the web pages' address, where people's sign-in returns")
    args = parser.parse_args()
    made, machines = clients(args.file), service_clients(args.file)
    if args.mapping:
        print(json.dumps({c["client_id"]: p for p, c in made.items()}, separators=(",", ":")))
        return 0
    if args.services:
        print(json.dumps([c["client_id"] for c in machines.values()], separators=(",", ":")))
        return 0
    if not args.admin:
        parser.error("--admin is required to seed")
    admin = args.admin.rstrip("/")
    created = [p for p, c in made.items() if ensure(admin, p, c)]
    created += [s for s, c in machines.items() if ensure(admin, s, c, service=True)]
    if args.web:
        ensure_web(args.admin.rstrip("/"), args.web.rstrip("/"))
    if created:
        print(f"[oidc] clients created for {', '.join(created)} ({args.file})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
