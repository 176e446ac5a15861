"""The rules of a FHIR `document` Bundle that structure validation does not check, written here
independently of the code that builds the Bundle (FHIR R4B, Bundle bdl-9/10/11 and section 3.3
"Documents"): a document has an identifier and a timestamp, its first entry is the Composition,
every entry has a full URL, and every reference inside it resolves to an entry of the Bundle."""

from collections.abc import Iterator
from typing import Any

from fhir.resources.R4B.bundle import Bundle


def references(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every `reference` value in a JSON tree, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield path, value
            else:
                yield from references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from references(value, f"{path}[{i}]")


def violations(bundle: dict[str, Any]) -> list[str]:
    """What is wrong with `bundle` as a FHIR R4B document; empty when it is a valid one."""
    problems: list[str] = []
    try:
        Bundle.model_validate(bundle)
    except ValueError as exc:
        problems.append(f"structure: {str(exc).splitlines()[0]}")
    if bundle.get("resourceType") != "Bundle":
        problems.append("not a Bundle")
    if bundle.get("type") != "document":
        problems.append("Bundle.type is not document")
    identifier = bundle.get("identifier") or {}
    if not identifier.get("system") or not identifier.get("value"):
        problems.append("bdl-9: a document needs Bundle.identifier with system and value")
    if not bundle.get("timestamp"):
        problems.append("bdl-10: a document needs Bundle.timestamp")
    entries = bundle.get("entry") or []
    if not entries or (entries[0].get("resource") or {}).get("resourceType") != "Composition":
        problems.append("bdl-11: the first entry of a document must be a Composition")
    urls = set()
    local = set()
    for i, entry in enumerate(entries):
        url = entry.get("fullUrl")
        resource = entry.get("resource") or {}
        if not url:
            problems.append(f"entry[{i}] has no fullUrl")
        else:
            if url in urls:
                problems.append(f"entry[{i}] repeats fullUrl {url}")
            urls.add(url)
        if resource.get("id"):
            local.add(f"{resource.get('resourceType')}/{resource['id']}")
    for path, target in references(entries):
        if target not in urls and target not in local:
            problems.append(f"{path} -> {target} does not resolve in the Bundle")
    if entries:
        composition = entries[0].get("resource") or {}
        for field in ("subject", "author", "title", "date", "status", "type"):
            if not composition.get(field):
                problems.append(f"Composition.{field} is missing")
        for j, section in enumerate(composition.get("section") or []):
            if not section.get("title") or not (section.get("text") or {}).get("div"):
                problems.append(f"Composition.section[{j}] needs a title and a narrative")
        if not composition.get("section"):
            problems.append("Composition has no section")
    return problems
