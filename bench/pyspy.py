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
        total = 0
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            samples = int(count)
            total += samples
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + samples
            own[frames[-1]] = own.get(frames[-1], 0) + samples

        def share(counts: dict[str, int], keep: Callable[[str], bool]) -> list[str]:
            ranked = sorted(((n, f) for f, n in counts.items() if keep(f)), reverse=True)
            return [f"{100 * n / max(total, 1):5.1f}%  {f}" for n, f in ranked[:top]]

        return {
            "file": str(self.path.relative_to(ROOT)),
            "samples": total,
            "inclusive": share(inclusive, lambda f: bool(OURS.search(f))),
            "self": share(own, lambda f: True),
        }
