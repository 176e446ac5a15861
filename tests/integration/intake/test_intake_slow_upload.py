"""A slow upload at intake's door: a body that stalls, or drips on past the whole-body bound,
ends with a 408 problem and a closed connection, never a worker held forever; a body that keeps
coming in time is stored. Nothing of a timed-out upload is written."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.support.intake import Intake, intake_settings, running_intake
from tests.support.samples import case_body, pdf

pytestmark = pytest.mark.infra

IDLE, TOTAL = 1.0, 4.0


@pytest.fixture(scope="module")
async def intake() -> AsyncIterator[Intake]:
    settings = intake_settings(http_body_idle_seconds=IDLE, http_body_total_seconds=TOTAL)
    async with running_intake(settings) as service:
        yield service


def multipart(data: bytes) -> tuple[bytes, bytes]:
    """A multipart body holding one record, and its content type."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\ntest_result\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}".encode()


async def upload_headers(
    intake: Intake, case_id: str, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open a raw connection and send an upload's request line and headers, but no body yet;
    returns the connection and the body the headers announce."""
    body, content_type = multipart(pdf(uuid.uuid4().hex))
    host, port = intake.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /v1/cases/{case_id}/documents HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + b"Content-Type: "
        + content_type
        + b"\r\n\r\n"
    )
    return reader, writer, body


async def drip(intake: Intake, case_id: str, token: str, pause: float, parts: int) -> bytes:
    """Upload a record in `parts` pieces, `pause` seconds apart; returns the raw answer (or
    fails if none comes: the worker hangs)."""
    reader, writer, body = await upload_headers(intake, case_id, token)
    try:
        answer = asyncio.create_task(collect(reader))
        size = len(body) // parts + 1
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        for n, piece in enumerate(pieces):
            if answer.done():
                break
            try:
                writer.write(piece)
                await writer.drain()
            except ConnectionError:
                break  # the server closed it: its answer is waiting in the reader
            if n < len(pieces) - 1:
                await asyncio.sleep(pause)
        return await asyncio.wait_for(answer, timeout=TOTAL + 20)
    finally:
        writer.close()


async def collect(reader: asyncio.StreamReader) -> bytes:
    """Everything the server answers, read as it comes, until it closes the connection."""
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def draft(intake: Intake) -> tuple[str, str]:
    patient = intake.client()
    created = await patient.post("/v1/cases", json=case_body())
    assert created.status_code == 201, created.text
    return created.json()["case_id"], intake.token(patient.sub, "patient")  # type: ignore[attr-defined]


async def documents_of(intake: Intake, case_id: str) -> int:
    case = await intake.store.cases.find_one({"_id": case_id}, {"record_ids": 1})
    assert case is not None
    return len(case.get("record_ids") or [])


async def stalled_sender(intake: Intake, case_id: str, token: str) -> bytes:
    # Half the body, then nothing more: the idle bound ends it.
    reader, writer, body = await upload_headers(intake, case_id, token)
    try:
        writer.write(body[: len(body) // 2])
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=TOTAL + 20)
    finally:
        writer.close()


def assert_timed_out(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    assert b"request-timeout" in body and b"did not arrive in time" in body


async def test_a_stalled_upload_ends_with_408_and_stores_nothing(intake: Intake) -> None:
    case_id, token = await draft(intake)
    assert_timed_out(await stalled_sender(intake, case_id, token))
    assert await documents_of(intake, case_id) == 0


async def test_an_upload_dripping_past_the_whole_bound_ends_with_408(intake: Intake) -> None:
    # Each piece comes within the idle bound, but all of them take longer than the total.
    case_id, token = await draft(intake)
    assert_timed_out(
        await drip(intake, case_id, token, pause=IDLE / 2, parts=int(TOTAL / IDLE) * 4)
    )
    assert await documents_of(intake, case_id) == 0


async def test_a_slow_upload_within_the_bounds_completes(intake: Intake) -> None:
    case_id, token = await draft(intake)
    answer = await drip(intake, case_id, token, pause=IDLE / 4, parts=4)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    assert await documents_of(intake, case_id) == 1
