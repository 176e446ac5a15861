"""The report's texts in each language, from the gettext catalogues a translator edits.

`locales/<lang>/LC_MESSAGES/reports.po` is the only source, loaded by `avis.shared.i18n` (read
with Babel and compiled in memory when first needed: no `.mo` to rebuild, commit or forget).
Message ids are stable keys (`heading.diagnosis`), so every language, English included, is a
translation a translator owns, and a key left untranslated is caught by the tests rather than
shown as source text. Dates are formatted with Babel under the catalogue's own locale and CLDR
pattern.
"""

import functools
import pathlib
from dataclasses import dataclass
from datetime import date

from babel import Locale
from babel.dates import format_date
from babel.messages.catalog import Catalog
from babel.numbers import format_decimal
from babel.support import Translations

from avis.shared import i18n
from avis.shared.events import Language
from avis.shared.i18n import MissingText

# MissingText is raised here too: callers catch it from this module.
__all__ = ["DOMAIN", "LOCALES", "MissingText", "Texts", "read_catalogue", "texts"]

LOCALES = pathlib.Path(__file__).resolve().parent / "locales"
DOMAIN = "reports"


def read_catalogue(language: Language) -> Catalog:
    """The parsed `.po` catalogue of `language`."""
    return i18n.read_catalogue(LOCALES, DOMAIN, language.value)


@dataclass(frozen=True)
class Texts:
    """One language's texts and formats."""

    language: Language
    translations: Translations
    locale: Locale

    def __call__(self, key: str, **values: object) -> str:
        """The text of `key`, with `%(name)s` placeholders filled from `values`."""
        try:
            return i18n.translate(self.translations, key, **values)
        except MissingText:
            raise MissingText(f"{self.language.value} catalogue does not translate {key}") from None

    def date(self, value: date) -> str:
        """A date as this language writes it (the catalogue's CLDR pattern)."""
        return format_date(value, format=self("format.date"), locale=self.locale)

    def number(self, value: int) -> str:
        """A number as this language writes it."""
        return format_decimal(value, locale=self.locale)


@functools.cache
def texts(language: Language) -> Texts:
    """The texts of `language`, compiled from its `.po` once per process."""
    translations = i18n.compile_catalogue(LOCALES, DOMAIN, language.value)
    locale = Locale.parse(i18n.translate(translations, "format.locale"))
    return Texts(language, translations, locale)
