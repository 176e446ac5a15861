"""Records: format recognised from the bytes, declared types, file names, and the limits of
intake's request bodies."""

import httpx
import pytest
from fastapi import FastAPI

from avis.intake.api import MULTIPART_SLACK, content_disposition
from avis.intake.main import create_app
from avis.intake.models import ContentType
from avis.intake.rules import check_filename, check_type, declared_type, sniff
from avis.intake.settings import Settings
from avis.shared.problems import Problem
from avis.shared.sealing import generate_key

DICOM = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00"
SAMPLES = {
    ContentType.PDF: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    ContentType.JPEG: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    ContentType.PNG: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    ContentType.DICOM: DICOM,
    ContentType.TEXT: "Compte rendu: échographie normale.\n".encode(),
}


@pytest.mark.parametrize(("expected", "data"), SAMPLES.items())
def test_each_format_is_recognised_from_its_bytes(expected: ContentType, data: bytes) -> None:
    assert sniff(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a\x01\x00",
        b"PK\x03\x04",
        b"text with a \x00 NUL",
        b"text with \x1b[31m escapes",
        b"\xc3\x28 invalid utf-8",
        b"\x00" * 128 + b"DICX",
        b"\x00" * 127 + b"DICM",
    ],
    ids=["empty", "gif", "zip", "nul", "escape", "bad-utf8", "not-dicm", "dicm-misplaced"],
)
def test_anything_else_is_not_recognised(data: bytes) -> None:
    assert sniff(data) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("application/octet-stream", None),
        ("application/pdf", ContentType.PDF),
        ("Application/PDF; name=x", ContentType.PDF),
        ("image/jpg", ContentType.JPEG),
        ("text/plain; charset=utf-8", ContentType.TEXT),
        ("application/dicom", ContentType.DICOM),
    ],
)
def test_declared_types(raw: str | None, expected: ContentType | None) -> None:
    assert declared_type(raw) == expected


@pytest.mark.parametrize("raw", ["image/gif", "application/zip", "text/html"])
def test_a_declared_type_intake_does_not_take_is_415(raw: str) -> None:
    with pytest.raises(Problem) as refused:
        declared_type(raw)
    assert refused.value.status == 415


def test_the_bytes_must_agree_with_the_declared_type() -> None:
    assert check_type(SAMPLES[ContentType.PNG], ContentType.PNG) == ContentType.PNG
    assert check_type(SAMPLES[ContentType.PNG], None) == ContentType.PNG
    with pytest.raises(Problem) as refused:
        check_type(SAMPLES[ContentType.PDF], ContentType.PNG)
    assert refused.value.status == 415 and "declared as image/png" in (refused.value.detail or "")
    with pytest.raises(Problem):
        check_type(b"GIF89a\x01\x00\x01\x00", None)


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("report.pdf", "report.pdf"),
        ("  IRM cérébrale (mars).pdf ", "IRM cérébrale (mars).pdf"),
        ("Dupre\u0301.txt", "Dupré.txt"),
        (None, None),
        ("", None),
        (".hidden", ".hidden"),
    ],
)
def test_file_names_are_kept_as_data(name: str | None, kept: str | None) -> None:
    assert check_filename(name) == kept


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "..",
        "scans/report.pdf",
        "/absolute.pdf",
        "C:report.pdf",
        "..\\up.pdf",
        "a\\b.pdf",
        "new\nline.pdf",
        "nul\x00.pdf",
        "rtl\u202eflip.pdf",
        "x" * 256,
    ],
)
def test_a_path_or_control_characters_in_a_file_name_is_422(name: str) -> None:
    with pytest.raises(Problem) as refused:
        check_filename(name)
    assert refused.value.status == 422 and refused.value.type.endswith("/invalid-filename")
    assert refused.value.errors and refused.value.errors[0].field == "body.file.filename"


def test_content_disposition_keeps_the_name_encoded() -> None:
    header = content_disposition('IRM cérébrale "1".pdf', "a" * 64)
    assert header.startswith('attachment; filename="IRM c_r_brale _1_.pdf"')
    assert "filename*=UTF-8''IRM%20c%C3%A9r%C3%A9brale%20%221%22.pdf" in header
    assert content_disposition(None, "b" * 64) == 'attachment; filename="record-bbbbbbbbbbbb"'


def intake_app() -> FastAPI:
    """Intake's app called in process; its lifespan never runs, so nothing connects."""
    settings = Settings(
        max_document_bytes=1000,
        max_json_bytes=2000,
        jwt_secret="s" * 40,  # type: ignore[arg-type]
        sealing_keys=f"k1:{generate_key()}",  # type: ignore[arg-type]
        log_format="json",
    )
    return create_app(settings)


async def test_intake_bounds_bodies_before_authentication_and_keeps_answers_out_of_caches() -> None:
    transport = httpx.ASGITransport(app=intake_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        upload = "/v1/cases/0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/documents"
        fits = await client.post(upload, content=b"x" * (1000 + MULTIPART_SLACK))
        assert fits.status_code == 401  # within the limit: the missing token is what is refused
        assert fits.headers["cache-control"] == "no-store"
        over = await client.post(upload, content=b"x" * (1001 + MULTIPART_SLACK))
        assert over.status_code == 413
        assert over.headers["content-type"] == "application/problem+json"
        assert over.json()["type"].endswith("/request-too-large")

        async def chunks() -> object:
            for _ in range(100):
                yield b"y" * 1024  # streamed, no Content-Length

        streamed = await client.post(upload, content=chunks())  # type: ignore[arg-type]
        assert streamed.status_code == 413
        json_over = await client.post("/v1/cases", content=b"{" + b" " * 2000 + b"}")
        assert json_over.status_code == 413
        json_fits = await client.post("/v1/cases", content=b"{" + b" " * 1998 + b"}")
        assert json_fits.status_code == 401
        assert (await client.get("/v1/cases")).headers["cache-control"] == "no-store"
