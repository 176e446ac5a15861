"""Executed walkthroughs: every ```sh block of a Markdown walkthrough runs in bash, in order, and
the HTML comment that follows it says what its HTTP calls must answer.

Sybil reads the Markdown (fenced blocks, `<!-- skip: next -->`, our `<!-- expect: ... -->`); this
module runs the blocks and checks them. An expectation has one line per HTTP call the block makes,
in order:

    <!-- expect:
    201 {"status": "draft", "reference": "~^AV-\\d{4}-\\d+$"}
    201|200
    200 {"items": [{"reviewer_id": "rev-cardio-1"}]}
    output: ^same bytes$
    -->

- the status; `201|200` is 201 the first time the walkthrough runs against a stack and 200 when
  it runs again (a person following it twice);
- then, optionally, JSON the response body must contain: objects by subset, lists by "some item
  matches", strings starting with `~` as regular expressions;
- `output: REGEX`: a line of what the block printed must match.

Calls are counted by a `curl` shell function put before each block, which records the request's
arguments, status and body. A request repeated back to back with the same arguments (a block
polling until something happens) counts once, with its last answer.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sybil import Document, Example, Region
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

# Put before every block: `curl` records each call (its arguments, then the status and body).
CURL_RECORDER = r"""
curl() {
  local call
  call="$AVIS_WALKTHROUGH_CALLS/$(printf '%05d' "$(ls "$AVIS_WALKTHROUGH_CALLS" | wc -l)")"
  mkdir "$call"
  printf '%q ' "$@" > "$call/args"
  command curl -D "$call/headers" "$@" | tee "$call/body"
  return "${PIPESTATUS[0]}"
}
"""
BLOCK_TIMEOUT = 300.0  # a block waits on the services at most this long (a safety net only)


@dataclass
class Call:
    """One HTTP call a block made."""

    args: str
    status: int
    body: str

    def json(self) -> Any:
        """The body as JSON (None if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Expected:
    """What one call must answer."""

    statuses: list[int]
    body: Any = None

    def status_for(self, run: int) -> int:
        """The status expected on the `run`-th run (0 first), the last one repeating."""
        return self.statuses[min(run, len(self.statuses) - 1)]


@dataclass
class Expectation:
    """The expect comment of one block."""

    calls: list[Expected] = field(default_factory=list)
    output: list[str] = field(default_factory=list)


def parse_expectation(text: str) -> Expectation:
    """Parse the body of an `<!-- expect: ... -->` comment."""
    expectation = Expectation()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("output:"):
            expectation.output.append(line.removeprefix("output:").strip())
            continue
        status, _, body = line.partition(" ")
        if not re.fullmatch(r"\d{3}(\|\d{3})*", status):
            raise ValueError(f"an expectation line starts with a status: {line!r}")
        expected = Expected([int(s) for s in status.split("|")])
        if body.strip():
            expected.body = json.loads(body)
        expectation.calls.append(expected)
    return expectation


def mismatch(expected: Any, actual: Any, where: str = "body") -> str | None:
    """Why `actual` does not contain `expected` (None when it does)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r:.200}"
        for key, value in expected.items():
            if key not in actual:
                return f"{where}.{key}: missing"
            why = mismatch(value, actual[key], f"{where}.{key}")
            if why:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{where}: expected a list, got {actual!r:.200}"
        for i, item in enumerate(expected):
            reasons = [mismatch(item, a, f"{where}[{i}]") for a in actual]
            if all(reasons):
                example = reasons[0] if reasons else "the list is empty"
                return f"{where}: no item matches {item!r} (first: {example})"
        return None
    if isinstance(expected, str) and expected.startswith("~"):
        if isinstance(actual, str) and re.search(expected[1:], actual):
            return None
        return f"{where}: {actual!r:.200} does not match {expected[1:]!r}"
    if expected != actual:
        return f"{where}: expected {expected!r}, got {actual!r:.200}"
    return None


@dataclass
class BlockRun:
    """What one block did."""

    line: int
    source: str
    returncode: int
    output: str
    calls: list[Call]
    checked: bool = False


def read_calls(folder: Path) -> list[Call]:
    """The calls recorded in `folder`, a request repeated back to back counted once (its last)."""
    calls: list[Call] = []
    for call in sorted(folder.iterdir()):
        headers = (call / "headers").read_text() if (call / "headers").exists() else ""
        statuses = re.findall(r"^HTTP/[\d.]+ (\d{3})", headers, re.MULTILINE)
        body = (call / "body").read_text(errors="replace") if (call / "body").exists() else ""
        args = (call / "args").read_text()
        recorded = Call(args, int(statuses[-1]) if statuses else 0, body)
        if calls and calls[-1].args == args:
            calls[-1] = recorded
        else:
            calls.append(recorded)
    return calls


class Walkthrough:
    """Runs the blocks of one Markdown walkthrough against the services named in `env`."""

    def __init__(self, path: Path, cwd: Path, env: dict[str, str], run: int = 0) -> None:
        self.path = path
        self.cwd = cwd
        self.env = env
        self.run = run
        self.blocks: list[BlockRun] = []
        self.skipped = 0

    def parse(self) -> Document:
        """The walkthrough as Sybil examples: sh blocks, expect comments, skip directives."""
        expect = DirectiveInHTMLCommentLexer(directive="expect", arguments=".*?")

        def expect_parser(document: Document) -> Any:
            for lexed in expect(document):
                text = f"{lexed.lexemes['arguments']}\n{lexed.lexemes['source']}"
                yield Region(lexed.start, lexed.end, parse_expectation(text), self.check)

        return Document.parse(
            str(self.path),
            CodeBlockParser(language="sh", evaluator=self.execute),
            expect_parser,
            SkipParser(),
        )

    def execute(self, example: Example) -> str | None:
        """Run one sh block in bash (errexit, nounset, pipefail), recording its calls."""
        previous = self.blocks[-1] if self.blocks else None
        if previous is not None and not previous.checked:
            return f"the block at line {previous.line} has no <!-- expect: --> comment after it"
        source = str(example.parsed)
        with tempfile.TemporaryDirectory(prefix="calls-") as calls:
            env = self.env | {"AVIS_WALKTHROUGH_CALLS": calls}
            try:
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", CURL_RECORDER + source],
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=BLOCK_TIMEOUT,
                    check=False,
                )
                returncode, output = done.returncode, done.stdout + done.stderr
            except subprocess.TimeoutExpired as exc:
                returncode, output = -1, f"timed out after {exc.timeout} s"
            run = BlockRun(example.line, source, returncode, output, read_calls(Path(calls)))
        self.blocks.append(run)
        if returncode != 0:
            return self.failure(run, f"exited with {returncode}")
        return None

    def check(self, example: Example) -> str | None:
        """Compare the previous block's calls and output with this expect comment."""
        expectation: Expectation = example.parsed
        if not self.blocks or self.blocks[-1].checked:
            return f"the expect comment at line {example.line} follows no block"
        block = self.blocks[-1]
        block.checked = True
        if len(block.calls) != len(expectation.calls):
            return self.failure(
                block,
                f"made {len(block.calls)} HTTP call(s), the text promises {len(expectation.calls)}",
            )
        for i, (call, expected) in enumerate(zip(block.calls, expectation.calls, strict=True)):
            status = expected.status_for(self.run)
            if call.status != status:
                return self.failure(block, f"call {i + 1} answered {call.status}, not {status}")
            if expected.body is not None:
                why = mismatch(expected.body, call.json())
                if why:
                    return self.failure(block, f"call {i + 1}: {why}")
        for pattern in expectation.output:
            if not re.search(pattern, block.output, re.MULTILINE):
                return self.failure(block, f"printed nothing matching {pattern!r}")
        return None

    def failure(self, block: BlockRun, why: str) -> str:
        """A failure message that points at the block in the document."""
        calls = "\n".join(f"  {c.status} {c.args[:160]}\n    {c.body[:300]!r}" for c in block.calls)
        return (
            f"{self.path.name}, block at line {block.line} (run {self.run + 1}): {why}\n"
            f"--- block ---\n{block.source}--- calls ---\n{calls}\n"
            f"--- output (end) ---\n{block.output[-3000:]}"
        )

    def run_all(self) -> None:
        """Evaluate every example in order; raises at the first failure."""
        for example in self.parse():
            try:
                example.evaluate()
            except Exception as exc:
                if type(exc).__name__ in ("SkipTest", "NotEvaluated"):
                    self.skipped += 1
                    continue
                raise
        if self.blocks and not self.blocks[-1].checked:
            raise AssertionError(
                f"{self.path.name}: the block at line {self.blocks[-1].line} has no expect comment"
            )


def run_assignments(text: str) -> dict[str, str]:
    """The `AVIS_...=value` settings a walkthrough puts before `make run`."""
    match = re.search(r"^((?:AVIS_\w+=\S+\s+)*)make run\b", text, re.MULTILINE)
    if match is None:
        return {}
    return dict(part.split("=", 1) for part in shlex.split(match.group(1)))


def command_blocks(text: str) -> list[str]:
    """The sh blocks of a walkthrough that run, in order (those after a skip directive left out)."""
    blocks = re.finditer(
        r"(<!-- skip: next -->\s*)?^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL
    )
    return [block.group(2) for block in blocks if block.group(1) is None]


def environment(base: dict[str, str], **extra: str) -> dict[str, str]:
    """A process environment: `base` without its AVIS settings, plus `extra`."""
    env = {k: v for k, v in base.items() if not k.startswith("AVIS_")}
    env.update(extra)
    env.setdefault("PATH", os.defpath)
    return env
