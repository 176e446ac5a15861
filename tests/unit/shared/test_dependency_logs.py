"""What an operator reads while a dependency is away: one line when it goes, a reminder at a slow
pace while it stays away, one line when it is back; the Kafka client's own noise stays out."""

import logging

import pytest
from structlog.testing import capture_logs

from avis.shared.observability import configure_logging
from avis.shared.runtime import Dependency


def test_an_outage_is_one_line_a_slow_reminder_and_one_line_back() -> None:
    kafka = Dependency("Kafka", remind_seconds=60.0, bootstrap="127.0.0.1:9092")
    with capture_logs() as logs:
        kafka.observe(True, now=0.0)  # up: nothing to say
        for second in range(1, 150, 2):  # checked every 2 s for 149 s of outage
            kafka.observe(False, now=float(second))
        kafka.observe(True, now=150.0)
        kafka.observe(True, now=152.0)
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("Kafka not reachable", "warning"),
        ("Kafka still not reachable", "warning"),  # 61 s
        ("Kafka still not reachable", "warning"),  # 121 s
        ("Kafka reachable again", "info"),
    ]
    assert all(e["bootstrap"] == "127.0.0.1:9092" for e in logs)
    assert logs[1]["away_s"] == 60
    assert logs[-1]["away_s"] == 149.0


def test_each_outage_is_reported_on_its_own() -> None:
    store = Dependency("store", remind_seconds=60.0)
    with capture_logs() as logs:
        for now, up in [(0, False), (2, True), (4, False), (6, False), (8, True)]:
            store.observe(up, now=float(now), error="ServerSelectionTimeoutError")
    assert [e["event"] for e in logs] == [
        "store not reachable",
        "store reachable again",
        "store not reachable",
        "store reachable again",
    ]
    assert logs[0]["error"] == "ServerSelectionTimeoutError"


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_the_kafka_clients_own_lines_stay_out_unless_debugging(
    caplog: pytest.LogCaptureFixture, level: str, shown: bool
) -> None:
    configure_logging("test", fmt="json", level=level)
    try:
        logging.getLogger("aiokafka.conn").error('Unable connect to "127.0.0.1:9092"')
        logging.getLogger("aiokafka.consumer.group_coordinator").error(
            "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
        )
        logging.getLogger("elsewhere").error("another library's error")
        names = [r.name for r in caplog.records]
        assert ("aiokafka.conn" in names) is shown
        assert ("aiokafka.consumer.group_coordinator" in names) is shown
        assert "elsewhere" in names
    finally:
        configure_logging("test", fmt="json")
