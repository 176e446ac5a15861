"""International review: the report says in both languages that it was translated, by whom, and
from which language."""

from avis.reports.i18n import texts
from avis.reports.rules import translation_statement
from avis.shared.events import Language


def test_the_statement_in_the_patients_language_then_the_specialists() -> None:
    french, english = translation_statement(
        [texts(Language.FR), texts(Language.EN)],
        from_language=Language.EN,
        to_language=Language.FR,
        translator="Camille Martin",
    )
    assert "traduction" in french
    assert "en anglais" in french
    assert "en français" in french
    assert "Camille Martin" in french
    assert "translation" in english
    assert "in English" in english
    assert "into French" in english
    assert "Camille Martin" in english


def test_every_language_names_every_language() -> None:
    for language in Language:
        for named in Language:
            assert texts(language)(f"language.{named.value}")
