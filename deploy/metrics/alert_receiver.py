"""The alert receiver of the local stack: vmalert posts firing and resolved alerts here (the
Alertmanager API, `POST /api/v2/alerts`); each alert is appended as one JSON line to `--file`
and logged in one line, so an operator (or a test) can see what fired and when.

    GET /api/v2/alerts   the alerts received so far, newest last (JSON list)

In production the same rules would be sent to Alertmanager, which pages someone; here nothing
leaves the machine.
"""

import argparse
import contextlib
import json
import pathlib
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def handler(file: pathlib.Path) -> type[BaseHTTPRequestHandler]:
    """A request handler that keeps alerts in `file`. The server answers each request in a
    thread of its own: a read never sees a post's lines half written."""
    kept = threading.Lock()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            try:
                alerts: list[dict[str, Any]] = json.loads(self.rfile.read(size) or b"[]")
            except ValueError:
                self.send_error(400, "not JSON")
                return
            received = time.time()
            with kept, file.open("a", encoding="utf-8") as out:
                for alert in alerts:
                    out.write(json.dumps({"received": received, **alert}) + "\n")
                    labels = alert.get("labels", {})
                    state = "resolved" if _ended(alert) else "firing"
                    print(f"[alert] {state} {labels.get('alertname')} {labels}", flush=True)
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:
            with kept:
                lines = file.read_text(encoding="utf-8").splitlines() if file.exists() else []
            body = json.dumps([json.loads(line) for line in lines]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # one line per alert is printed above; no access log

    return Receiver


def _ended(alert: dict[str, Any]) -> bool:
    """Whether the alert's end time has passed (vmalert sends a future end while it fires)."""
    try:
        return (
            datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).timestamp()
            <= time.time()
        )
    except (KeyError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8429)
    parser.add_argument("--file", type=pathlib.Path, required=True)
    args = parser.parse_args()
    args.file.parent.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((args.host, args.port), handler(args.file))
    print(f"[alert] receiver on http://{args.host}:{args.port}/api/v2/alerts", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
