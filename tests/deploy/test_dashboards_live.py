"""The dashboards against a live stack: the four services as processes over the real broker and
store, scraped every second by VictoriaMetrics (with vmalert and the lag exporter), as `make run`
starts them. A journey moves every dashboard: two partners file a case each; one case goes all
the way (assigned, accepted, answered, its report ready, its emails and its partner's webhooks
sent, the first after a failed attempt); the other is left with its reviewer past its due date,
while its partner's endpoint refuses every delivery until its deliveries die and its
subscription is disabled. Then every panel's every query, evaluated through the store's HTTP API
as vmui evaluates it, returns data; the journey's series moved; and vmui draws every panel of
every dashboard in Debian's chromium (AVIS_SCREENSHOTS=docs keeps them as
docs/dashboard-avis-*.png).
"""

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.basics import eventually, unique
from tests.support.metrics import MetricsStore, observed_stack, panels, service_env
from tests.support.notify import hook_receiver
from tests.support.samples import OPINION, case_body, consent_body, pdf, upload
from tests.support.stack import ServiceStack
from tests.support.vmui import draw_dashboards

pytestmark = pytest.mark.infra

CHROMIUM = os.environ.get("AVIS_CHROMIUM") or shutil.which("chromium") or ""
SPECIALTY = "oncology"
HOOK_TYPES = ["avis.case.submitted.v1", "avis.review.assigned.v1", "avis.report.ready.v1"]
STAGES = ("submitted_to_assigned", "assigned_to_completed", "completed_to_report_ready",
          "report_ready_to_notified")  # fmt: skip
# What the journey moves, per dashboard: counters and gauges it must raise.
MOVES = {
    "flow": [
        'sum(avis_events_published_total{topic="case-submitted"})',
        'sum(avis_events_published_total{topic="review-assigned"})',
        'sum(avis_events_published_total{topic="review-completed"})',
        'sum(avis_events_published_total{topic="report-ready"})',
        'sum(avis_notify_attempts_total{outcome="sent"})',
        *(f'sum(avis_stage_seconds_count{{stage="{s}"}})' for s in STAGES),
        "sum(avis_events_consumed_total)",
    ],
    "lateness": [
        f'max(avis_review_overdue_by_specialty{{specialty="{SPECIALTY}"}})',
        "max(avis_review_overdue_assignments)",
        "max(avis_information_requests_waiting)",
    ],
    "delivery": [
        'sum(avis_webhook_partner_attempts_total{outcome="sent"})',
        'sum(avis_webhook_partner_attempts_total{outcome="transient"})',
        "sum(avis_notify_webhook_dead_total)",
        "sum(avis_notify_subscriptions_disabled_total)",
        'sum(avis_notify_attempts_total{channel="email"})',
        "sum(avis_notify_queued_total)",
    ],
    "health": [
        'sum(avis_http_requests_total{route!~"/metrics|/readyz|/healthz"})',
        'sum(avis_http_request_seconds_count{route!~"/metrics|/readyz|/healthz"})',
    ],
}


@dataclass
class Observed:
    """The journey's stack, its metrics store and what the moved series read before and after."""

    stack: ServiceStack
    store: MetricsStore
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
async def observed() -> AsyncIterator[Observed]:
    env = service_env(
        AVIS_REVIEW_SLA_ROUTINE_DAYS="0.0003",  # about 26 s: the case left alone becomes overdue
        AVIS_REVIEW_SLA_URGENT_DAYS="0.0003",
        AVIS_REVIEW_OVERDUE_REFRESH_SECONDS="1",
        AVIS_NOTIFY_WEBHOOK_RETRY_BASE_SECONDS="0.3",
        AVIS_NOTIFY_WEBHOOK_RETRY_MAX_DELAY_SECONDS="0.6",
        AVIS_NOTIFY_WEBHOOK_RETRY_WINDOW_SECONDS="3",
        AVIS_NOTIFY_WEBHOOK_DISABLE_AFTER_FAILURES="3",
    )
    with tempfile.TemporaryDirectory(prefix="avis-dashboards-") as state:
        async with observed_stack(Path(state), env=env) as (stack, store):
            seen = Observed(stack, store)
            await eventually(lambda: {"intake", "review", "reports", "notify", "lag"}
                             <= store.scraped(), timeout=30)  # fmt: skip
            seen.before = {q: store.total(q) for qs in MOVES.values() for q in qs}
            await journey(stack)

            def moved() -> bool:
                seen.after = {q: store.total(q) for q in seen.before}
                return all(seen.after[q] > seen.before[q] for q in seen.before)

            with contextlib.suppress(AssertionError):  # the test below names what did not
                await eventually(moved, timeout=90, interval=1)

            async with stack.client("review", "coord-dash", "coordinator") as coordinator:

                async def every_panel_answers() -> bool:
                    # A rate needs a series born during the journey to grow between two of
                    # its scrapes: one request a check, so the requests' histograms grow after
                    # their first scrape however fast the journey ran (a quick one made each
                    # of its requests before it, and the p95 panel stayed empty).
                    await coordinator.get("/v1/assignments")
                    return all(
                        any(s["value"][1] != "NaN" for e in exprs for s in store.query(e))
                        for _, _, exprs in panels()
                    )

                with contextlib.suppress(AssertionError):  # the tests below name what did not
                    await eventually(every_panel_answers, timeout=60, interval=2)
            yield seen


async def journey(stack: ServiceStack) -> None:
    """Three cases by two partners: one all the way, one left past its due date, one whose
    specialist asked for more information, left unanswered; the second partner's endpoint
    refuses every delivery."""
    async with hook_receiver() as (hooks, port):
        hooks.fail_first["/good"] = 1  # a transient failure, then sent
        hooks.answer["/bad"] = 500  # failing for good: deliveries die, the subscription is off
        good, bad = unique("insurer"), unique("insurer")
        reviewer = unique("onc")
        async with stack.client("review", "coord-dash", "coordinator") as coordinator:
            added = await coordinator.post("/v1/reviewers", json={
                "id": reviewer, "display_name": "Reviewer", "specialties": [SPECIALTY],
                "languages": ["fr", "en"], "institution_code": "HOSP-DASH", "capacity": 5,
            })  # fmt: skip
            assert added.status_code == 201, added.text
            cases = {}
            for partner, path in ((good, "/good"), (bad, "/bad")):
                async with stack.client("notify", f"{partner}-api", "partner", partner) as p:
                    url = f"http://127.0.0.1:{port}{path}"
                    made = await p.post(
                        "/v1/subscriptions", json={"url": url, "event_types": HOOK_TYPES}
                    )
                    assert made.status_code == 201, made.text
                cases[partner] = await file_case(stack, partner)
            asked = await file_case(stack, good)

            async def assignment(case_id: str) -> dict[str, Any] | None:
                page = await coordinator.get("/v1/assignments", params={"case_id": case_id})
                items = page.json()["items"]
                return dict(items[0]) if items else None

            done = await eventually(lambda: assignment(cases[good]), timeout=60)
            await eventually(lambda: assignment(cases[bad]), timeout=60)
            waiting = await eventually(lambda: assignment(asked), timeout=60)
        async with stack.client("review", reviewer, "reviewer") as r:
            url = f"/v1/assignments/{done['id']}"
            assert (await r.post(f"{url}/accept")).status_code == 200
            answered = await r.post(f"{url}/opinion", json=OPINION)
            assert answered.status_code == 201, answered.text
            url = f"/v1/assignments/{waiting['id']}"
            assert (await r.post(f"{url}/accept")).status_code == 200
            question = {"text": "The scan's full report, please."}
            request = await r.post(f"{url}/information-requests", json=question)
            assert request.status_code == 201, request.text
        async with stack.client("notify", "coord-dash", "coordinator") as coordinator:

            async def report_email_sent() -> bool:
                page = await coordinator.get("/v1/notifications", params={"case_id": cases[good]})
                items = page.json().get("items", [])
                return any(n["template"] == "report_ready" and n["status"] == "sent" for n in items)

            await eventually(report_email_sent, timeout=90)
        await eventually(lambda: len(hooks.at("/good", 204)) >= 3, timeout=60)
        await eventually(lambda: len(hooks.at("/bad")) >= 3, timeout=60)


async def file_case(stack: ServiceStack, partner: str) -> str:
    """A partner files a case for its patient, who consents to sharing with it."""
    body = case_body(specialty=SPECIALTY, partner_reference=unique("INS"))
    body["patient"] = {**body["patient"], "email": f"{unique('patient')}@exemple.fr"}
    async with stack.client("intake", f"{partner}-api", "partner", partner) as filer:
        draft = await filer.post("/v1/cases", json=body)
        assert draft.status_code == 201, draft.text
        case_id = str(draft.json()["case_id"])
        stored = await filer.post(f"/v1/cases/{case_id}/documents", **upload(pdf()))
        assert stored.status_code == 201, stored.text
        submitted = await filer.post(
            f"/v1/cases/{case_id}/submit", json=consent_body("review", "share_with_partner")
        )
        assert submitted.status_code == 200, submitted.text
    return case_id


def test_the_journey_moves_every_dashboards_series(observed: Observed) -> None:
    still = {
        board: [q for q in queries if observed.after[q] <= observed.before[q]]
        for board, queries in MOVES.items()
    }
    assert not any(still.values()), {b: qs for b, qs in still.items() if qs}


@pytest.mark.parametrize(("board", "panel", "exprs"), panels())
def test_every_panel_shows_data(
    observed: Observed, board: str, panel: str, exprs: list[str]
) -> None:
    # As vmui asks: an instant query per expression; a panel shows "No data" when none of its
    # expressions returns a series with a number.
    answers = {e: observed.store.query(e) for e in exprs}
    numbers = [s for series in answers.values() for s in series if s["value"][1] != "NaN"]
    if not numbers:  # say which of its metrics the store holds at all, and from which job
        names = sorted(set(re.findall(r"avis_[a-z_]+", " ".join(exprs))))
        held = {n: observed.store.query(f"count by (job) ({n})") for n in names}
        pytest.fail(f"{board} / {panel}: no data\n{answers}\nseries held: {held}")
    # `x or vector(0)` beside series with labels draws an unnamed line of its own.
    unnamed = [e for e, series in answers.items() if len(series) > 1 and any(
        not s["metric"] for s in series)]  # fmt: skip
    assert not unnamed, f"{board} / {panel}: an unnamed series beside named ones: {unnamed}"


@pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed")
async def test_vmui_draws_every_panel_of_every_dashboard(observed: Observed) -> None:
    keep = os.environ.get("AVIS_SCREENSHOTS", "")
    drawn = await draw_dashboards(
        observed.store.url, chromium=CHROMIUM, screenshots=Path(keep) if keep else None
    )
    expected = {}
    for board, panel, _ in panels():
        expected.setdefault(board, []).append(panel)
    for board, titles in expected.items():
        seen = drawn[board]
        assert seen.empty == [], f"{board}: 'No data' in {seen.empty}"
        assert sorted(seen.charts) == sorted(titles), f"{board}: drawn {seen.charts}"
