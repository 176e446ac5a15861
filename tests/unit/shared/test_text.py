"""The platform's text rules: patterns stated in the schema, refusals said in words."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from avis.shared.text import CODE_PATTERN, NAME_PATTERN, TEXT_PATTERN, Code, Name, Text


class Form(BaseModel):
    text: Text = Field("x", max_length=50)
    name: Name = "x"
    code: Code = "x"


def refusal(**fields: str) -> str:
    with pytest.raises(ValidationError) as refused:
        Form(**fields)
    (error,) = refused.value.errors()
    return str(error["msg"])


@pytest.mark.parametrize("blank", ["", " ", "\n\t ", "\u00a0\u2003"])
def test_blank_text_is_called_blank(blank: str) -> None:
    assert refusal(text=blank) == "is blank: it must contain visible text"
    if "\n" not in blank and "\t" not in blank:  # a name is one line: those are refused as such
        assert refusal(name=blank) == "is blank: it must contain visible text"


def test_control_characters_are_named_not_quoted_as_a_pattern() -> None:
    assert "control characters" in refusal(text="a\x00b")
    assert "line breaks" in refusal(name="two\nlines")
    assert refusal(code="-x").startswith("must be 1 to 64 letters")
    assert Form(text="line one\n\tline two").text == "line one\n\tline two"


def test_the_schema_still_declares_the_patterns() -> None:
    properties = Form.model_json_schema()["properties"]
    assert properties["text"]["pattern"] == TEXT_PATTERN
    assert properties["text"]["maxLength"] == 50
    assert properties["name"]["pattern"] == NAME_PATTERN
    assert properties["code"]["pattern"] == CODE_PATTERN


@given(st.text(max_size=30))
def test_the_words_and_the_declared_pattern_agree(value: str) -> None:
    """Whatever the validator takes, the declared pattern takes, and the other way round."""
    for field, pattern in (("text", TEXT_PATTERN), ("name", NAME_PATTERN)):
        try:
            Form(**{field: value})
            accepted = True
        except ValidationError:
            accepted = False
        declared = re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is not None
        assert accepted == declared, (field, value)
