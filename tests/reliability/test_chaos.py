"""The fault run, small and seeded: a few dozen cases through the four services as processes
while each is SIGKILLed, the broker and the store are each stopped and started, the SMTP sink
and one partner's endpoint fail for a while; then nothing is lost, nothing done twice
(`make chaos` runs the full size; see tests/reliability/chaos.py)."""

import os

import pytest

from tests.reliability.chaos import Plan, report, run, write_results

pytestmark = pytest.mark.infra


async def test_nothing_lost_nothing_done_twice_under_faults() -> None:
    plan = Plan(
        cases=int(os.environ.get("CHAOS_SMALL_CASES", "24")),
        seed=int(os.environ.get("CHAOS_SEED", "7")),
        reviewers=4,
        capacity=(2, 4),
        filers=4,
        fault_seconds=90.0,
        kills_per_service=2,
        broker_down_seconds=6.0,
        store_down_seconds=5.0,
        smtp_fail_seconds=15.0,
        partner_fail_seconds=20.0,
        quiet_timeout=240.0,
    )
    figures = await run(plan)
    print(report(figures))
    write_results(figures)
    assert sum(figures.kills.values()) >= 4, figures.kills
    assert figures.broker_restarts == figures.store_restarts == 1
    assert figures.events_published > 0
    assert figures.problems == [], report(figures)
