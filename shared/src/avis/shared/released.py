"""Released event schemas, and the check that a change keeps them readable by every reader.

A released schema is what readers in production were built against. It is committed under
`contracts/released/` (one `<ce_type>.json` per event type and version, one `sealed.<Model>.json`
per sealed content) and written only by `make release-schemas`, never by `make asyncapi`.

The rule. Kafka keeps events for 28 days and each service is deployed alone, so within one `.vN`
both directions must hold: an existing reader (the released schema) reads the events the current
models write, AND a new reader (the current model) reads the old events still on the topic.
Readers ignore unknown fields, and a writer writes only its model's fields. Field by field:

- a new optional field passes (old readers ignore it; old events lack it and it has a default);
- a removed optional field passes (new readers ignore it; old readers never needed it);
- a removed required field fails (old readers need it);
- a new required field, or a field made required, fails (old events lack it);
- a field made optional fails (new events may lack it, or carry null);
- a kept field must accept exactly the same values: a widened type fails (an old reader refuses
  the new values), a narrowed type fails (a new reader refuses the old values); so do an added or
  a removed enum value, null newly allowed or refused, and any changed constraint or format;
- an object that refuses unknown fields (`additionalProperties: false`) takes no new field if it
  was released so, and drops no field if it is current so.

Annotations (title, description, examples, default, `x-` keys) may change freely. Anything else
is a new `.vN` type, which is not compared until it is released. A released type that no model
has any more fails, unless its name is listed in `RETIRED` beside the schemas.
"""

import argparse
import json
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any

from avis.shared.events import json_schemas, sealed_schemas

Schema = dict[str, Any]

RETIRED = "RETIRED"
ANNOTATIONS = {"title", "description", "examples", "default", "$comment", "deprecated"}
# Keywords compared by walking into them; every other keyword must be equal on both sides.
WALKED = {"$ref", "$defs", "properties", "required", "items", "additionalProperties", "enum"}
UNIONS = ("anyOf", "oneOf", "allOf")


class Incompatible(Exception):
    """A schema change that a reader of the released schema, or of the current one, cannot read."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class _Comparison:
    """One released schema against the current one: both roots, for their local `$ref`s."""

    released: Schema
    current: Schema
    problems: list[str] = field(default_factory=list)
    walking: set[tuple[str, str]] = field(default_factory=set)

    def value(self, path: str, old: Schema, new: Schema) -> None:
        """Compare the values a field accepts: they must be the same on both sides."""
        refs = (old.get("$ref", ""), new.get("$ref", ""))
        if refs in self.walking:  # a recursive model: this pair is already being compared
            return
        if any(refs):
            self.walking.add(refs)
        old, new = _resolve(old, self.released), _resolve(new, self.current)
        if "properties" in old or "properties" in new:
            self.fields(path, old, new)
        for key, label in (("items", "[]"), ("additionalProperties", "{}")):
            if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
                self.value(path + label, old[key], new[key])
            elif old.get(key) != new.get(key):
                self.say(path, f"{key} changed: the values accepted changed")
        self.union(path, old, new)
        self.enum(path, old.get("enum"), new.get("enum"))
        for key in sorted(_constraints(old) | _constraints(new)):
            if old.get(key) != new.get(key):
                self.say(path, f"{key} {old.get(key)!r} -> {new.get(key)!r}")
        self.walking.discard(refs)

    def fields(self, path: str, old: Schema, new: Schema) -> None:
        """Compare an object's fields by the rule of the module docstring."""
        was, now = old.get("properties", {}), new.get("properties", {})
        was_required, now_required = set(old.get("required", [])), set(new.get("required", []))
        for name in sorted(was.keys() | now.keys()):
            at = f"{path}.{name}" if path else name
            if name not in now:
                if name in was_required:
                    self.say(at, "removed, but released readers require it")
                elif new.get("additionalProperties") is False:
                    self.say(at, "removed, but the current model refuses it on old events")
            elif name not in was:
                if name in now_required:
                    self.say(at, "new and required, but old events on the topic lack it")
                elif old.get("additionalProperties") is False:
                    self.say(at, "new, but released readers refuse unknown fields")
            else:
                if name in was_required and name not in now_required:
                    self.say(at, "made optional, but released readers require it")
                if name in now_required and name not in was_required:
                    self.say(at, "made required, but old events on the topic may lack it")
                self.value(at, was[name], now[name])

    def union(self, path: str, old: Schema, new: Schema) -> None:
        """Compare `anyOf`/`oneOf`/`allOf` branch by branch, in order (null included)."""
        for key in UNIONS:
            was, now = old.get(key), new.get(key)
            if was is None and now is None:
                continue
            if was is None or now is None or len(was) != len(now):
                self.say(path, f"{key} changed: the types accepted changed")
                continue
            for i, (branch_was, branch_now) in enumerate(zip(was, now, strict=True)):
                self.value(f"{path}|{i}", branch_was, branch_now)

    def enum(self, path: str, was: list[Any] | None, now: list[Any] | None) -> None:
        """An enum keeps exactly its values: an added one breaks old readers, a removed one new."""
        if was is None and now is None:
            return
        if was is None or now is None:
            if was is None:
                self.say(path, f"narrowed to {now}: old events on the topic may carry others")
            else:
                self.say(path, f"widened beyond {was}: released readers refuse others")
            return
        added, removed = [v for v in now if v not in was], [v for v in was if v not in now]
        if added:
            self.say(path, f"enum values added {added}: released readers refuse them")
        if removed:
            self.say(path, f"enum values removed {removed}: old events on the topic carry them")

    def say(self, path: str, what: str) -> None:
        self.problems.append(f"{path or '(payload)'}: {what}")


def _resolve(schema: Schema, root: Schema) -> Schema:
    """The schema with a local `$ref` replaced by its definition (keys beside the `$ref` kept)."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    if not ref.startswith("#/$defs/"):
        raise ValueError(f"only local $defs references are compared, not {ref!r}")
    rest = {key: value for key, value in schema.items() if key != "$ref"}
    return {**root["$defs"][ref.removeprefix("#/$defs/")], **rest}


def _constraints(schema: Schema) -> set[str]:
    """The keywords that bound the values (type, format, pattern, minimum, const...)."""
    return {
        key
        for key in schema
        if key not in ANNOTATIONS and key not in WALKED and key not in UNIONS
        if not key.startswith("x-")
    }


def incompatibilities(released: Schema, current: Schema) -> list[str]:
    """What a reader of either schema could not read of the other's events (empty: compatible)."""
    comparison = _Comparison(released, current)
    comparison.value("", released, current)
    return comparison.problems


def current_schemas() -> dict[str, Schema]:
    """Every schema a release holds: each event type's payload and each sealed content."""
    schemas: dict[str, Schema] = json.loads(json.dumps({**json_schemas(), **sealed_schemas()}))
    return schemas


def retired(directory: pathlib.Path) -> set[str]:
    """The released names no model needs to have any more (one a line, `#` comments)."""
    path = directory / RETIRED
    lines = path.read_text().splitlines() if path.exists() else []
    return {line.split("#")[0].strip() for line in lines} - {""}


def check(directory: pathlib.Path, current: dict[str, Schema] | None = None) -> list[str]:
    """Every released schema under `directory` against the current one; the problems found."""
    current = current_schemas() if current is None else current
    gone = retired(directory)
    problems: list[str] = []
    for path in sorted(directory.glob("*.json")):
        name = path.stem
        if name in gone:
            if name in current:
                problems.append(f"{name}: listed in {RETIRED}, yet a model still has it")
        elif name not in current:
            problems.append(
                f"{name}: released, but no model has it any more; a reader may still expect it"
                f" (list it in {RETIRED} once no reader does)"
            )
        else:
            released = json.loads(path.read_text())
            problems += [f"{name}: {p}" for p in incompatibilities(released, current[name])]
    return problems


def release(
    directory: pathlib.Path, current: dict[str, Schema] | None = None
) -> list[pathlib.Path]:
    """Write every current schema as released, if each stays readable against its release."""
    current = current_schemas() if current is None else current
    problems = check(directory, current)
    if problems:
        raise Incompatible(problems)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in current.items():
        target = directory / f"{name}.json"
        target.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(target)
    return written


def main() -> None:
    """Check the current schemas against the released ones, or release them with --release."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=pathlib.Path, help="the released schemas")
    parser.add_argument("--release", action="store_true", help="write the current schemas")
    args = parser.parse_args()
    try:
        if args.release:
            for path in release(args.directory):
                print(path)
        else:
            problems = check(args.directory)
            if problems:
                raise Incompatible(problems)
    except Incompatible as refused:
        print("\n".join(refused.problems), file=sys.stderr)
        print("A change no existing reader can read needs a new .vN event type.", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
