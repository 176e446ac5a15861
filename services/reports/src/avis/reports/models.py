"""API schemas and views of the reports service.

`Report` is the medical feedback report as composed: every text in the patient's language, ready
to read or to lay out, so the PDF and the FHIR document are renderings of this one object.
"""

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from avis.shared.events import Assessment, Language, Question, Specialty

MAX_VERSION = 10_000
VERSION_CURSOR_PATTERN = r"^[1-9][0-9]{0,4}$"

PDF_MEDIA_TYPE = "application/pdf"
FHIR_MEDIA_TYPE = "application/fhir+json"
JSON_MEDIA_TYPE = "application/json"


class SectionCode(StrEnum):
    """The parts of the opinion, in the order the report gives them."""

    DIAGNOSIS = "diagnosis"
    IMAGING_AND_LAB_REVIEW = "imaging_and_lab_review"
    ALTERNATIVE_PATHWAYS = "alternative_pathways"
    RISK_BENEFIT = "risk_benefit"
    FURTHER_TESTS = "further_tests"
    SUMMARY = "summary"


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class PatientBlock(_View):
    """Who the report is about: by name and birth date (a physician files reports so) for the
    patient, coordinators and a consenting partner; pseudonymised for a reviewer (the case's
    reference instead of the name, the age instead of the birth date: those are null)."""

    name: str = Field(description="The patient's name; for a reviewer, the case's reference.")
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    birth_date_text: str | None = Field(
        description="The birth date as the patient's language writes it."
    )
    age_years: int | None = Field(
        None, description="A reviewer's report only: the age when the report was issued."
    )
    age_text: str | None = Field(None, description="The age as the patient's language writes it.")


class DateLine(_View):
    """One of the report's dates, with its label and its text in the patient's language."""

    label: str
    at: datetime
    text: str


class QuestionLine(_View):
    """A question the patient asked, and where the report answers it."""

    code: Question
    text: str
    answered_in: SectionCode
    answered_in_text: str


class ReportSection(_View):
    """One numbered part of the opinion (the summary has no number)."""

    code: SectionCode
    number: int | None
    heading: str
    assessment: Assessment | None = Field(None, description="Diagnosis only.")
    lead: str | None = Field(None, description="The diagnosis's assessment, as a sentence.")
    text: str


class ReviewerBlock(_View):
    """The specialist who wrote the opinion."""

    heading: str
    name: str
    specialty: Specialty
    specialty_text: str
    second_reader: str | None = Field(
        None, description="The second specialist who read the opinion and agreed, if one did."
    )
    second_reader_text: str | None = Field(
        None, description="The sentence naming the second reader, in the report's language."
    )
    translated_by: str | None = Field(
        None, description="International review: the translator who translated the opinion."
    )
    translation_text: list[str] = Field(
        default_factory=list,
        description="That the report was translated, by whom and from which language: in the "
        "report's language (the patient's), then in the specialist's. Empty: not translated.",
    )


class Titled(_View):
    """A heading and its text."""

    heading: str
    text: str


class Labels(_View):
    """Texts the layouts need around the content."""

    patient: str
    born: str
    reference: str
    specialty: str
    version: str
    questions: str
    questions_intro: str
    confidential: str
    page: str = Field(description="Page numbering, with %(page)s and %(pages)s placeholders.")
    age: str | None = Field(None, description="A reviewer's report only: the age's label.")


class AddendumSection(_View):
    """A follow-up question asked after the report and the specialist's answer to it: the
    addendum of the report version that answered it (and of every later one)."""

    number: int = Field(ge=1, description="The follow-up question's rank (1 to 3).")
    heading: str
    question_label: str
    question: str
    answer_label: str
    answer: str
    signature: str = Field(description="Who answered, and when.")
    answered_at: datetime


class Report(_View):
    """The medical feedback report of a case, one version, as composed."""

    report_id: str
    case_id: str
    version: int = Field(ge=1)
    opinion_version: int = Field(ge=1)
    language: Language
    reference: str
    title: str
    subtitle: str
    correction_note: str | None = Field(None, description="From version 2 on: what it replaces.")
    patient: PatientBlock
    specialty: Specialty
    specialty_text: str
    dates: list[DateLine] = Field(description="Submitted, reviewed, issued.")
    issued_at: datetime
    questions: list[QuestionLine]
    sections: list[ReportSection]
    reviewer: ReviewerBlock
    disclaimer: Titled
    labels: Labels
    addenda: list[AddendumSection] = Field(
        default_factory=list,
        description="The answers to follow-up questions after the report, oldest first.",
    )


class ReportVersion(_View):
    """One version of a case's report: what it is and where to fetch it (nothing clinical)."""

    report_id: str
    case_id: str
    version: int
    opinion_version: int
    language: Language
    issued_at: datetime
    url: str = Field(description="This version's JSON; ask for PDF or FHIR with Accept.")


class ReportVersionPage(_View):
    """A page of a case's report versions, newest first; pass `next_cursor` as `cursor`."""

    items: list[ReportVersion]
    next_cursor: str | None
