"""A service's database copied to a folder and back: `avis-backup dump` and `avis-backup restore`.

The folder is laid out as mongodump lays it out, so MongoDB's own tools read it too: for each
collection `<name>.bson` (its documents, BSON one after another, byte for byte as the store
gave them) and `<name>.metadata.json` (its indexes, in extended JSON), plus `manifest.json`
(the database, when the copy was taken, how many documents each collection held). PyMongo's
`bson` writes and reads them: the project installs no mongodump (Debian ships none, and the Go
module proxy serves none of MongoDB's tools).

Keys are never in a copy: every case's values are sealed under its key in the key service
(avis.shared.case_keys), so a copy opens only while that key exists. A restore is followed by
the service's own reconciliation with the key service (for intake, `avis-intake-reconcile`):
docs/operations.md, "Backup and restore".

    avis-backup dump --database intake --out /backups/intake-20261203
    avis-backup restore --database intake --from /backups/intake-20261203 --drop

The whole database is read, a collection at a time: an operator's command, never a service's
path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

MANIFEST = "manifest.json"
RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
BATCH = 1000
# What an index's description holds besides its options.
NOT_OPTIONS = {"v", "key", "ns"}


async def dump(mongo_url: str, database: str, folder: Path) -> dict[str, int]:
    """Copy every collection of `database` into `folder` (made, mode 700); documents per
    collection."""
    await asyncio.to_thread(folder.mkdir, parents=True, mode=0o700, exist_ok=False)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    counts: dict[str, int] = {}
    taken_at = datetime.now(UTC)
    try:
        # Documents as the store's bytes, written out untouched.
        db = cast(
            "AsyncDatabase[RawBSONDocument]", client.get_database(database, codec_options=RAW)
        )
        for name in sorted(await db.list_collection_names()):
            n = 0
            # Files are written and read as the documents come: a thread would not buy anything
            # for a command that does nothing else meanwhile.
            with await asyncio.to_thread(open, folder / f"{name}.bson", "wb") as out:
                async for doc in db[name].find():
                    out.write(doc.raw)
                    n += 1
            indexes = [index async for index in await client[database][name].list_indexes()]
            metadata = {"collectionName": name, "indexes": indexes}
            (folder / f"{name}.metadata.json").write_text(json_util.dumps(metadata))
            counts[name] = n
    finally:
        await client.close()
    manifest = {"database": database, "taken_at": taken_at.isoformat(), "collections": counts}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return counts


async def restore(mongo_url: str, database: str, folder: Path, *, drop: bool) -> dict[str, int]:
    """Write the copy in `folder` into `database`: its indexes first, then its documents. With
    `drop` the database is dropped first; without it, a database that holds anything is refused
    (a restore never merges into live data)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    client: AsyncMongoClient[RawBSONDocument] = AsyncMongoClient(
        mongo_url, document_class=RawBSONDocument
    )
    counts: dict[str, int] = {}
    try:
        if drop:
            await client.drop_database(database)
        db: AsyncDatabase[RawBSONDocument] = client.get_database(database, codec_options=RAW)
        if await db.list_collection_names():
            raise SystemExit(f"database {database} is not empty: restore with --drop")
        for name, expected in manifest["collections"].items():
            metadata = json_util.loads((folder / f"{name}.metadata.json").read_text())
            await db.create_collection(name)
            models = [
                IndexModel(
                    list(index["key"].items()),
                    **{k: v for k, v in index.items() if k not in NOT_OPTIONS},
                )
                for index in metadata["indexes"]
                if index["name"] != "_id_"
            ]
            if models:
                await db[name].create_indexes(models)
            n = 0
            batch: list[Any] = []
            with await asyncio.to_thread(open, folder / f"{name}.bson", "rb") as source:
                for doc in bson.decode_file_iter(source, RAW):
                    batch.append(doc)
                    if len(batch) == BATCH:
                        await db[name].insert_many(batch)
                        n, batch = n + len(batch), []
            if batch:
                await db[name].insert_many(batch)
                n += len(batch)
            if n != expected:
                raise SystemExit(f"{name}: {n} documents restored, the copy said {expected}")
            counts[name] = n
    finally:
        await client.close()
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Dump a database into a folder, or restore one from it."""
    parser = argparse.ArgumentParser(prog="avis-backup", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mongo-url", default=os.environ.get("AVIS_MONGO_URL", "mongodb://127.0.0.1:27017")
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dumping = sub.add_parser("dump", help="copy a database into a new folder")
    dumping.add_argument("--database", required=True)
    dumping.add_argument("--out", type=Path, required=True)
    restoring = sub.add_parser("restore", help="write a copy back into a database")
    restoring.add_argument("--database", required=True)
    restoring.add_argument("--from", dest="folder", type=Path, required=True)
    restoring.add_argument("--drop", action="store_true", help="drop the database first")
    args = parser.parse_args(argv)
    if args.command == "dump":
        counts = asyncio.run(dump(args.mongo_url, args.database, args.out))
    else:
        counts = asyncio.run(restore(args.mongo_url, args.database, args.folder, drop=args.drop))
    for name, n in counts.items():
        print(f"{args.database}.{name}: {n} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
