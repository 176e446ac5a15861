"""Released event schemas: the current models stay readable both ways, or the change is a `.vN`."""

import json
import pathlib
import re
import shutil
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, create_model

from avis.shared.events import ReportReady, write_docs
from avis.shared.released import (
    RETIRED,
    Incompatible,
    Schema,
    check,
    current_schemas,
    incompatibilities,
    release,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]
RELEASED = ROOT / "contracts" / "released"


class Kind(StrEnum):
    A = "a"
    B = "b"


class KindPlus(StrEnum):
    A = "a"
    B = "b"
    C = "c"


class KindLess(StrEnum):
    A = "a"


class Inner(BaseModel):
    code: str
    note: str | None = None


class InnerLess(BaseModel):
    note: str | None = None


class InnerMore(Inner):
    origin: str | None = None


# The released payload of the synthetic cases below; each case changes some of its fields.
BASE: dict[str, Any] = {
    "case_id": (str, ...),
    "kind": (Kind, ...),
    "count": (int, ...),
    "tags": (list[str], ...),
    "inner": (Inner, ...),
    "comment": (str | None, None),
}


def schema(extra: Literal["ignore", "forbid"] = "ignore", **changes: Any) -> Schema:
    """The JSON Schema of the base payload with some fields changed (None removes one)."""
    fields = {name: spec for name, spec in {**BASE, **changes}.items() if spec is not None}
    model = create_model("Payload", __config__=ConfigDict(extra=extra), **fields)
    result: Schema = json.loads(json.dumps(model.model_json_schema()))
    return result


REFUSED = {
    "removed required field": ({"count": None}, "count: removed, but released readers require"),
    "narrowed type: string to enum": (
        {"case_id": (Literal["c-1", "c-2"], ...)},
        "case_id: narrowed to",
    ),
    "narrowed type: a bound": ({"count": (Annotated[int, Field(ge=0)], ...)}, "count: minimum"),
    "narrowed type: null refused": ({"comment": (str, "")}, "comment: anyOf changed"),
    "narrowed item type": ({"tags": (list[Kind], ...)}, "tags[]: narrowed to"),
    "widened type: integer to number": ({"count": (float, ...)}, "'integer' -> 'number'"),
    "widened type: a union": ({"count": (int | str, ...)}, "count: anyOf changed"),
    "added enum value": ({"kind": (KindPlus, ...)}, "kind: enum values added ['c']"),
    "removed enum value": ({"kind": (KindLess, ...)}, "kind: enum values removed ['b']"),
    "new required field": ({"due_at": (datetime, ...)}, "due_at: new and required"),
    "optional made required": ({"comment": (str | None, ...)}, "comment: made required"),
    "required made optional": ({"count": (int | None, None)}, "count: made optional"),
    "nested required field removed": ({"inner": (InnerLess, ...)}, "inner.code: removed"),
}
ACCEPTED = {
    "new optional field": {"priority": (int | None, None)},
    "removed optional field": {"comment": None},
    "new optional nested field": {"inner": (InnerMore, ...)},
    "annotations only": {"count": (int, Field(description="How many.", title="N", examples=[1]))},
}


@pytest.mark.parametrize("changes", REFUSED.values(), ids=REFUSED.keys())
def test_check_refuses_what_a_reader_cannot_read(changes: tuple[dict[str, Any], str]) -> None:
    fields, expected = changes
    problems = incompatibilities(schema(), schema(**fields))
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("fields", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_check_accepts_what_every_reader_can_read(fields: dict[str, Any]) -> None:
    assert incompatibilities(schema(), schema(**fields)) == []


def test_fields_cannot_come_or_go_where_unknown_fields_are_refused() -> None:
    added = incompatibilities(schema("forbid"), schema("forbid", priority=(int | None, None)))
    removed = incompatibilities(schema("forbid"), schema("forbid", comment=None))
    assert added == ["priority: new, but released readers refuse unknown fields"]
    assert removed == ["comment: removed, but the current model refuses it on old events"]


def test_current_models_match_the_released_schemas() -> None:
    assert check(RELEASED) == [], "a change no reader can read needs a new .vN event type"


def with_report_ready(model: type[BaseModel]) -> dict[str, Schema]:
    """The current schemas, with `avis.report.ready.v1` read from `model` instead."""
    current = current_schemas()
    current["avis.report.ready.v1"] = json.loads(json.dumps(model.model_json_schema()))
    return current


def test_the_released_baseline_refuses_a_removed_field() -> None:
    kept = {n: (f.annotation, f) for n, f in ReportReady.model_fields.items() if n != "report_url"}
    without_url = create_model("ReportReady", **kept)  # type: ignore[call-overload]
    assert check(RELEASED, with_report_ready(without_url)) == [
        "avis.report.ready.v1: report_url: removed, but released readers require it"
    ]


def test_the_released_baseline_refuses_a_narrowed_type() -> None:
    class Format(StrEnum):
        PDF = "pdf"

    class NarrowedReportReady(ReportReady):
        formats: list[Format]  # type: ignore[assignment]

    assert check(RELEASED, with_report_ready(NarrowedReportReady)) == [
        "avis.report.ready.v1: formats[]: narrowed to ['pdf']:"
        " old events on the topic may carry others"
    ]


@pytest.fixture
def released(tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of the released schemas, free to change."""
    return pathlib.Path(shutil.copytree(RELEASED, tmp_path / "released"))


def test_a_released_type_cannot_disappear_unless_retired(released: pathlib.Path) -> None:
    current = current_schemas()
    del current["avis.case.withdrawn.v1"]
    assert check(released, current) == [
        "avis.case.withdrawn.v1: released, but no model has it any more; a reader may still"
        f" expect it (list it in {RETIRED} once no reader does)"
    ]
    (released / RETIRED).write_text("avis.case.withdrawn.v1  # every reader reads .v2\n")
    assert check(released, current) == []
    assert check(released) == [
        f"avis.case.withdrawn.v1: listed in {RETIRED}, yet a model still has it"
    ]


def test_a_new_version_is_not_compared_until_released(released: pathlib.Path) -> None:
    current = current_schemas()
    current["avis.report.ready.v2"] = schema()  # nothing in common with .v1: a new type
    assert check(released, current) == []
    release(released, current)
    assert json.loads((released / "avis.report.ready.v2.json").read_text()) == schema()


def test_release_refuses_an_incompatible_change_and_writes_nothing(released: pathlib.Path) -> None:
    before = {path.name: path.read_text() for path in released.iterdir()}
    current = current_schemas()
    ready = current["avis.report.ready.v1"]
    ready["properties"]["renderer"] = {"type": "string"}
    ready["required"].append("renderer")
    with pytest.raises(Incompatible, match="renderer: new and required"):
        release(released, current)
    assert {path.name: path.read_text() for path in released.iterdir()} == before


def test_make_asyncapi_never_writes_the_released_schemas(tmp_path: pathlib.Path) -> None:
    written = set(write_docs(tmp_path))
    assert written == {tmp_path / "asyncapi.json", *(tmp_path / "schemas").iterdir()}
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^asyncapi:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe is not None and recipe.group(1).endswith("--write docs")
    assert not RELEASED.is_relative_to(ROOT / "docs")
    assert "--release contracts/released" in makefile
