"""`mongo.AsText`: a nested model written as one JSON text and read back from either form."""

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from avis.shared.mongo import AsText, Stored


class Inner(BaseModel):
    rule: str
    at: datetime
    names: list[str]


class Doc(Stored):
    id: str = Field(alias="_id")
    inner: AsText[Inner] | None = None


INNER = Inner(rule="least_load", at=datetime(2026, 12, 3, 9, 30, tzinfo=UTC), names=["a", "b"])


def test_written_as_one_text_and_read_back() -> None:
    written = Doc(id="d", inner=INNER).to_doc()
    assert isinstance(written["inner"], str)
    assert Doc.model_validate(written).inner == INNER


def test_a_document_written_nested_before_still_reads() -> None:
    nested = {"_id": "d", "inner": INNER.model_dump()}
    assert Doc.model_validate(nested).inner == INNER


def test_absent_stays_absent() -> None:
    assert "inner" not in Doc(id="d").to_doc()
    assert Doc.model_validate({"_id": "d"}).inner is None
