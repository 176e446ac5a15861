"""Every event of the shared contracts is declared sent by a service (`SENDS` in its `main.py`):
its service's AsyncAPI document lists it as a `send`, and its published series starts at 0."""

from avis.intake.main import SENDS as INTAKE
from avis.notify.main import SENDS as NOTIFY
from avis.reports.main import SENDS as REPORTS
from avis.review.main import SENDS as REVIEW
from avis.shared.events import TYPE_OF, TrailAnchored

# Declared by the runtime itself, in every service that keeps an access trail.
BY_THE_RUNTIME = {TrailAnchored}


def test_every_event_type_is_declared_sent_by_a_service() -> None:
    declared = {t for t in (*INTAKE, *REVIEW, *REPORTS, *NOTIFY) if not isinstance(t, str)}
    undeclared = sorted(t.__name__ for t in TYPE_OF if t not in declared | BY_THE_RUNTIME)
    assert undeclared == []


def test_no_event_type_is_declared_by_two_services() -> None:
    each = [set(s) for s in (INTAKE, REVIEW, REPORTS, NOTIFY)]
    twice = [t for i, s in enumerate(each) for t in s if any(t in o for o in each[i + 1 :])]
    assert twice == []
