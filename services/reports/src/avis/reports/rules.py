"""The reports service's pure decisions: ids, who may read a report, which opinion versions
become report versions, what the client asked for, and the composition of the report itself.
No I/O here; the texts come in as a `Texts` (the catalogue of one language)."""

import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from avis.reports.i18n import Texts
from avis.reports.models import (
    FHIR_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    PDF_MEDIA_TYPE,
    AddendumSection,
    DateLine,
    Labels,
    PatientBlock,
    QuestionLine,
    Report,
    ReportSection,
    ReviewerBlock,
    SectionCode,
    Titled,
)
from avis.shared.events import (
    CompletedOpinion,
    ConsentScope,
    FollowUpAnswer,
    Language,
    PatientContact,
    Question,
    Specialty,
)
from avis.shared.security import Principal

# Report ids are derived from the case id, so composing again never mints another id.
_REPORT_NAMESPACE = uuid.UUID("8f7e3c1a-52d4-4b0e-9c61-3a9d2e7f4b18")

# The opinion's numbered parts, in the report's order.
OPINION_SECTIONS: tuple[SectionCode, ...] = (
    SectionCode.DIAGNOSIS,
    SectionCode.IMAGING_AND_LAB_REVIEW,
    SectionCode.ALTERNATIVE_PATHWAYS,
    SectionCode.RISK_BENEFIT,
    SectionCode.FURTHER_TESTS,
)
# Where each question the patient may ask is answered.
ANSWERED_IN: dict[Question, SectionCode] = {
    Question.DIAGNOSIS_CLARIFICATION: SectionCode.DIAGNOSIS,
    Question.IMAGING_AND_LAB_REVIEW: SectionCode.IMAGING_AND_LAB_REVIEW,
    Question.TREATMENT_ALTERNATIVES: SectionCode.ALTERNATIVE_PATHWAYS,
    Question.RISK_BENEFIT: SectionCode.RISK_BENEFIT,
    Question.FURTHER_TESTS: SectionCode.FURTHER_TESTS,
}
FORMATS: tuple[str, ...] = ("json", "pdf", "fhir")


# --- ids and associated data ----------------------------------------------------------------


def report_id_for(case_id: str) -> str:
    """The id of a case's report (one per case; its versions are numbered)."""
    return str(uuid.uuid5(_REPORT_NAMESPACE, case_id))


def version_key(report_id: str, version: int) -> str:
    """The `_id` of one stored report version, also the associated data sealing it."""
    return f"{report_id}:v{version}"


def erasable_versions(report_id: str, issued: Iterable[int]) -> list[str]:
    """The stored versions to delete when a case is erased: every version issued, and the one
    after the last, which an interrupted issue may have kept before announcing it."""
    numbers = set(issued)
    numbers.add(max(numbers, default=0) + 1)
    return [version_key(report_id, n) for n in sorted(numbers)]


def contact_aad(case_id: str) -> str:
    """Associated data of the patient's contact as reports keeps it."""
    return f"reports:contact:{case_id}"


def opinion_aad(case_id: str, opinion_version: int) -> str:
    """Associated data of an opinion version as reports keeps it."""
    return f"reports:opinion:{case_id}:v{opinion_version}"


def addendum_aad(case_id: str, follow_up_id: str) -> str:
    """Associated data of an answer to a follow-up question as reports keeps it."""
    return f"reports:addendum:{case_id}:{follow_up_id}"


def report_aad(key: str) -> str:
    """Associated data of a composed report version."""
    return f"reports:report:{key}"


def pdf_aad(key: str, *, pseudonymised: bool = False) -> str:
    """Associated data of a report version's rendered PDF (or of its pseudonymised one)."""
    return f"reports:pdf:{key}" + (":pseudonymised" if pseudonymised else "")


# --- who may read ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Readers:
    """What decides who may read a case's report; it all travelled in the events."""

    patient_id: str | None
    partner_id: str | None
    consent_scopes: frozenset[str]
    reviewer_ids: frozenset[str]
    # Reviewers among them whose access has lapsed (`reviewer_access_lapsed`).
    lapsed_reviewer_ids: frozenset[str] = frozenset()


def reviewer_access_lapsed(
    *, last_active: datetime | None, request_open: bool, at: datetime, window: timedelta
) -> bool:
    """Whether a reviewer's access to a case's report has lapsed: `window` after their last
    opinion or answer (`last_active`), unless a follow-up question or a request for more
    information of theirs is open (`request_open`: nothing opens one yet)."""
    if request_open or last_active is None:
        return False
    return at >= last_active + window


def may_read(principal: Principal, readers: Readers) -> bool:
    """The patient who filed the case, the partner that filed it (with the patient's consent to
    share), a specialist who wrote a version of the opinion (until their access lapses),
    coordinators; nobody else."""
    match principal.role:
        case "coordinator":
            return True
        case "patient":
            return readers.patient_id is not None and principal.sub == readers.patient_id
        case "partner":
            return (
                readers.partner_id is not None
                and ConsentScope.SHARE_WITH_PARTNER.value in readers.consent_scopes
                and principal.partner_id == readers.partner_id
            )
        case "reviewer":
            return (
                principal.sub in readers.reviewer_ids
                and principal.sub not in readers.lapsed_reviewer_ids
            )
        case _:
            return False


# What reports records in a case's access trail (avis.shared.access_log), in plain words: done,
# and tried (a refusal). Every read of a report version is one entry, whatever its form (JSON,
# FHIR or PDF); the list of versions too, since it says that there is a report.
ACTIONS = {
    "report.read": ("read the report", "read the report"),
    "report.list": ("listed the report's versions", "list the report's versions"),
}


# The list of versions, read again within this window of the last entry by the same person, is
# that entry (a page that shows it on every poll leaves one entry).
VERSIONS_READ_FOLD = timedelta(minutes=15)


def fold_window(action: str) -> timedelta | None:
    """How long a repeat of `action` by the same person counts as the last entry (None: never)."""
    return VERSIONS_READ_FOLD if action == "report.list" else None


def may_read_trail(principal: Principal, readers: Readers) -> bool:
    """Who reads the report's access trail: the case's patient and coordinators."""
    return principal.role == "coordinator" or (
        principal.role == "patient"
        and readers.patient_id is not None
        and principal.sub == readers.patient_id
    )


def sees_identity(principal: Principal) -> bool:
    """Whether a reader of the report sees who it is about: everyone but a reviewer, who reviews
    the case, not the person (intake never shows a reviewer the identity either)."""
    return principal.role != "reviewer"


def age_on(birth: date, day: date) -> int:
    """Age in whole years on `day`."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def pseudonymised(report: Report, texts: Texts) -> Report:
    """The report as a reviewer reads it: the case's reference instead of the patient's name,
    the age on the day the report was issued instead of the birth date."""
    t = texts
    patient = report.patient
    if patient.birth_date is None:
        return report  # already pseudonymised
    age = age_on(patient.birth_date, report.issued_at.date())
    block = PatientBlock(
        name=t("pseudonym.name", reference=report.reference),
        given_name=None,
        family_name=None,
        birth_date=None,
        birth_date_text=None,
        age_years=age,
        age_text=t("pseudonym.age", years=t.number(age)),
    )
    labels = report.labels.model_copy(update={"age": t("pseudonym.age_label")})
    return report.model_copy(update={"patient": block, "labels": labels})


# --- which versions ----------------------------------------------------------------------------


def waits_for_its_case(*, submitted: bool, withdrawn: bool) -> bool:
    """Whether what is parked for a case still waits for it: neither its submission nor its
    withdrawal (a final word) has arrived."""
    return not submitted and not withdrawn


def report_seq(opinion_seq: int) -> int:
    """The case's sequence number a report version goes out with: that of the opinion it is
    made from (as kept: below a follow-up question open when it was published, if one was:
    `ReviewCompleted.report_seq`). Review owns the sequence; a report is the same step of the
    case's lifecycle as its opinion, after it by the status's rank (`report_ready` after
    `in_review`), and before whatever review publishes next (a case sent back to review moves
    it back)."""
    return opinion_seq


def opinions_to_compose(
    received: Iterable[int], composed: Iterable[int], *, case_known: bool, withdrawn: bool
) -> list[int]:
    """The opinion versions that become new report versions now, oldest first.

    Nothing before the case is known (the opinion waits, parked) or once it is withdrawn; an
    opinion version not newer than the latest one composed makes nothing (a redelivery, or an
    older version arriving late).
    """
    if not case_known or withdrawn:
        return []
    latest = max(composed, default=0)
    return sorted(v for v in set(received) if v > latest)


def page_of_versions(
    versions: Sequence[int], cursor: int | None, limit: int
) -> tuple[list[int], int | None]:
    """A page of version numbers, newest first, after `cursor`; and the next cursor."""
    ordered = sorted((v for v in versions if cursor is None or v < cursor), reverse=True)
    page = ordered[:limit]
    return page, (page[-1] if len(ordered) > limit else None)


# --- what the client asked for ------------------------------------------------------------------

_MEDIA_RANGE = re.compile(r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)/([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*$")


def choose_media_type(accept: str | None) -> str | None:
    """The representation to serve for an `Accept` header: JSON, PDF or FHIR; None if none fits.

    No header, or `*/*`, means JSON; among acceptable types the highest `q` wins, then the
    order we prefer (JSON, FHIR, PDF).
    """
    if accept is None or not accept.strip():
        return JSON_MEDIA_TYPE
    offered = (JSON_MEDIA_TYPE, FHIR_MEDIA_TYPE, PDF_MEDIA_TYPE)
    best: tuple[float, int, str] | None = None
    for item in accept.split(","):
        media, *params = item.split(";")
        found = _MEDIA_RANGE.match(media)
        if not found:
            continue
        kind, sub = found.group(1).lower(), found.group(2).lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if not 0 < q <= 1:
            continue
        for rank, candidate in enumerate(offered):
            c_kind, c_sub = candidate.split("/")
            fits = (kind == "*" and sub == "*") or (kind == c_kind and sub in ("*", c_sub))
            # `application/*` and `*/*` stand for JSON only: a PDF is asked for by name.
            if fits and (sub != "*" or candidate == JSON_MEDIA_TYPE):
                key = (q, -rank, candidate)
                if best is None or key[:2] > best[:2]:
                    best = key
    return best[2] if best else None


# --- composition ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFacts:
    """What the report needs of the case (from `avis.case.submitted.v1`)."""

    case_id: str
    reference: str
    specialty: Specialty
    language: Language
    questions: tuple[Question, ...]
    submitted_at: datetime


@dataclass(frozen=True)
class OpinionFacts:
    """One opinion version as received (from `avis.review.completed.v1`), opened."""

    opinion: CompletedOpinion
    specialty: Specialty
    completed_at: datetime


def compose(
    *,
    texts: Texts,
    case: CaseFacts,
    contact: PatientContact,
    opinion: OpinionFacts,
    report_id: str,
    version: int,
    issued_at: datetime,
    source_texts: Texts | None = None,
) -> Report:
    """The report of one opinion version, in the language of `texts` (the patient's;
    `source_texts`: the specialist's, of a translated opinion)."""
    t = texts
    content = opinion.opinion
    sections = _sections(t, content)
    return Report(
        report_id=report_id,
        case_id=case.case_id,
        version=version,
        opinion_version=content.version,
        language=texts.language,
        reference=case.reference,
        title=t("report.title"),
        subtitle=t("report.subtitle"),
        correction_note=(
            t("text.correction", previous=t.number(version - 1)) if version > 1 else None
        ),
        patient=_patient(t, contact),
        specialty=case.specialty,
        specialty_text=t(f"specialty.{case.specialty.value}"),
        dates=[
            DateLine(label=t(label), at=at, text=t.date(at.date()))
            for label, at in (
                ("label.submitted", case.submitted_at),
                ("label.reviewed", opinion.completed_at),
                ("label.issued", issued_at),
            )
        ],
        issued_at=issued_at,
        questions=_questions(t, case.questions, sections),
        sections=sections,
        reviewer=_reviewer(
            t, content, content.reviewer_specialty or opinion.specialty, source_texts
        ),
        disclaimer=Titled(heading=t("heading.disclaimer"), text=t("text.disclaimer")),
        labels=_labels(t),
    )


def _sections(t: Texts, content: CompletedOpinion) -> list[ReportSection]:
    """The opinion's numbered parts, then the summary for the patient in plain words (what the
    specialist concludes of the diagnosis, then their summary for the patient: nothing written
    for them), which the printed report puts first."""
    bodies = {
        SectionCode.DIAGNOSIS: content.diagnosis.explanation,
        SectionCode.IMAGING_AND_LAB_REVIEW: content.imaging_and_lab_review,
        SectionCode.ALTERNATIVE_PATHWAYS: content.alternative_pathways,
        SectionCode.RISK_BENEFIT: content.risk_benefit,
        SectionCode.FURTHER_TESTS: content.further_tests,
    }
    sections = [
        ReportSection(
            code=code,
            number=number,
            heading=t(f"heading.{code.value}"),
            assessment=content.diagnosis.assessment if code is SectionCode.DIAGNOSIS else None,
            lead=(
                t(f"assessment.{content.diagnosis.assessment.value}")
                if code is SectionCode.DIAGNOSIS
                else None
            ),
            text=bodies[code].strip(),
        )
        for number, code in enumerate(OPINION_SECTIONS, start=1)
    ]
    summary = ReportSection(
        code=SectionCode.SUMMARY,
        number=None,
        heading=t("heading.summary"),
        lead=t(f"assessment.{content.diagnosis.assessment.value}"),
        text=content.summary_for_patient.strip(),
    )
    return [*sections, summary]


def _questions(
    t: Texts, asked: Iterable[Question], sections: Sequence[ReportSection]
) -> list[QuestionLine]:
    """The patient's questions (each once, in the order asked) and where each is answered."""
    numbered = {s.code: s for s in sections}
    questions = []
    for question in dict.fromkeys(asked):
        target = numbered[ANSWERED_IN[question]]
        questions.append(
            QuestionLine(
                code=question,
                text=t(f"question.{question.value}"),
                answered_in=target.code,
                answered_in_text=t(
                    "text.answered_in", number=t.number(target.number or 0), heading=target.heading
                ),
            )
        )
    return questions


def _patient(t: Texts, contact: PatientContact) -> PatientBlock:
    """Who the report is about, as the patient gave their name."""
    given, family = contact.given_name.strip(), contact.family_name.strip()
    return PatientBlock(
        name=f"{given} {family}",
        given_name=given,
        family_name=family,
        birth_date=contact.birth_date,
        birth_date_text=t.date(contact.birth_date),
    )


def _reviewer(
    t: Texts, content: CompletedOpinion, specialty: Specialty, source: Texts | None = None
) -> ReviewerBlock:
    """The specialist who wrote the opinion, under the specialty they wrote it in, the second
    specialist who read it and agreed, if one did, and the translator of a translated opinion
    (the statement in the report's language, then in `source`'s, the specialist's)."""
    second = (content.second_reader_display_name or "").strip() or None
    translator = (content.translator_display_name or "").strip() or None
    statement: list[str] = []
    if translator is not None and content.translated_from is not None:
        both = [t] if source is None or source.language is t.language else [t, source]
        statement = translation_statement(
            both,
            from_language=content.translated_from,
            to_language=t.language,
            translator=translator,
        )
    return ReviewerBlock(
        heading=t("heading.reviewer"),
        name=content.reviewer_display_name.strip(),
        specialty=specialty,
        specialty_text=t(f"specialty.{specialty.value}"),
        second_reader=second,
        second_reader_text=None if second is None else t("text.second_reader", name=second),
        translated_by=translator,
        translation_text=statement,
    )


def _labels(t: Texts) -> Labels:
    """The texts the layouts put around the content."""
    return Labels(
        patient=t("label.patient"),
        born=t("label.born"),
        reference=t("label.reference"),
        specialty=t("label.specialty"),
        version=t("label.version"),
        questions=t("heading.questions"),
        questions_intro=t("text.questions"),
        confidential=t("footer.confidential"),
        page=t("footer.page", page="%(page)s", pages="%(pages)s"),
    )


# --- the treating physician's link ------------------------------------------------------------

# What the keyed digest of a physician's link secret is derived for (`Keyring.derive`).
PHYSICIAN_LINK_PURPOSE = "avis-reports:physician-link"


def physician_link_digest(key: bytes, case_id: str, secret: str) -> str:
    """The keyed digest kept instead of the secret of a physician's link (HMAC-SHA256, bound to
    the case, so one case's secret opens no other case)."""
    return hmac.new(key, f"{case_id}:{secret}".encode(), hashlib.sha256).hexdigest()


def physician_link_matches(key: bytes, case_id: str, secret: str, digest: str | None) -> bool:
    """Whether `secret` opens the case's report for its physician, compared in constant time."""
    if digest is None:
        return False
    return hmac.compare_digest(physician_link_digest(key, case_id, secret), digest)


@dataclass(frozen=True)
class AccessWindows:
    """How long a reader keeps a case's report: a reviewer after their last opinion version
    (`AVIS_REPORTS_REVIEWER_ACCESS_DAYS`), the treating physician's link after the latest
    version was issued (`AVIS_REPORTS_PHYSICIAN_LINK_DAYS`)."""

    reviewer: timedelta = timedelta(days=30)
    physician_link: timedelta = timedelta(days=30)


ACCESS_WINDOWS = AccessWindows()


def physician_link_lapsed(*, issued_at: datetime, at: datetime, window: timedelta) -> bool:
    """Whether a physician's link has expired: `window` after the latest report version was
    issued (each new version, emailed to them with the same link, opens it for `window` again)."""
    return at >= issued_at + window


def physician_link_expired(window: timedelta, languages: Sequence[Texts]) -> tuple[str, str]:
    """The title and the plain reason of the answer to an expired link, in each of `languages`
    (the reader has no account, and reports does not know the language their email was in)."""
    title = " / ".join(t("problem.physician_link_expired.title") for t in languages)
    detail = " / ".join(
        t("problem.physician_link_expired.detail", days=t.number(window.days)) for t in languages
    )
    return title, detail


# --- international review: the translation statement ---------------------------------------


def translation_statement(
    texts: Iterable[Texts], *, from_language: Language, to_language: Language, translator: str
) -> list[str]:
    """That the report was translated, by whom and from which language, in each of `texts`'
    languages (the patient's first, then the specialist's): the report states it in both."""
    return [
        t(
            "translation.statement",
            from_language=t(f"language.{from_language.value}"),
            to_language=t(f"language.{to_language.value}"),
            translator=translator,
        )
        for t in texts
    ]


# --- addenda: the answers to follow-up questions -------------------------------------------


def addendum_due(received: int, issued: Iterable[int]) -> bool:
    """Whether a report version is due for an answer to a follow-up question: more answers were
    received (`received`) than the versions issued so far carry (`issued`: each one's count)."""
    return received > max(issued, default=0)


def addendum_section(
    t: Texts, number: int, answer: FollowUpAnswer, answered_at: datetime
) -> AddendumSection:
    """One answer to a follow-up question, as the report's addendum shows it."""
    return AddendumSection(
        number=number,
        heading=t("heading.addendum", number=t.number(number)),
        question_label=t("addendum.question"),
        question=answer.question,
        answer_label=t("addendum.answer"),
        answer=answer.answer,
        signature=t(
            "text.addendum_signed",
            name=answer.reviewer_display_name,
            date=t.date(answered_at.date()),
        ),
        answered_at=answered_at,
    )


def with_addenda(
    t: Texts,
    base: Report,
    addenda: Sequence[AddendumSection],
    *,
    version: int,
    issued_at: datetime,
) -> Report:
    """The report version that adds the answers to follow-up questions (`addenda`, all of them
    so far) to the last version issued (`base`): the opinion as it was, a note saying what this
    version adds, the issue date of this version."""
    issued = t("label.issued")
    dates = [
        d.model_copy(update={"at": issued_at, "text": t.date(issued_at.date())})
        if d.label == issued
        else d
        for d in base.dates
    ]
    return base.model_copy(
        update={
            "version": version,
            "issued_at": issued_at,
            "dates": dates,
            "correction_note": t(
                "text.addendum_note", previous=t.number(version - 1), count=t.number(len(addenda))
            ),
            "addenda": list(addenda),
        }
    )
