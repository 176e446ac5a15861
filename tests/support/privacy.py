"""The clear-text scan of the privacy tests: the haystacks (what a service published, logged,
traced and stored) and the search of a patient's details in them, in raw UTF-8, JSON escapes
and other spellings."""

import base64
import contextlib
import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient

from tests.support.basics import KAFKA, MONGO_URL


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


def base64_forms(data: bytes) -> set[bytes]:
    """How `data` shows inside base64 text (a store's JSON encoding of binary), whatever its
    offset: the inner part of its encoding at each of the three alignments."""
    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data)
        # The first 4 characters carry the padding's bits, the last 4 the next bytes' too.
        forms.add(encoded[4:-4])
    return {f for f in forms if len(f) >= 16}


def files_under(*roots: Path) -> Iterator[Path]:
    """Every file under `roots` (a root that does not exist holds none)."""
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in sorted(root.rglob("*")) if p.is_file())


def scan_files(
    roots: Iterable[Path], secrets: Mapping[str, str], binaries: Mapping[str, bytes] | None = None
) -> dict[str, list[str]]:
    """Which of `secrets` (in any spelling) and `binaries` (raw or base64) the files under
    `roots` hold: what -> the files it was found in."""
    needles = {what: spellings(text) for what, text in secrets.items()}
    needles |= {what: {data} | base64_forms(data) for what, data in (binaries or {}).items()}
    hits: dict[str, list[str]] = {}
    for path in files_under(*roots):
        try:
            data = path.read_bytes()
        except OSError:  # gone meanwhile (a segment rolled, a lock file)
            continue
        for what, forms in needles.items():
            if any(form in data for form in forms):
                hits.setdefault(what, []).append(str(path))
    return hits


CONTROL_TOPIC = "privacy-scan-control"


async def write_in_clear(text: str, data: bytes, logs: Path) -> None:
    """The positive control of the scan: `text` and `data` written in clear on purpose to the
    broker (a topic of its own), the store (a database of its own) and a log file of `logs`."""
    admin = AIOKafkaAdminClient(**KAFKA.options())
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(CONTROL_TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**KAFKA.options(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(CONTROL_TOPIC, text.encode() + b"\n" + data)
    finally:
        await producer.stop()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URL)
    try:
        await client["privacy_scan_control"]["values"].insert_one({"text": text, "data": data})
    finally:
        await client.close()
    (logs / "control.log").write_text(json.dumps({"event": "control", "value": text}) + "\n")
