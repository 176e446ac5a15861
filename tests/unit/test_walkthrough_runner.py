"""The walkthrough runner itself (tests/support/walkthroughs.py), on small documents against a
loopback HTTP server: it passes what the text promises and fails, pointing at the block, on any
drift."""

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.basics import ROOT
from tests.support.walkthroughs import (
    Walkthrough,
    command_blocks,
    environment,
    mismatch,
    parse_expectation,
    run_assignments,
)


class _Handler(BaseHTTPRequestHandler):
    counts: dict[str, int] = {}

    def do_GET(self) -> None:
        seen = self.counts[self.path] = self.counts.get(self.path, 0) + 1
        if self.path.startswith("/slow"):  # ready on the third call
            status, body = (200, {"ready": True}) if seen >= 3 else (503, {"ready": False})
        elif self.path.startswith("/case"):
            status, body = 200, {"status": "draft", "items": [{"id": "a"}, {"id": "b"}]}
        else:
            status, body = 404, {"title": "Not Found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """A loopback HTTP server: /case answers 200, /slow 503 twice then 200, else 404."""
    _Handler.counts = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def run(tmp_path: Path, server: str, text: str, run_index: int = 0) -> Walkthrough:
    doc = tmp_path / "doc.md"
    doc.write_text(text, encoding="utf-8")
    env = environment(dict(os.environ), API=server, TMPDIR=str(tmp_path))
    walkthrough = Walkthrough(doc, tmp_path, env, run_index)
    walkthrough.run_all()
    return walkthrough


GOOD = """
<!-- skip: next -->

```sh
make run
```

```sh
curl -s "$API/case" | python3 -m json.tool
curl -s -o /dev/null -w '%{http_code}\\n' "$API/nothing"
for _ in 1 2 3 4 5; do curl -sf "$API/slow" > /dev/null && break; sleep 0.1; done
echo done
```

<!-- expect:
200 {"status": "draft", "items": [{"id": "b"}]}
404|404
200
output: ^done$
-->
"""


def test_a_document_that_keeps_its_promises_passes(tmp_path: Path, server: str) -> None:
    walkthrough = run(tmp_path, server, GOOD)
    (block,) = walkthrough.blocks  # `make run` was skipped
    assert [c.status for c in block.calls] == [200, 404, 200]  # the polled call counts once


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ('200 {"status": "draft"', '201 {"status": "draft"', "call 1 answered 200, not 201"),
        ('{"id": "b"}', '{"id": "c"}', "no item matches"),
        ('"status": "draft"', '"status": "submitted"', "expected 'submitted', got 'draft'"),
        ("output: ^done$", "output: ^finished$", "printed nothing matching"),
        ("404|404\n", "", "made 3 HTTP call(s), the text promises 2"),
        ("echo done", "echo done; false", "exited with 1"),
    ],
)
def test_any_drift_fails_at_its_block(
    tmp_path: Path, server: str, old: str, new: str, why: str
) -> None:
    assert old in GOOD
    with pytest.raises(AssertionError, match="block at line 8") as failure:
        run(tmp_path, server, GOOD.replace(old, new))
    assert why in str(failure.value)


def test_the_second_status_is_for_a_walkthrough_run_again(tmp_path: Path, server: str) -> None:
    text = GOOD.replace("404|404", "201|404")
    with pytest.raises(AssertionError, match="answered 404, not 201"):
        run(tmp_path, server, text, run_index=0)
    run(tmp_path, server, text, run_index=1)


def test_a_block_without_an_expectation_fails(tmp_path: Path, server: str) -> None:
    text = '```sh\ncurl -s "$API/case"\n```\n'
    with pytest.raises(AssertionError, match="no expect comment"):
        run(tmp_path, server, text)


def test_expectations_and_settings_are_read_as_written() -> None:
    expectation = parse_expectation('201|200 {"a": [1]}\n\n204\noutput: ^x$')
    assert [c.statuses for c in expectation.calls] == [[201, 200], [204]]
    assert expectation.calls[0].body == {"a": [1]}
    assert expectation.output == ["^x$"]
    with pytest.raises(ValueError, match="starts with a status"):
        parse_expectation("ok")
    assert mismatch({"ref": "~^AV-\\d+$"}, {"ref": "AV-12", "x": 1}) is None
    assert mismatch({"ref": "~^AV-\\d+$"}, {"ref": "XX-12"})
    assert run_assignments("text\nAVIS_A=1 AVIS_B=x make run\n") == {"AVIS_A": "1", "AVIS_B": "x"}
    assert run_assignments("make run\n") == {}
    assert command_blocks("<!-- skip: next -->\n\n```sh\nno\n```\n```sh\nyes\n```\n") == ["yes\n"]


def test_the_readme_starts_make_run_as_the_walkthroughs_do() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for part in ("intake-walkthrough.md", "review-walkthrough.md"):
        settings = run_assignments((ROOT / "docs" / part).read_text(encoding="utf-8"))
        assert settings, f"{part} names no settings before make run"
        line = " ".join(f"{name}={value}" for name, value in settings.items())
        assert f"`{line} make run`" in readme, f"the README does not start make run as {part}"


@pytest.mark.parametrize("part", ["intake-walkthrough.md", "review-walkthrough.md"])
def test_the_first_block_stops_with_a_clear_message_without_make_runs_secrets(
    tmp_path: Path, part: str
) -> None:
    """A second terminal with no AVIS_STATE_DIR, in a checkout with no `.local/run/dev.env`:
    the block, pasted into a shell that goes on after a failed command, writes nothing and says
    how to point at the running stack."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    first = command_blocks((ROOT / "docs" / part).read_text(encoding="utf-8"))[0]
    done = subprocess.run(
        ["bash", "-c", first],  # no errexit: as pasted into an interactive shell
        cwd=checkout,
        env=environment(dict(os.environ), TMPDIR=str(scratch)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Stopped: " in done.stderr and ".local/run/dev.env" in done.stderr, done.stderr
    assert "make infra-status" in done.stderr and "AVIS_STATE_DIR" in done.stderr
    assert "No such file" not in done.stderr, done.stderr
    assert not list((scratch / "avis-walkthrough").glob("*.env")), "it wrote settings anyway"
    assert "ready" not in done.stdout
