"""Report rendering cost, warm, per report (no broker or store involved).

Prints the median, p90 and max over N renders (default 50, at least 20) of:
  compose   the report composed from an opinion, in French and in English
  pdf       the PDF laid out by ReportLab (what `Accept: application/pdf` costs when not cached)
  fhir      the FHIR R4B document Bundle, validated by fhir.resources
  open-pdf  a cached PDF opened (AES-256-GCM) — what every later request for it costs
Usage: make bench  (or: python bench/bench_report_pdf.py [N])
"""

import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from avis.reports.fhir import document
from avis.reports.i18n import texts
from avis.reports.pdf import render_pdf
from avis.reports.rules import CaseFacts, OpinionFacts, compose, report_id_for
from avis.shared.events import Language
from avis.shared.sealing import Keyring, generate_key
from tests.support.samples import (
    CONTACTS,
    SPECIALTIES,
    case_facts,
    completed_opinion,
    sample_report,
)


def timed(work: Callable[[], object], n: int) -> list[float]:
    """Milliseconds of each of `n` runs, after two warm-up runs."""
    for _ in range(2):
        work()
    runs = []
    for _ in range(n):
        start = time.perf_counter()
        work()
        runs.append((time.perf_counter() - start) * 1000)
    return runs


def main(n: int) -> None:
    n = max(n, 20)
    keyring = Keyring.parse(f"k1:{generate_key()}")
    print(f"report rendering, warm, {n} runs each (ms)")
    print(f"{'what':<14}{'lang':<6}{'median':>9}{'p90':>9}{'max':>9}{'bytes':>9}")
    for language in Language:
        report = sample_report(language)
        case = case_facts(language)
        pdf = render_pdf(report)
        sealed = keyring.seal(pdf, "bench")

        def composed(language: Language = language, case: CaseFacts = case) -> object:
            return compose(
                texts=texts(language),
                case=case,
                contact=CONTACTS[language],
                opinion=OpinionFacts(
                    completed_opinion(language), SPECIALTIES[language], case.submitted_at
                ),
                report_id=report_id_for(case.case_id),
                version=1,
                issued_at=datetime.now(UTC),
            )

        rows = [
            ("compose", composed, len(report.model_dump_json())),
            ("pdf", lambda report=report: render_pdf(report), len(pdf)),
            ("fhir", lambda report=report: document(report), None),
            ("open-pdf", lambda sealed=sealed: keyring.open(sealed, "bench"), len(pdf)),
        ]
        for name, work, size in rows:
            runs = sorted(timed(work, n))
            p90 = runs[int(0.9 * (len(runs) - 1))]
            print(
                f"{name:<14}{language.value:<6}{statistics.median(runs):>9.1f}{p90:>9.1f}"
                f"{runs[-1]:>9.1f}{size or '':>9}"
            )


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:] if a.isdigit()]  # flags of `make bench` skipped
    main(counts[0] if counts else 20 if "--quick" in sys.argv else 50)
