"""Store contract: large binary documents and GridFS (medical records are files)."""

from __future__ import annotations

import hashlib
import io
import random
from typing import Any

import pytest
from bson import Binary
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo.asynchronous.database import AsyncDatabase

pytestmark = pytest.mark.infra

Document = dict[str, Any]
MIB = 1024 * 1024


def _payload(size: int, seed: int) -> bytes:
    """Incompressible, reproducible bytes (every byte value occurs)."""
    return random.Random(seed).randbytes(size)


async def test_large_binary_round_trip(db: AsyncDatabase[Document]) -> None:
    content = _payload(4 * MIB, seed=1)
    digest = hashlib.sha256(content).hexdigest()
    await db["documents"].insert_one(
        {"_id": f"case-1:{digest}", "sha256": digest, "size": len(content), "data": Binary(content)}
    )

    doc = await db["documents"].find_one({"_id": f"case-1:{digest}"})
    assert doc is not None
    data = doc["data"]
    assert isinstance(data, bytes)  # pymongo decodes subtype 0 as bytes
    assert len(data) == doc["size"] == 4 * MIB
    assert hashlib.sha256(data).hexdigest() == doc["sha256"] == digest
    assert data == content

    # a projection that leaves the payload out is how lists stay cheap
    meta = await db["documents"].find_one({"_id": f"case-1:{digest}"}, {"data": 0})
    assert meta == {"_id": f"case-1:{digest}", "sha256": digest, "size": 4 * MIB}


async def test_binary_subtypes_round_trip(db: AsyncDatabase[Document]) -> None:
    sealed = Binary(b"\x00nonce-and-ciphertext\xff", subtype=0)
    user = Binary(b"\x01\x02", subtype=0x80)
    await db["t"].insert_one({"_id": 1, "sealed": sealed, "user": user, "empty": b""})
    doc = await db["t"].find_one({"_id": 1})
    assert doc is not None
    assert doc["sealed"] == bytes(sealed)
    assert doc["user"] == user
    assert doc["user"].subtype == 0x80
    assert doc["empty"] == b""


async def test_gridfs_upload_download_delete(db: AsyncDatabase[Document]) -> None:
    bucket = AsyncGridFSBucket(db, bucket_name="records")
    content = _payload(10 * MIB, seed=2)
    digest = hashlib.sha256(content).hexdigest()

    file_id = await bucket.upload_from_stream(
        "scan.dcm", io.BytesIO(content), metadata={"case_id": "case-1", "sha256": digest}
    )

    stream = await bucket.open_download_stream(file_id)
    assert stream.length == len(content)
    assert stream.metadata == {"case_id": "case-1", "sha256": digest}
    downloaded = await stream.read()
    assert hashlib.sha256(downloaded).hexdigest() == digest
    assert downloaded == content

    sink = io.BytesIO()
    await bucket.download_to_stream(file_id, sink)
    assert sink.getvalue() == content

    chunks = await db["records.chunks"].count_documents({"files_id": file_id})
    assert chunks == -(-len(content) // (255 * 1024))  # default chunk size 255 KiB

    await bucket.delete(file_id)
    with pytest.raises(NoFile):
        await bucket.open_download_stream(file_id)
    assert await db["records.files"].count_documents({}) == 0
    assert await db["records.chunks"].count_documents({}) == 0


async def test_gridfs_streamed_upload_in_pieces(db: AsyncDatabase[Document]) -> None:
    """An upload written piece by piece, as an HTTP body arrives, reads back whole."""
    bucket = AsyncGridFSBucket(db)
    pieces = [_payload(size, seed=i) for i, size in enumerate([1, 300_000, 65_536, 2 * MIB, 7])]
    upload = bucket.open_upload_stream("report.pdf", metadata={"case_id": "case-2"})
    for piece in pieces:
        await upload.write(piece)
    await upload.close()

    stream = await bucket.open_download_stream(upload._id)
    assert await stream.read() == b"".join(pieces)
    await bucket.delete(upload._id)
