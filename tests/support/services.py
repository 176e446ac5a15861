"""The four services as the door tests take them: each one's app factory and test settings, the
topics it reads (so a test's consumer group starts past the suite's history), and a plausible id
for every path parameter."""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from avis.intake.main import create_app as intake_app
from avis.notify.main import create_app as notify_app
from avis.reports.main import create_app as reports_app
from avis.review.main import create_app as review_app
from avis.shared.settings import CommonSettings
from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from tests.support.intake import intake_settings
from tests.support.notify import notify_settings
from tests.support.reports import reports_settings
from tests.support.review import review_settings

SERVICES: dict[str, tuple[Callable[[Any], FastAPI], Callable[..., CommonSettings]]] = {
    "intake": (intake_app, intake_settings),
    "review": (review_app, review_settings),
    "reports": (reports_app, reports_settings),
    "notify": (notify_app, notify_settings),
}
READS = {
    "intake": [REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
    "review": [CASE_SUBMITTED, REPORT_READY],
    "reports": [CASE_SUBMITTED, REVIEW_COMPLETED],
    "notify": [CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
}
FILLER = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"  # a plausible id for every path parameter
