"""The event contract: generated documents are current, the envelope decodes and refuses."""

import json
import pathlib
from datetime import UTC, datetime

import pytest

from avis.shared.envelope import MAX_EVENT_BYTES, Event, PoisonMessage, new_event_id
from avis.shared.events import (
    EVENT_TYPES,
    Assessment,
    CaseWithdrawn,
    CompletedOpinion,
    OpinionDiagnosis,
    ReviewCompleted,
    Specialty,
    asyncapi,
    json_schemas,
)
from avis.shared.sealing import Keyring, generate_key
from avis.shared.settings import CommonSettings
from avis.shared.topics import AUDIT_ANCHORED, TOPICS, dlq, inbox_days, topic_specs

DOCS = pathlib.Path(__file__).resolve().parents[3] / "docs"


def test_committed_asyncapi_is_generated_from_the_models() -> None:
    committed = json.loads((DOCS / "asyncapi.json").read_text())
    assert committed == json.loads(json.dumps(asyncapi())), "run `make asyncapi` and commit docs/"


def test_committed_json_schemas_are_current() -> None:
    for ce_type, schema in json_schemas().items():
        committed = json.loads((DOCS / "schemas" / f"{ce_type}.json").read_text())
        assert committed == json.loads(json.dumps(schema)), f"{ce_type}: run `make asyncapi`"


def test_every_topic_has_its_events_and_every_type_is_versioned() -> None:
    assert {topic for topic, _ in EVENT_TYPES.values()} == {*TOPICS, AUDIT_ANCHORED}
    assert all(t.startswith("avis.") and t.rsplit(".", 1)[1].startswith("v") for t in EVENT_TYPES)


def test_service_document_lists_only_its_operations() -> None:
    doc = asyncapi("intake", sends=("case-submitted",), receives=("report-ready",))
    assert set(doc["operations"]) == {"send-case-submitted", "receive-report-ready"}
    assert set(doc["channels"]) == {"case-submitted", "report-ready"}


def event() -> Event:
    return Event.new(CaseWithdrawn(case_id="c-1", withdrawn_at=datetime.now(UTC)), "/avis/test")


def test_envelope_round_trip_in_binary_mode() -> None:
    original = event()
    headers = {k: v.encode() for k, v in original.headers().items()}
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/json"
    decoded = Event.from_kafka(original.topic, headers, original.body())
    assert decoded.id == original.id
    assert decoded.time == original.time
    assert decoded.payload() == original.payload()


def test_event_id_can_be_chosen_before_sealing() -> None:
    chosen = new_event_id()
    payload = CaseWithdrawn(case_id="c-1", withdrawn_at=datetime.now(UTC))
    assert Event.new(payload, "/avis/test", event_id=chosen).id == chosen


def test_readers_ignore_unknown_fields() -> None:
    original = event()
    body = json.dumps({**original.data, "added_later": 1}).encode()
    headers = {k: v.encode() for k, v in original.headers().items()}
    assert Event.from_kafka(original.topic, headers, body).payload() == original.payload()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ce_type": b"avis.case.submitted.v9"}, "unknown event type"),
        ({"ce_specversion": b"0.3"}, "unsupported CloudEvents version"),
        ({"ce_id": None}, "missing headers ce_id"),
    ],
)
def test_poison_headers(change: dict[str, bytes | None], reason: str) -> None:
    original = event()
    headers: dict[str, bytes] = {k: v.encode() for k, v in original.headers().items()}
    for key, value in change.items():
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    with pytest.raises(PoisonMessage, match=reason):
        Event.from_kafka(original.topic, headers, original.body())


def test_invalid_payload_is_poison_without_echoing_input() -> None:
    original = event()
    headers = {k: v.encode() for k, v in original.headers().items()}
    body = json.dumps({"case_id": "c-1", "withdrawn_at": "Éloïse Dupré"}).encode()
    with pytest.raises(PoisonMessage) as info:
        Event.from_kafka(original.topic, headers, body)
    assert "withdrawn_at" in str(info.value)
    assert "Éloïse" not in str(info.value)


def test_a_header_without_a_value_counts_as_missing_and_one_not_utf8_is_poison() -> None:
    original = event()
    headers: dict[str, bytes | None] = {k: v.encode() for k, v in original.headers().items()}
    with pytest.raises(PoisonMessage, match="missing headers ce_id"):
        Event.from_kafka(original.topic, headers | {"ce_id": None}, original.body())
    with pytest.raises(PoisonMessage, match="header 'ce_source' is not UTF-8"):
        Event.from_kafka(original.topic, headers | {"ce_source": b"\xff"}, original.body())


def test_a_body_over_the_limit_is_poison_before_it_is_parsed() -> None:
    original = event()
    headers = {k: v.encode() for k, v in original.headers().items()}
    body = b"[" + b" " * MAX_EVENT_BYTES + b"]"
    with pytest.raises(PoisonMessage, match="oversize payload"):
        Event.from_kafka(original.topic, headers, body)


def test_the_largest_opinion_review_can_write_fits_under_the_limit() -> None:
    # Every section of the opinion at review's limit (20,000 characters), in characters of
    # four UTF-8 bytes each: the event must still be read, never dead-lettered as oversize.
    keyring = Keyring.from_settings(CommonSettings(sealing_keys=f"k1:{generate_key()}"))  # type: ignore[arg-type]
    text = "\U0001f600" * 20_000
    opinion = CompletedOpinion(
        diagnosis=OpinionDiagnosis(assessment=Assessment.REVISED, explanation=text),
        imaging_and_lab_review=text,
        alternative_pathways=text,
        risk_benefit=text,
        further_tests=text,
        summary_for_patient=text,
        version=1,
        reviewer_display_name="R" * 200,
    )
    event_id = new_event_id()
    payload = ReviewCompleted(
        case_id="c-1",
        assignment_id="c-1-0001",
        reviewer_id="r-1",
        specialty=Specialty.ONCOLOGY,
        version=1,
        completed_at=datetime.now(UTC),
        opinion=keyring.seal_json(opinion, aad=event_id),
    )
    largest = Event.new(payload, "/avis/review", event_id=event_id)
    headers = {k: v.encode() for k, v in largest.headers().items()}
    assert len(largest.body()) < MAX_EVENT_BYTES
    assert Event.from_kafka(largest.topic, headers, largest.body()).id == event_id


def test_processed_markers_outlive_every_event_the_broker_can_deliver_again() -> None:
    kept_ms = inbox_days(CommonSettings(sealing_keys="", jwt_secret="")) * 86_400_000
    # Dead letters included: a replayed one reaches every group of its topic again.
    retained = {
        s.name: int(s.config["retention.ms"]) for s in topic_specs() if s.name != AUDIT_ANCHORED
    }
    assert set(retained) == {*TOPICS, *(dlq(t) for t in TOPICS)}
    assert all(kept_ms > ms for ms in retained.values()), (kept_ms, retained)
