"""The specialist's side on the test stack: a patient's case filed through intake's API for the
seeded cardiologist who reads English, and a small DICOM file that names its patient."""

import asyncio
import struct
import zlib
from typing import Any

from tests.support.basics import unique
from tests.support.samples import case_body, consent_body, upload
from tests.support.stack import ServiceStack

# The seeded cardiologist who reads English (review's development directory), and a colleague.
REVIEWER = "rev-cardio-1"
OTHER_REVIEWER = "rev-cardio-2"
PATIENT_NAME = "Dupré^Éloïse"
PATIENT_ID = "PAT-4471-SECRET"


def _element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return (
            struct.pack("<HH", group, number)
            + vr
            + b"\x00\x00"
            + struct.pack("<I", len(value))
            + value
        )
    return struct.pack("<HH", group, number) + vr + struct.pack("<H", len(value)) + value


def dicom(tag: str = "") -> bytes:
    """A 2x3 CT slice in explicit VR little endian, naming its patient (which no page shows),
    with a sequence of undefined length before the technical tags."""
    syntax = b"1.2.840.10008.1.2.1"
    meta = _element(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2") + _element(
        0x0002, 0x0010, b"UI", syntax
    )
    meta = _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta))) + meta
    item = _element(0x0008, 0x0100, b"SH", b"T-D4000") + _element(
        0x0010, 0x0010, b"PN", b"Hidden^In^Sequence"
    )
    sequence = (
        struct.pack("<HH", 0x0008, 0x1032)
        + b"SQ\x00\x00"
        + struct.pack("<I", 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + item
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    body = (
        _element(0x0008, 0x0020, b"DA", b"20260312")
        + _element(0x0008, 0x0060, b"CS", b"CT")
        + _element(0x0008, 0x0080, b"LO", b"Hopital Saint-Secret")
        + sequence
        + _element(0x0010, 0x0010, b"PN", PATIENT_NAME.encode("utf-8"))
        + _element(0x0010, 0x0020, b"LO", PATIENT_ID.encode())
        + _element(0x0010, 0x0030, b"DA", b"19710314")
        + _element(0x0018, 0x0050, b"DS", b"1.25")
        + _element(0x0020, 0x4000, b"LT", (tag or unique("dicom")).encode())
        + _element(0x0028, 0x0002, b"US", struct.pack("<H", 1))
        + _element(0x0028, 0x0004, b"CS", b"MONOCHROME2")
        + _element(0x0028, 0x0010, b"US", struct.pack("<H", 2))
        + _element(0x0028, 0x0011, b"US", struct.pack("<H", 3))
        + _element(0x0028, 0x0030, b"DS", b"0.5\\0.5")
        + _element(0x0028, 0x0100, b"US", struct.pack("<H", 16))
        + _element(0x0028, 0x0101, b"US", struct.pack("<H", 12))
        + _element(0x7FE0, 0x0010, b"OW", bytes(12))
    )
    return b"\x00" * 128 + b"DICM" + meta + body


async def file_a_case(
    stack: ServiceStack, *, patient: str = "patient-1", dicom_too: bool = False
) -> dict[str, Any]:
    """A patient's cardiology case in English with a PDF and a PNG (and a DICOM file), submitted;
    its id, its patient and their records' names once review has assigned it."""
    body = case_body(specialty="cardiology", questions=["diagnosis_clarification", "further_tests"])
    body["patient"]["preferred_language"] = "en"
    body["clinical_summary"] = "Breathless on stairs since March; a murmur was heard."
    ecg = pdf_page("Resting ECG", "Sinus rhythm, 72 per minute", unique("ecg"))
    records = [("ecg.pdf", ecg), ("echo.png", png_picture(tag=unique("echo")))]
    if dicom_too:
        records.append(("slice.dcm", dicom()))
    async with stack.client("intake", patient, "patient") as intake:
        created = await intake.post("/v1/cases", json=body)
        assert created.status_code == 201, created.text
        case_id = created.json()["case_id"]
        for name, data in records:
            added = await intake.post(
                f"/v1/cases/{case_id}/documents", **upload(data, filename=name)
            )
            assert added.status_code == 201, added.text
        sent = await intake.post(f"/v1/cases/{case_id}/submit", json=consent_body())
        assert sent.status_code == 200, sent.text
    assignment = await assignment_of(stack, case_id)
    return {"case_id": case_id, "patient": patient, "assignment": assignment}


async def assignment_of(stack: ServiceStack, case_id: str) -> dict[str, Any]:
    """The case's assignment, once review and intake both know it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    async with stack.client("review", "coordinator-web", "coordinator") as coordinator:
        while True:
            page = await coordinator.get("/v1/assignments", params={"case_id": case_id})
            items = page.json().get("items", [])
            if items:
                break
            assert loop.time() < deadline, "no assignment in time"
            await asyncio.sleep(0.3)
    assert items[0]["reviewer_id"] == REVIEWER, items[0]
    async with stack.client("intake", REVIEWER, "reviewer") as reviewer:
        while (await reviewer.get(f"/v1/cases/{case_id}/clinical")).status_code != 200:
            assert loop.time() < deadline, "intake never gave the reviewer the case"
            await asyncio.sleep(0.3)
    return dict(items[0])


def pdf_page(*lines: str) -> bytes:
    """A one-page PDF that shows `lines` (a record a person can read on the screenshots)."""
    text = "".join(f"({line}) Tj 0 -22 Td " for line in lines)
    stream = f"BT /F1 16 Tf 60 760 Td {text}ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer << /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def png_picture(width: int = 320, height: int = 200, tag: str = "") -> bytes:
    """A grey gradient with a bright disc, like a small scan (distinct per `tag`)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            inside = (x - width * 0.6) ** 2 + (y - height * 0.45) ** 2 < (height * 0.18) ** 2
            rows.append(235 if inside else (x * 160 // width + y * 60 // height) % 256)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    text = b"Comment\x00" + (tag or unique("picture")).encode()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"tEXt", text)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )
