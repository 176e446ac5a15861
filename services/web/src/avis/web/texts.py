"""The pages' words: `locales/<lang>/LC_MESSAGES/web.po`, read through `avis.shared.i18n`."""

from __future__ import annotations

import functools
import pathlib
from datetime import UTC, datetime, tzinfo

from babel.dates import format_datetime
from babel.numbers import format_decimal
from babel.support import Translations

from avis.shared import i18n
from avis.shared.events import Language

LOCALES = pathlib.Path(__file__).resolve().parent / "locales"
DOMAIN = "web"
# Day, month in words, year, 24-hour time and the zone: unambiguous in both languages.
WHEN = "d MMM y, HH:mm z"


@functools.cache
def translations(language: Language) -> Translations:
    """The compiled catalogue of `language` (once per process)."""
    return i18n.compile_catalogue(LOCALES, DOMAIN, language.value)


def keys(language: Language) -> dict[str, str]:
    """Every key of a catalogue and its text (for checks)."""
    return i18n.catalogue_keys(LOCALES, DOMAIN, language.value)


class Texts:
    """The words of one page, in one language."""

    def __init__(self, language: Language, zone: tzinfo = UTC) -> None:
        self.language = language
        self.zone = zone
        self._translations = translations(language)

    def __call__(self, key: str, **values: object) -> str:
        """The text of `key`; a key the catalogue lacks is a fault (MissingText), never shown."""
        return i18n.translate(self._translations, key, **values)

    def when(self, moment: datetime) -> str:
        """A date and time as the language writes it, in the person's time zone and saying
        which (UTC when the browser has not told it)."""
        return format_datetime(moment, WHEN, tzinfo=self.zone, locale=self.language.value)

    def kib(self, size: int) -> str:
        """A size in KiB with one decimal, as the language writes numbers."""
        return format_decimal(round(size / 1024, 1), "#,##0.0", locale=self.language.value)
