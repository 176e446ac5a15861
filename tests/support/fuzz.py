"""The one schemathesis runner: every check over a service's own OpenAPI, with one caller's
token, bounded in examples and time, and what a clean run must show."""

import asyncio
import json
import os
import pathlib
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from tests.support.basics import ROOT

SCHEMATHESIS = pathlib.Path(sys.executable).with_name("schemathesis")
# Per operation and phase. 8 keeps the suite's fuzzing near three minutes in all; a deeper run:
# `AVIS_FUZZ_EXAMPLES=100 make test PYTEST_ARGS="-k fuzzing"`.
MAX_EXAMPLES = int(os.environ.get("AVIS_FUZZ_EXAMPLES", "8"))
DEADLINE_SECONDS = 150  # for a run not bounded by `max_seconds`


@dataclass
class FuzzRun:
    """What one run left: its exit code, its output and its JSON report ({} if none)."""

    code: int
    output: str
    report: dict[str, Any]

    @property
    def summary(self) -> str:
        """The summary schemathesis prints at the end (or the output's last lines)."""
        at = self.output.rfind("SUMMARY")
        return self.output[at:] if at >= 0 else self.output[-3000:]


async def fuzz(
    url: str,
    token: str,
    *extra: str,
    config: str = "",
    seed: str = "20260101",
    max_examples: int = MAX_EXAMPLES,
    max_seconds: int | None = None,
    schema: pathlib.Path | None = None,
) -> FuzzRun:
    """Schemathesis with every check over the OpenAPI served at `url` (or the document in the
    file `schema`, against `url`), one worker, bounded (`max_seconds` for the whole run if
    given); `config` is its TOML configuration, `extra` more command-line arguments; no
    `Authorization` header when `token` is empty. The app is served by this event loop, so this
    never blocks it."""
    with tempfile.TemporaryDirectory(prefix="avis-fuzz-") as scratch:
        workdir = pathlib.Path(scratch)
        settings: list[str] = []
        if config:
            (workdir / "schemathesis.toml").write_text(config)
            settings = ["--config-file", str(workdir / "schemathesis.toml")]
        report = workdir / "report.json"
        bounds = ["--max-time", str(max_seconds)] if max_seconds is not None else []
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--no-color",
            *settings,
            "run",
            *([str(schema), "--url", url] if schema else [f"{url}/openapi.json"]),
            *(["--header", f"Authorization: Bearer {token}"] if token else []),
            "--checks",
            "all",
            "--max-examples",
            str(max_examples),
            *bounds,
            "--seed",
            seed,
            # One worker: hypothesis parses lambda sources with `ast`, which CPython 3.11 does not
            # do safely from several threads at once (a spurious SystemError).
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            *extra,
            cwd=ROOT,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        deadline = DEADLINE_SECONDS if max_seconds is None else max_seconds + 60
        try:
            out, _ = await asyncio.wait_for(process.communicate(), deadline)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        summary = json.loads(report.read_text()) if report.exists() else {}
    return FuzzRun(process.returncode or 0, out.decode(errors="replace"), summary)


def assert_clean(run: FuzzRun) -> None:
    """The run passed: no server error, exit code 0, and it generated test cases."""
    print(run.summary)
    assert not re.search(r"\b5\d\d\b.*(Server error|Internal)", run.output), run.output[-6000:]
    assert "Server error" not in run.output, run.output[-6000:]
    assert run.code == 0, run.output[-8000:]
    assert re.search(r"Test cases:\s+\d+ generated", run.summary), run.summary
