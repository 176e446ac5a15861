"""Which key ids still seal something: `avis-keys in-use`.

A key of a service's keyring (`AVIS_SEALING_KEYS`) may be retired once nothing sealed under it
is still read: this command reads every document of the named databases and counts the sealed
values under each key id, the cases' keys (`case.<reference>`) as one line with the number of
distinct cases. It counts apart the keyed digests made with a key derived from a keyring key
(`{"kid", "digest"|"mac"}`, or `<kid>:<64 hex>` in a `digest` or `fingerprint` field): they
cannot be sealed again (their input is not kept), and once their key is gone they no longer
match (docs/operations.md says what each one's loss means; an unclaimed claim's is a claim that
no longer works). It reads whole
collections, so it is an operator's command, never a service's path. What the topics hold is
not counted: it is gone after their retention (28 days, 13 weeks for dead letters,
avis.shared.topics), so a key is retired that long after its count is 0.

    avis-keys in-use --database intake --database review ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from pymongo import AsyncMongoClient

from avis.shared.case_keys import CASE_KID_PREFIX
from avis.shared.sealing import ALG, KID_PATTERN

CASE_KEYS = f"{CASE_KID_PREFIX}*"
# A keyed digest written as a string: the key id, a colon, HMAC-SHA256 in hex, in one of these
# fields (a record's id is its case's id, a colon and a digest too, but keeps no key id).
_KEYED = re.compile(KID_PATTERN.removesuffix("$") + ":[0-9a-f]{64}$")
KEYED_FIELDS = frozenset({"digest", "fingerprint"})


class Usage(NamedTuple):
    """One database's use of keys: sealed values per key id, the distinct case keys among
    them, and keyed digests per key id."""

    sealed: Counter[str]
    cases: int
    digests: Counter[str]


def sealed_kids(value: Any) -> Iterator[str]:
    """The key id of every sealed value inside a stored document."""
    if isinstance(value, dict):
        if value.get("alg") == ALG and isinstance(value.get("kid"), str) and "ct" in value:
            yield value["kid"]
            return
        for inner in value.values():
            yield from sealed_kids(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from sealed_kids(inner)


def keyed_kids(value: Any) -> Iterator[str]:
    """The key id of every keyed digest inside a stored document (a claim already used needs
    its key no more, and is not counted)."""
    if isinstance(value, dict):
        kid = value.get("kid")
        keyed = "digest" in value or "mac" in value
        if isinstance(kid, str) and keyed and value.get("alg") != ALG:
            if not value.get("claimed_at"):
                yield kid
            return
        for field, inner in value.items():
            if field in KEYED_FIELDS and isinstance(inner, str) and _KEYED.match(inner):
                yield inner.rpartition(":")[0]
            else:
                yield from keyed_kids(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from keyed_kids(inner)


def count(documents: Sequence[Any]) -> tuple[Counter[str], set[str]]:
    """Sealed values per key id (the case keys under one name), and the case keys seen."""
    per_kid: Counter[str] = Counter()
    cases: set[str] = set()
    for doc in documents:
        for kid in sealed_kids(doc):
            if kid.startswith(CASE_KID_PREFIX):
                cases.add(kid)
                per_kid[CASE_KEYS] += 1
            else:
                per_kid[kid] += 1
    return per_kid, cases


async def in_use(mongo_url: str, databases: Sequence[str]) -> dict[str, Usage]:
    """Per database: sealed values per key id, how many distinct case keys seal them, and
    keyed digests per key id."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    found: dict[str, Usage] = {}
    try:
        for name in databases:
            db = client[name]
            per_kid: Counter[str] = Counter()
            digests: Counter[str] = Counter()
            cases: set[str] = set()
            for collection in await db.list_collection_names():
                docs = [doc async for doc in db[collection].find()]
                counted, seen = count(docs)
                per_kid += counted
                cases |= seen
                digests.update(kid for doc in docs for kid in keyed_kids(doc))
            found[name] = Usage(per_kid, len(cases), digests)
    finally:
        await client.close()
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Print the key ids that still seal something, per database."""
    parser = argparse.ArgumentParser(prog="avis-keys", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    usage = sub.add_parser("in-use", help="count the sealed values under each key id")
    usage.add_argument(
        "--mongo-url", default=os.environ.get("AVIS_MONGO_URL", "mongodb://127.0.0.1:27017")
    )
    usage.add_argument("--database", action="append", required=True, help="repeatable")
    args = parser.parse_args(argv)
    found = asyncio.run(in_use(args.mongo_url, args.database))
    for database, (per_kid, cases, digests) in found.items():
        if not per_kid:
            print(f"{database}: nothing sealed")
        for kid, n in sorted(per_kid.items()):
            of = f" (under {cases} case keys)" if kid == CASE_KEYS else ""
            print(f"{database}: {kid} {n}{of}")
        for kid, n in sorted(digests.items()):
            print(f"{database}: {kid} {n} keyed digests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
