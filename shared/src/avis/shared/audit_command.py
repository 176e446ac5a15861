"""`avis-audit`: check the services' access trails, against their anchors on Kafka, and prune
them to their retention (avis.shared.audit, avis.shared.anchors)."""

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from avis.shared.anchors import read_anchors
from avis.shared.audit import AuditTrail, prune_all, verify_all
from avis.shared.kafka_access import KafkaAccess
from avis.shared.mongo import connect
from avis.shared.sealing import Keyring


async def _main(args: argparse.Namespace, keyring: Keyring | None) -> int:
    url = os.environ.get("AVIS_MONGO_URL", "mongodb://127.0.0.1:27017")
    database = args.database or os.environ.get("AVIS_MONGO_DATABASE") or f"avis_{args.service}"
    bootstrap = os.environ.get("AVIS_KAFKA_BOOTSTRAP", "")
    client = connect(url)
    try:
        trail = AuditTrail(client[database])
        if args.command == "prune":
            assert keyring is not None
            before = datetime.now(UTC) - timedelta(days=args.days)
            print(f"{await prune_all(trail, before, keyring)} entries older than {before:%Y-%m-%d}")
            return 0
        anchors = None
        if not args.no_anchors:
            anchors = await read_anchors(KafkaAccess.admin(bootstrap), args.service)
            print(f"{len(anchors)} case(s) anchored on {bootstrap}")
        breaks = await verify_all(trail, args.case, keyring, anchors)
    finally:
        await client.close()
    for found in breaks:
        print(found)
    print(f"{len(breaks)} broken chain(s)" if breaks else "every chain holds")
    return 1 if breaks else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`avis-audit verify --service intake [--case ID ...]`: check the trails' hash chains and
    their anchors; `avis-audit prune --service intake [--days 365]`: remove what is older,
    leaving signed checkpoints. Both read the store of `AVIS_MONGO_URL` and the keys of
    `AVIS_SEALING_KEYS`; verify reads the anchors on `AVIS_KAFKA_BOOTSTRAP` as the broker's
    administrator (`AVIS_KAFKA_ADMIN_USERNAME`, `AVIS_KAFKA_ADMIN_PASSWORD`)."""
    parser = argparse.ArgumentParser(prog="avis-audit", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="name the first break of each case's chain")
    verify.add_argument("--case", action="append", default=[], help="only this case (repeat)")
    verify.add_argument(
        "--no-anchors",
        action="store_true",
        help="the chains alone (a trail rewritten whole, or removed, is not found)",
    )
    prune = commands.add_parser("prune", help="remove entries older than the retention")
    prune.add_argument("--days", type=int, default=365, help="kept this many days (365)")
    for command in (verify, prune):
        command.add_argument("--service", required=True, help="whose store: intake, review, ...")
        command.add_argument("--database", default="", help="the database (avis_<service>)")
    args = parser.parse_args(argv)
    keys = os.environ.get("AVIS_SEALING_KEYS", "")
    keyring = Keyring.parse(keys) if keys else None
    if keyring is None and args.command == "prune":
        parser.error("prune signs its checkpoints: set AVIS_SEALING_KEYS")
    anchored = args.command == "verify" and not args.no_anchors
    if anchored and not os.environ.get("AVIS_KAFKA_BOOTSTRAP"):
        parser.error("verify reads the anchors on Kafka: set AVIS_KAFKA_BOOTSTRAP, or --no-anchors")
    return asyncio.run(_main(args, keyring))


if __name__ == "__main__":
    sys.exit(main())
