"""Change a person's role, audited (thin: parse, call, say): the identity's `metadata_admin` is
changed through the identity server's admin API, the person's sessions there end (the next
sign-in carries the new role; an access token already issued keeps the old one until it
expires), and an entry is appended to the person's role trail (`identity:<subject>`, a
hash-chained trail like a case's, in web's database): who changed it, from what to what, and
the reason, sealed.

    python -m avis.web.roles --email rev-cardio-1@avis.local --role coordinator \\
        --by coordinator-1 --reason "joins the coordination team"

Settings: AVIS_WEB_IDENTITY_ADMIN_URL, AVIS_MONGO_URL, AVIS_SEALING_KEYS.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from avis.shared.access_log import trail_aad
from avis.shared.audit import AuditRecord, AuditTrail
from avis.shared.clock import now
from avis.shared.sealing import Keyring
from avis.web import rules
from avis.web.settings import Settings


@dataclass(frozen=True)
class RoleChange:
    """What was changed: the person, the roles before and after, the trail's new entry."""

    subject: str
    before: str | None
    after: str
    seq: int


async def change_role(
    settings: Settings,
    *,
    email: str,
    role: str,
    partner_id: str | None,
    by: str,
    reason: str,
) -> RoleChange:
    """Change the role of the identity whose login is `email`, end its sessions, and append the
    change to the person's role trail. ValueError for an unknown person or a role refused."""
    admin = settings.identity_admin_url.rstrip("/")
    async with httpx.AsyncClient(timeout=10) as http:
        found = await http.get(
            f"{admin}/admin/identities", params={"credentials_identifier": email}
        )
        found.raise_for_status()
        if not found.json():
            raise ValueError(f"no identity signs in as {email}")
        identity: dict[str, Any] = found.json()[0]
        before = identity.get("metadata_admin") or {}
        after = rules.role_changed(before, role, partner_id)
        subject = str(after.get("subject") or identity["id"])
        url = f"{admin}/admin/identities/{urllib.parse.quote(identity['id'])}"
        patch = [{"op": "add", "path": "/metadata_admin", "value": after}]
        (await http.patch(url, json=patch)).raise_for_status()
        await http.delete(f"{url}/sessions")  # none open is fine too
    trail_id = rules.role_trail(subject)
    keyring = Keyring.from_settings(settings)
    record = AuditRecord(
        actor=by,
        role="coordinator",
        action=rules.ROLE_CHANGE,
        target=f"{before.get('role')}->{role}",
        purpose="administration",
        reason=keyring.seal(reason.encode(), trail_aad(trail_id)),
    )
    client: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongo_url)
    try:
        entry = await AuditTrail(client[settings.database]).append(trail_id, record, now())
    finally:
        await client.close()
    assert entry is not None  # no fold: every change is an entry
    return RoleChange(subject, before.get("role"), role, entry.seq)


def main() -> int:
    """The command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--email", required=True, help="the person's login")
    parser.add_argument("--role", required=True, choices=sorted(rules.PERSON_ROLES))
    parser.add_argument("--partner-id", help="a partner's partner")
    parser.add_argument("--by", required=True, help="who changes it (their subject)")
    parser.add_argument("--reason", required=True, help="why (kept sealed in the trail)")
    args = parser.parse_args()
    try:
        done = asyncio.run(
            change_role(
                Settings(),
                email=args.email,
                role=args.role,
                partner_id=args.partner_id,
                by=args.by,
                reason=args.reason,
            )
        )
    except (ValueError, httpx.HTTPError) as exc:
        print(f"role not changed: {exc}", file=sys.stderr)
        return 1
    print(f"{done.subject}: {done.before} -> {done.after} (role trail entry {done.seq})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
