"""The clear-text scan of the privacy tests: the haystacks (what a service published, logged,
traced and stored) and the search of a patient's details in them, in raw UTF-8, JSON escapes
and other spellings."""

import json
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import ConsumerRecord
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient


def spellings(text: str) -> set[bytes]:
    """Ways `text` could appear in bytes: UTF-8 (composed or not), JSON escapes, case, ASCII."""
    forms = {text, text.lower(), text.upper(), text.casefold()}
    forms |= {unicodedata.normalize(n, f) for f in list(forms) for n in ("NFC", "NFD")}
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    forms |= {folded, folded.lower()}
    escaped = {json.dumps(f)[1:-1] for f in forms}  # \u00e9 ...
    escaped |= {
        "".join(f"\\u{ord(c):04X}" if ord(c) > 127 else c for c in f) for f in forms
    }  # \u00E9 ...
    return {f.encode("utf-8") for f in forms | escaped if len(f) >= 4}


def found(haystack: bytes, secrets: Mapping[str, str]) -> dict[str, list[bytes]]:
    """Which of `secrets` (what -> text) `haystack` holds, in which spellings; empty if none."""
    hits = {what: [f for f in spellings(text) if f in haystack] for what, text in secrets.items()}
    return {what: forms for what, forms in hits.items() if forms}


def assert_absent(secrets: Mapping[str, str], haystacks: Mapping[str, bytes]) -> None:
    """None of `secrets` is in any of `haystacks` (where -> bytes), in any spelling."""
    for where, haystack in haystacks.items():
        for what, forms in found(haystack, secrets).items():
            raise AssertionError(f"the patient's {what} is in the {where}: {forms[:3]}")


def record_bytes(records: Iterable[ConsumerRecord[bytes, bytes]]) -> bytes:
    """The haystack of published records: their values and headers."""
    return b"\n".join(
        (r.value or b"") + b"".join(k.encode() + b"=" + v for k, v in r.headers) for r in records
    )


def span_bytes(spans: Iterable[Any]) -> bytes:
    """The haystack of finished spans: their names, attributes and events' attributes."""
    return json.dumps(
        [
            {
                "name": s.name,
                "attributes": dict(s.attributes or {}),
                "events": [dict(e.attributes or {}) for e in s.events],
            }
            for s in spans
        ],
        default=str,
    ).encode()


async def stored_bytes(mongo_url: str, database: str) -> bytes:
    """The haystack of a service's store: every document of every collection of `database`,
    as the store holds it (raw BSON)."""
    client: AsyncMongoClient[RawBSONDocument] = AsyncMongoClient(
        mongo_url, document_class=RawBSONDocument
    )
    try:
        db = client[database]
        names = await db.list_collection_names()
        return b"".join([doc.raw for name in names async for doc in db[name].find()])
    finally:
        await client.close()


async def stored_documents(mongo_url: str, database: str) -> dict[str, list[dict[str, Any]]]:
    """A copy of a service's store: every document of every collection of `database`, by
    collection."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        db = client[database]
        names = await db.list_collection_names()
        return {name: [doc async for doc in db[name].find()] for name in names}
    finally:
        await client.close()
