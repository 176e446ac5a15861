"""Log redaction: sensitive keys never reach a rendered line."""

import json

import pytest
import structlog

from avis.shared.observability import configure_logging, trace_id_of


def test_sensitive_keys_are_redacted_at_any_depth(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", fmt="json")
    structlog.get_logger().info(
        "case drafted",
        case_id="c-1",
        email="eloise@example.org",
        patient={"given_name": "Éloïse", "family_name": "Dupré", "language": "fr"},
        items=[{"clinical_summary": "douleur thoracique"}],
    )
    out = capsys.readouterr().err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["case_id"] == "c-1"
    assert line["service"] == "test"
    for secret in ("eloise@example.org", "Éloïse", "Dupré", "douleur", "\\u00c9lo"):
        assert secret not in out


def test_trace_id_of_traceparent() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_of(tp) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of("garbage") == ""


def test_logged_exceptions_keep_types_and_frames_but_not_messages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test", fmt="json")
    try:
        raise ValueError("patient Éloïse Dupré has angina")
    except ValueError:
        structlog.get_logger().exception("failed")
    out = capsys.readouterr().err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["exception"][0]["type"] == "ValueError"
    assert "test_observability.py" in line["exception"][0]["frames"][-1]
    assert "angina" not in out and "Dupr" not in out
