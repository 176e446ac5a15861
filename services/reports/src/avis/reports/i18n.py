"""The report's texts in each language, from the gettext catalogues a translator edits.

`locales/<lang>/LC_MESSAGES/reports.po` is the only source: it is read with Babel and compiled in
memory when first needed, so there is no `.mo` to rebuild, commit or forget (a build step CI would
have to run, and a binary that could silently disagree with its `.po`). Message ids are stable
keys (`heading.diagnosis`), so every language, English included, is a translation a translator
owns, and a key left untranslated is caught by the tests rather than shown as source text.
Dates are formatted with Babel under the catalogue's own locale and CLDR pattern.
"""

import functools
import io
import pathlib
from dataclasses import dataclass
from datetime import date

from babel import Locale
from babel.dates import format_date
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations

from avis.shared.events import Language

LOCALES = pathlib.Path(__file__).resolve().parent / "locales"
DOMAIN = "reports"


def catalogue_path(language: Language) -> pathlib.Path:
    """Where the catalogue of `language` lives."""
    return LOCALES / language.value / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalogue(language: Language) -> Catalog:
    """The parsed `.po` catalogue of `language`."""
    with catalogue_path(language).open("rb") as source:
        return read_po(source, locale=language.value, domain=DOMAIN)


class MissingText(LookupError):
    """A key the catalogue does not translate: a gap to fill in the `.po`, never shown."""


@dataclass(frozen=True)
class Texts:
    """One language's texts and formats."""

    language: Language
    translations: Translations
    locale: Locale

    def __call__(self, key: str, **values: object) -> str:
        """The text of `key`, with `%(name)s` placeholders filled from `values`."""
        text = self.translations.gettext(key)
        if text == key:
            raise MissingText(f"{self.language.value} catalogue does not translate {key}")
        return text % values if values else text

    def date(self, value: date) -> str:
        """A date as this language writes it (the catalogue's CLDR pattern)."""
        return format_date(value, format=self("format.date"), locale=self.locale)

    def number(self, value: int) -> str:
        """A number as this language writes it."""
        return format_decimal(value, locale=self.locale)


@functools.cache
def texts(language: Language) -> Texts:
    """The texts of `language`, compiled from its `.po` once per process."""
    catalogue = read_catalogue(language)
    compiled = io.BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    translations = Translations(compiled, domain=DOMAIN)
    locale = Locale.parse(translations.gettext("format.locale"))
    return Texts(language, translations, locale)
