"""The README's walkthroughs, executed: every command block of docs/intake-, review-, reports-,
notify- and partner-walkthrough.md runs in order against the four services started here as
`make run` starts them (their own processes, the settings the walkthrough puts before
`make run`), on the test stack's broker, store and SMTP sink. Each block's HTTP statuses and
promised fields are checked (tests/support/walkthroughs.py), and the whole walkthrough runs
twice, as a person may follow it twice; then the README's own partner example runs."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymongo import MongoClient

from avis.shared import topics
from tests.support.basics import (
    BOOTSTRAP,
    JWT_SECRET,
    MONGO_URL,
    ROOT,
    SEALING_KEYS,
    kafka_passwords,
    skip_history,
)
from tests.support.stack import ServiceStack
from tests.support.walkthroughs import Walkthrough, environment, run_assignments

pytestmark = pytest.mark.infra

DOCS = ROOT / "docs"
WALKTHROUGHS = [
    DOCS / "intake-walkthrough.md",
    DOCS / "review-walkthrough.md",
    DOCS / "reports-walkthrough.md",
    DOCS / "notify-walkthrough.md",
    DOCS / "partner-walkthrough.md",
    DOCS / "followup-walkthrough.md",
    DOCS / "international-walkthrough.md",
]
# What each service consumes: a new consumer group starts at the end, not at the suite's history.
CONSUMES = {
    "intake": [topics.REVIEW_ASSIGNED, topics.REVIEW_COMPLETED, topics.REPORT_READY],
    "review": [topics.CASE_SUBMITTED, topics.REPORT_READY],
    "reports": [topics.CASE_SUBMITTED, topics.REVIEW_COMPLETED],
    "notify": [
        topics.CASE_SUBMITTED,
        topics.REVIEW_ASSIGNED,
        topics.REVIEW_COMPLETED,
        topics.REPORT_READY,
    ],
}


@dataclass
class Stack:
    """The services the walkthroughs talk to, and what a person's shell would have."""

    services: ServiceStack
    state_dir: Path

    @property
    def urls(self) -> dict[str, str]:
        return self.services.urls

    def tails(self) -> str:
        """The end of each service's log, for a failure message."""
        return self.services.tails()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The four services as `make run` starts them, each in its own process and database."""
    home = tmp_path_factory.mktemp("walkthrough-stack")
    state = home / "state"
    state.mkdir()
    # What `make run` keeps in its state folder: the development secrets.
    (state / "dev.env").write_text(
        f"AVIS_SEALING_KEYS={SEALING_KEYS}\nAVIS_JWT_SECRET={JWT_SECRET}\n", encoding="utf-8"
    )
    run_settings = run_assignments((DOCS / "intake-walkthrough.md").read_text(encoding="utf-8"))
    suffix = uuid.uuid4().hex[:8]
    databases = {name: f"walkthrough_{name}_{suffix}" for name in CONSUMES}
    services = ServiceStack({}, home / "logs", databases)
    urls = services.urls
    services.env = environment(
        dict(os.environ),
        AVIS_KAFKA_BOOTSTRAP=BOOTSTRAP,
        **kafka_passwords(),  # each service connects as its own Kafka user
        AVIS_MONGO_URL=MONGO_URL,
        AVIS_SMTP_URL=os.environ.get("AVIS_SMTP_URL", "smtp://127.0.0.1:11025"),
        AVIS_SEALING_KEYS=SEALING_KEYS,
        AVIS_JWT_SECRET=JWT_SECRET,
        AVIS_LOG_FORMAT="json",
        AVIS_RELAY_POLL_SECONDS="0.2",
        AVIS_REVIEW_SEED_REVIEWERS="true",
        AVIS_INTAKE_PUBLIC_URL=urls["intake"],
        AVIS_REVIEW_INTAKE_BASE_URL=urls["intake"],
        AVIS_REPORTS_PUBLIC_URL=urls["reports"],
        # As `make run` sets it: part 5's receiver listens on this machine, over http://.
        AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK="true",
        # As `make run` sets them: development (avis-token's tokens), 8-hour tokens.
        AVIS_ENV="development",
        AVIS_JWT_MAX_LIFETIME_SECONDS="28800",
        # Faster than a person: each walkthrough runs twice in a few minutes.
        AVIS_RATE_LIMIT_WRITES="100000/minute",
        **run_settings,
    )
    for name, consumed in CONSUMES.items():
        asyncio.run(skip_history(f"avis-{name}", consumed))
    try:
        asyncio.run(services.start())
        yield Stack(services, state)
    finally:
        services.stop()
        with MongoClient(MONGO_URL) as mongo:
            for database in databases.values():
                mongo.drop_database(database)


def test_the_walkthroughs_run_as_written_twice(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    scratch = tmp_path_factory.mktemp("walkthrough-tmp")
    env = environment(
        dict(os.environ),
        AVIS_STATE_DIR=str(stack.state_dir),
        INTAKE=stack.urls["intake"],
        REVIEW=stack.urls["review"],
        REPORTS=stack.urls["reports"],
        NOTIFY=stack.urls["notify"],
        # The test stack's SMTP sink (AVIS_SMTP_URL) keeps its mail in its own state folder.
        MAILDIR=str(Path(os.environ["AVIS_STATE_DIR"]) / "smtp" / "mail"),
        TMPDIR=str(scratch),
        HOOK_PORT=str(free_port()),  # part 5's receiver
    )
    before = untracked()
    try:
        for run in range(2):
            for path in WALKTHROUGHS:
                run_one(Walkthrough(path, ROOT, env, run), stack)
        # The README's partner example, once, last: its subscription receives nothing more.
        readme = Walkthrough(ROOT / "README.md", ROOT, env)
        run_one(readme, stack, least=1)
    finally:
        stop_receiver(scratch / "avis-walkthrough" / "receiver.pid")
    # The scratch files went outside the repository.
    assert (scratch / "avis-walkthrough").is_dir()
    assert untracked() == before, "the walkthroughs left files in the repository"


def run_one(walkthrough: Walkthrough, stack: Stack, least: int = 2) -> None:
    """Run one document's blocks, with the services' logs on a failure."""
    try:
        walkthrough.run_all()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.tails()}") from None
    assert len(walkthrough.blocks) >= least, f"{walkthrough.path.name}: too few blocks ran"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_receiver(pid_file: Path) -> None:
    """Stop part 5's receiver if a failed run left it (its last block stops it otherwise)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def untracked() -> set[str]:
    """Files in the checkout that git neither tracks nor ignores."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line[3:] for line in status.splitlines() if line.startswith("??")}
