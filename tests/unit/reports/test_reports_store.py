"""Reports' stored documents read back from the form they are written in (the shared rule: only a
top-level None is left out), and from the older form that left out every None, nested too."""

from datetime import UTC, datetime

from avis.reports.models import ReportVersion
from avis.reports.store import CaseDoc, CaseRecord, PdfCache, VersionDoc, VersionEntry
from avis.shared.events import Language, Question, Specialty
from avis.shared.mongo import Stored
from avis.shared.sealing import Sealed

AT = datetime(2026, 3, 9, 16, 5, 7, 123000, tzinfo=UTC)
SEALED = Sealed(alg="A256GCM", kid="k1", nonce="bm9uY2U", ct="Y2lwaGVydGV4dA")
CASE_ID = "3f1c2a9e-8b7d-4e21-9a5c-0d6e4f1b2c3d"


def record(contact: Sealed | None) -> CaseRecord:
    return CaseRecord(
        reference="AV-2026-0001",
        specialty=Specialty.ONCOLOGY,
        language=Language.FR,
        questions=[Question.DIAGNOSIS_CLARIFICATION],
        submitted_at=AT,
        contact=contact,
    )


def entry() -> VersionEntry:
    return VersionEntry(
        version=2, opinion_version=3, reviewer_id="rev-1", language=Language.FR, issued_at=AT
    )


def reads_back(doc: Stored) -> None:
    stored = doc.to_doc()
    assert type(doc).model_validate(stored) == doc
    older = doc.model_dump(by_alias=True, exclude_none=True)
    assert type(doc).model_validate(older) == doc


def test_a_case_reads_back_whatever_is_still_unknown() -> None:
    parked = CaseDoc(id=CASE_ID, report_id="r", traceparent="tp", created_at=AT)
    assert "case" not in parked.to_doc()
    assert "withdrawn_at" not in parked.to_doc()
    reads_back(parked)
    # A case withdrawn before it reached reports keeps no contact; its record still reads back.
    followed = parked.model_copy(
        update={"case": record(None), "withdrawn_at": AT, "versions": [entry()]}
    )
    reads_back(followed)
    reads_back(parked.model_copy(update={"case": record(SEALED)}))


def test_a_version_reads_back_before_and_after_its_pdf() -> None:
    version = VersionDoc(
        id="r:v1",
        report_id="r",
        case_id=CASE_ID,
        version=1,
        opinion_version=1,
        language=Language.EN,
        issued_at=AT,
        report=SEALED,
    )
    assert "pdf" not in version.to_doc()
    reads_back(version)
    pdf = PdfCache(sealed=SEALED, etag='"e"', size=3, rendered_at=AT)
    reads_back(version.model_copy(update={"pdf": pdf}))


def test_a_listed_version_shows_nothing_clinical() -> None:
    view = entry().view(report_id="r", case_id=CASE_ID, url="https://x/v1/reports/r?version=2")
    assert view == ReportVersion(
        report_id="r",
        case_id=CASE_ID,
        version=2,
        opinion_version=3,
        language=Language.FR,
        issued_at=AT,
        url="https://x/v1/reports/r?version=2",
    )
