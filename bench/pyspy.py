"""py-spy sampling one process for a benchmark: collapsed stacks written to a file, and the
frames holding most samples summarised (ours, as py-spy names them, and every frame's own)."""

import contextlib
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Avis's own frames, as py-spy names them: "(intake/...)", "(shared/...)".
OURS = re.compile(r"\((intake|review|reports|notify|web|shared)/")
# Frames where a thread waits rather than works: a pool's idle worker, a lock, the event loop's
# own wait (uvloop's is C under `Runner.run`), a blocking read of the key service's client.
WAITING = {
    "Condition.wait (threading.py)",
    "Event.wait (threading.py)",
    "Queue.get (queue.py)",
    "_worker (concurrent/futures/thread.py)",
    "Runner.run (asyncio/runners.py)",
    "SSLSocket.read (ssl.py)",
}
# What a busy sample is spent on: the layer of the frame nearest the leaf that has one; asyncio
# and anyio only when no other frame has one (their work under a client or a server is that
# one's: anyio serves both the HTTP client and the server).
LAYERS = [
    ("store client", re.compile(r"\((pymongo|bson)/")),
    ("broker client", re.compile(r"\(aiokafka/")),
    ("event framework", re.compile(r"\((faststream|fast_depends)/")),
    ("HTTP serving", re.compile(r"\((uvicorn|starlette|fastapi|h11|limits|python_multipart)/")),
    ("HTTP client", re.compile(r"\((httpx|httpcore)/")),
    ("mail", re.compile(r"\((aiosmtplib|email)/")),
    ("PDF", re.compile(r"\(reportlab/")),
    ("key service client", re.compile(r"\((kmip|sqlalchemy)/")),
    ("crypto", re.compile(r"\(cryptography/")),
    ("validation", re.compile(r"\(pydantic(_core)?/")),
    # OpenTelemetry's packages, as py-spy names them ("(trace/__init__.py)", "(asgi/...)").
    ("tracing", re.compile(r"\((opentelemetry|trace|asgi|attributes|propagate|propagators)/")),
    ("logging", re.compile(r"\((structlog|logging)/")),
    ("metrics", re.compile(r"\(prometheus_client/")),
    ("ours", OURS),
]
ASYNCIO = re.compile(r"\((asyncio|anyio)/")


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in LAYERS:
            if pattern.search(frame):
                return name
    return "asyncio" if any(ASYNCIO.search(f) for f in frames) else "other"


class Profiler:
    """Samples `pid` at 50 Hz until `stop()`, into `path`."""

    def __init__(self, pid: int, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/py-spy"),
                *("record", "--pid", str(pid), "--format", "raw", "--rate", "50"),
                *("--output", str(path)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self, top: int = 20) -> dict[str, Any]:
        """Stop sampling; the top frames by inclusive samples (ours) and by own samples."""
        self.process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=60)
        if not self.path.exists():
            return {"error": "py-spy wrote nothing (is ptrace allowed?)"}
        inclusive: dict[str, int] = {}
        own: dict[str, int] = {}
        layers: dict[str, int] = {}
        total = busy = 0
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            samples = int(count)
            total += samples
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + samples
            own[frames[-1]] = own.get(frames[-1], 0) + samples
            if frames[-1] not in WAITING:
                busy += samples
                layer = layer_of(frames)
                layers[layer] = layers.get(layer, 0) + samples

        def share(counts: dict[str, int], keep: Callable[[str], bool]) -> list[str]:
            ranked = sorted(((n, f) for f, n in counts.items() if keep(f)), reverse=True)
            return [f"{100 * n / max(total, 1):5.1f}%  {f}" for n, f in ranked[:top]]

        return {
            "file": str(self.path.relative_to(ROOT)),
            "samples": total,
            "inclusive": share(inclusive, lambda f: bool(OURS.search(f))),
            "self": share(own, lambda f: True),
            "busy_samples": busy,
            # Of the busy samples (none of `WAITING` at the leaf), the share of each layer.
            "busy_by_layer": {
                name: round(n / max(busy, 1), 3)
                for name, n in sorted(layers.items(), key=lambda item: -item[1])
            },
        }
