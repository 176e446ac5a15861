"""A real SMTP server for the local stack that keeps every message it receives as a .eml file.

It can be told to misbehave for a while, so tests (and a curious developer) can watch retries
and permanent failures. A small JSON control file (`--control`, by default `control.json`
beside the mail folder) holds rules, read at every recipient and message:

    {"rules": [{"match": "patient-42@", "mode": "fail", "count": 2}]}

- `match`: a substring of the recipient's address (empty: every recipient);
- `mode`: `refuse` (550 at RCPT: a permanent refusal), `fail` (451 at DATA: a transient
  failure) or `drop` (the connection is closed at DATA without an answer);
- `count`: how many messages the rule still applies to (the sink counts it down), and/or
  `until`: a Unix time after which it stops applying. A rule with neither applies until removed.
"""

import argparse
import asyncio
import contextlib
import json
import pathlib
import time
import uuid
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

MODES = {"refuse", "fail", "drop"}


class Rules:
    """The control file's rules; a rule that applies is counted down in the file."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        rules = data.get("rules", []) if isinstance(data, dict) else []
        return [r for r in rules if isinstance(r, dict) and r.get("mode") in MODES]

    def take(self, modes: set[str], recipients: list[str]) -> str | None:
        """The mode of the first live rule among `modes` matching a recipient, counted down."""
        rules = self._read()
        now = time.time()
        for rule in rules:
            if rule["mode"] not in modes:
                continue
            if "until" in rule and now >= float(rule["until"]):
                continue
            if "count" in rule and int(rule["count"]) <= 0:
                continue
            match = str(rule.get("match", ""))
            if not any(match in r for r in recipients):
                continue
            if "count" in rule:
                rule["count"] = int(rule["count"]) - 1
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"rules": rules}), encoding="utf-8")
                tmp.rename(self.path)
            return str(rule["mode"])
        return None


class Keep:
    """Stores each accepted message in a directory, one file per message, named in the order
    the messages arrived."""

    def __init__(self, directory: pathlib.Path, rules: Rules) -> None:
        self.directory = directory
        self.rules = rules

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rules.take({"refuse"}, [address]):
            return "550 5.1.1 Mailbox unavailable (refused by the sink's control file)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        mode = self.rules.take({"fail", "drop"}, list(envelope.rcpt_tos))
        if mode == "fail":
            return "451 4.3.0 Temporary failure (the sink's control file says fail)"
        if mode == "drop":
            if server.transport is not None:
                server.transport.abort()
            return "421 4.4.2 Connection dropped"
        # Named by arrival (the time in ns first), so a listing sorted by name is in the order
        # the messages came: file times alone can tie for messages a few ms apart.
        name = self.directory / f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.eml"
        tmp = name.with_suffix(".tmp")
        tmp.write_bytes(envelope.original_content or b"")
        tmp.rename(name)
        return "250 Message accepted for delivery"


def main() -> None:
    """Run the sink until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=pathlib.Path, required=True)
    parser.add_argument("--control", type=pathlib.Path, default=None)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    control = args.control or args.dir.parent / "control.json"
    controller = Controller(Keep(args.dir, Rules(control)), hostname="127.0.0.1", port=args.port)
    controller.start()
    print(
        f"smtp sink on 127.0.0.1:{args.port}, keeping mail in {args.dir}, control in {control}",
        flush=True,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(asyncio.Event().wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
