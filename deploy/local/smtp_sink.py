"""A real SMTP server for the local stack that keeps every message it receives as a .eml file."""

import argparse
import asyncio
import pathlib
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Keep:
    """Stores each accepted message in a directory, one file per message."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        name = self.directory / f"{uuid.uuid4().hex}.eml"
        tmp = name.with_suffix(".tmp")
        tmp.write_bytes(envelope.original_content or b"")
        tmp.rename(name)
        return "250 Message accepted for delivery"


def main() -> None:
    """Run the sink until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=pathlib.Path, required=True)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(Keep(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    print(f"smtp sink on 127.0.0.1:{args.port}, keeping mail in {args.dir}", flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
