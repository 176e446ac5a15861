"""The text rules every API shares: free text, names, codes, ids.

Free text that reaches a human carries at least one visible character and no control
characters (C0, DEL, C1); multi-line text also allows tab, line feed and carriage return. The
OpenAPI document states each rule as a `pattern`, so a client generating requests meets the
same rules as the server, but a refusal says what is wrong in words ("is blank", "contains a
control character") instead of quoting the regular expression.

    summary: Text = Field(max_length=20_000)   # multi-line free text
    name: Name                                 # one line of free text
    code: Code                                 # e.g. an institution code
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Characters refused anywhere (C0 but tab/LF/CR, DEL, C1) and on one line (all of C0).
_TEXT_CTL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_LINE_CTL = r"\x00-\x1f\x7f-\x9f"
TEXT_PATTERN = rf"^[^{_TEXT_CTL}]*[^\s{_TEXT_CTL}][^{_TEXT_CTL}]*$"
NAME_PATTERN = rf"^[^{_LINE_CTL}]*[^\s{_LINE_CTL}][^{_LINE_CTL}]*$"
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


@dataclass(frozen=True)
class Declares:
    """States `pattern` in the JSON Schema of a field whose validator checks it in words."""

    pattern: str

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The field's schema with the pattern it is held to."""
        json_schema = handler(schema)
        json_schema["pattern"] = self.pattern
        return json_schema


def _free_text(refused: str, what: str) -> Any:
    control = re.compile(f"[{refused}]")
    visible = re.compile(rf"[^\s{refused}]")

    def check(value: str) -> str:
        if control.search(value):
            raise PydanticCustomError("control_characters", f"must not contain {what}")
        if not visible.search(value):
            raise PydanticCustomError("blank", "is blank: it must contain visible text")
        try:
            value.encode("utf-8")  # stored and sealed as UTF-8; a lone surrogate cannot be
        except UnicodeEncodeError:
            raise PydanticCustomError("not_unicode", "must be valid Unicode text") from None
        return value

    return AfterValidator(check)


def must_match(pattern: str, expected: str) -> Any:
    """A validator refusing what `pattern` does not match with "must be <expected>"; pair it
    with `Declares(pattern)` so the schema still states the pattern:

        Phone = Annotated[str, must_match(PHONE, "a phone number"), Declares(PHONE)]
    """
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise PydanticCustomError("pattern_mismatch", f"must be {expected}")
        return value

    return AfterValidator(check)


# Multi-line free text (tab and line breaks allowed); give it a max_length where used.
Text = Annotated[
    str,
    _free_text(_TEXT_CTL, "control characters other than tab and line breaks"),
    Declares(TEXT_PATTERN),
]
# One line of free text, e.g. a person's name.
Name = Annotated[
    str, _free_text(_LINE_CTL, "control characters or line breaks"), Declares(NAME_PATTERN)
]
# A code: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64.
Code = Annotated[
    str,
    must_match(
        CODE_PATTERN, "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    ),
    Declares(CODE_PATTERN),
]
