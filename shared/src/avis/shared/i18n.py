"""Message catalogues: each service's texts in `locales/<lang>/LC_MESSAGES/<domain>.po`, read as
they are and compiled in memory when first needed, so there is no `.mo` to rebuild, commit or
forget, and none that could silently disagree with its `.po`."""

import io
import pathlib

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations


class MissingText(LookupError):
    """A key a catalogue does not translate: a gap to fill in the `.po`, never shown."""


def catalogue_path(locales: pathlib.Path, domain: str, language: str) -> pathlib.Path:
    """Where the catalogue of `language` lives under `locales`."""
    return locales / language / "LC_MESSAGES" / f"{domain}.po"


def read_catalogue(locales: pathlib.Path, domain: str, language: str) -> Catalog:
    """The parsed `.po` catalogue of `language`."""
    with catalogue_path(locales, domain, language).open("rb") as source:
        return read_po(source, locale=language, domain=domain)


def compile_catalogue(locales: pathlib.Path, domain: str, language: str) -> Translations:
    """The translations of `language`, compiled in memory from its `.po`."""
    compiled = io.BytesIO()
    write_mo(compiled, read_catalogue(locales, domain, language))
    compiled.seek(0)
    return Translations(compiled, domain=domain)


def catalogue_keys(locales: pathlib.Path, domain: str, language: str) -> dict[str, str]:
    """Every key of a catalogue and its text (for checks)."""
    catalogue = read_catalogue(locales, domain, language)
    return {str(m.id): str(m.string) for m in catalogue if m.id}


def translate(translations: Translations, key: str, **values: object) -> str:
    """The text of `key` with `%(name)s` placeholders filled in; MissingText when untranslated."""
    text = translations.gettext(key)
    if text == key:
        raise MissingText(f"the catalogue does not translate {key}")
    return text % values if values else text
