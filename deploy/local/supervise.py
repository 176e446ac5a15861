"""`make run`'s services: start each line of the Procfile, print their logs with a prefix, say
once when every part answers, and on Ctrl-C (SIGINT), SIGTERM or SIGHUP stop them all.

    supervise.py PROCFILE --ready NAME=URL ... [--started EPOCH] [--stop-file PATH]

Copies: `AVIS_REPLICAS=N` starts N copies of each of intake, review, reports and notify (1 by
default); `AVIS_<SERVICE>_REPLICAS=N` sets one service's (it wins over AVIS_REPLICAS). The first
copy keeps the service's address; copy k (k = 2, 3, ...) is named `<service>.k` in the log and
listens on the service's port + 100 * (k - 1) (review: 8002, 8102, 8202). Copies share the
service's store and consumer group; each is also waited for before "ready".

In a terminal it takes the terminal's foreground for its own process group, so Ctrl-C reaches
it alone: `make` and run.sh are left to stop the infrastructure and end with status 0 instead
of dying of the signal. It gives the terminal back when it exits. Colours only on a terminal.
Exit status: 0 when asked to stop and everything stopped; 1 when a service ended by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

COLOURS = ("36", "33", "32", "35", "34")
# The services that may run as several copies, and their first copy's default HTTP port.
SCALABLE = {"intake": 8001, "review": 8002, "reports": 8003, "notify": 8004}
COPY_PORT_STEP = 100
# A service stops within its shutdown grace for requests, then the same for event handlers.
STOP_SECONDS = 2 * float(os.environ.get("AVIS_SHUTDOWN_GRACE_SECONDS", "10")) + 10
CLEAN = {0, -signal.SIGTERM, -signal.SIGINT}


class Output:
    """One writer for every line, so lines of different services never interleave."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.colour = stream.isatty()
        self.lock = threading.Lock()

    def line(self, text: str, name: str = "", colour: str = "") -> None:
        """Write one line, prefixed with the time and the part's name when there is one."""
        prefix = ""
        if name:
            prefix = f"{time.strftime('%H:%M:%S')} {name:<8}| "
            if self.colour and colour:
                prefix = f"\033[0m\033[{colour}m{prefix}\033[0m"
        with self.lock:
            self.stream.write(prefix + text + "\n")
            self.stream.flush()


def procfile(path: Path) -> list[tuple[str, str]]:
    """The (name, command) lines of a Procfile."""
    entries = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries.append((name.strip(), command.strip()))
    return entries


def copies_of(name: str, env: dict[str, str]) -> int:
    """How many copies of a Procfile entry to start (AVIS_<NAME>_REPLICAS, AVIS_REPLICAS, 1)."""
    if name not in SCALABLE:
        return 1
    wanted = env.get(f"AVIS_{name.upper()}_REPLICAS") or env.get("AVIS_REPLICAS") or "1"
    return max(1, int(wanted))


def with_copies(
    entries: list[tuple[str, str]], env: dict[str, str]
) -> list[tuple[str, str, dict[str, str], str | None]]:
    """Each entry once per copy: (name, command, extra environment, readiness URL of an extra
    copy or None). Copy k listens on the service's port + 100 * (k - 1)."""
    expanded: list[tuple[str, str, dict[str, str], str | None]] = []
    for name, command in entries:
        count = copies_of(name, env)
        if count == 1:
            expanded.append((name, command, {}, None))
            continue
        variable = f"AVIS_{name.upper()}_HTTP_PORT"
        base = int(env.get(variable, SCALABLE[name]))
        for k in range(count):
            port = base + COPY_PORT_STEP * k
            label = name if k == 0 else f"{name}.{k + 1}"
            ready = None if k == 0 else f"http://127.0.0.1:{port}/readyz"
            extra = {variable: str(port)}
            expanded.append((label, command, extra, ready))
    return expanded


@contextlib.contextmanager
def terminal_foreground() -> Iterator[None]:
    """Own the controlling terminal's foreground while running, if this process has it."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        yield
        return
    previous = os.getpgrp()
    try:
        if os.tcgetpgrp(tty) != previous:
            yield  # started in the background: leave the terminal alone
            return
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.setpgid(0, 0)
        os.tcsetpgrp(tty, os.getpgrp())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty, previous)
    finally:
        os.close(tty)


class Supervisor:
    """The services of one `make run`."""

    def __init__(self, out: Output, root: Path) -> None:
        self.out = out
        self.root = root
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stop = threading.Event()
        self.readers: list[threading.Thread] = []

    def start(self, entries: list[tuple[str, str, dict[str, str], str | None]]) -> None:
        """Start every service (each copy) in a session of its own, its output read by a
        thread."""
        for i, (name, command, extra, _) in enumerate(entries):
            child = subprocess.Popen(  # noqa: S603 - the repository's own Procfile
                shlex.split(command),
                cwd=self.root,
                env={**os.environ, **extra},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.children[name] = child
            reader = threading.Thread(
                target=self.relay, args=(name, child, COLOURS[i % len(COLOURS)]), daemon=True
            )
            reader.start()
            self.readers.append(reader)

    def relay(self, name: str, child: subprocess.Popen[bytes], colour: str) -> None:
        """Copy a service's output, line by line, with its prefix."""
        assert child.stdout is not None
        for raw in child.stdout:
            self.out.line(raw.decode("utf-8", "replace").rstrip("\n"), name, colour)

    def watch_ready(self, urls: dict[str, str], started: float) -> None:
        """Say once, with the time it took, when every part answers its readiness URL."""
        waiting = dict(urls)
        while waiting and not self.stop.is_set():
            for name, url in list(waiting.items()):
                if answers(url):
                    del waiting[name]
            if waiting:
                self.stop.wait(0.5)
        if not waiting and not self.stop.is_set():
            parts = ", ".join(urls)
            self.out.line(f"[run] ready in {time.time() - started:.1f} s: {parts} answer")

    def first_exit(self) -> str | None:
        """Wait until asked to stop (None) or until a service ends by itself (its name)."""
        while not self.stop.wait(0.2):
            for name, child in self.children.items():
                if child.poll() is not None:
                    return name
        return None

    def stop_all(self) -> dict[str, int]:
        """SIGTERM to every service still running, SIGKILL to any that outlives the grace."""
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        codes = {}
        for name, child in self.children.items():
            try:
                codes[name] = child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out.line(f"[run] {name} did not stop in {STOP_SECONDS:.0f} s: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                codes[name] = child.wait()
        for reader in self.readers:
            reader.join(timeout=2)
        return codes


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URLs
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("procfile", type=Path)
    parser.add_argument("--ready", action="append", default=[], metavar="NAME=URL")
    parser.add_argument("--started", type=float, default=time.time())
    parser.add_argument("--stop-file", type=Path, help="where to write when the stop began")
    args = parser.parse_args()
    out = Output(sys.stdout)
    supervisor = Supervisor(out, Path.cwd())
    asked: list[int] = []

    def on_signal(signum: int, _: object) -> None:
        if not asked and args.stop_file is not None:
            args.stop_file.write_text(f"{time.time()}\n", encoding="utf-8")
        asked.append(signum)
        supervisor.stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    with terminal_foreground():
        entries = with_copies(procfile(args.procfile), dict(os.environ))
        supervisor.start(entries)
        urls = dict(item.split("=", 1) for item in args.ready)
        urls |= {name: ready for name, _, _, ready in entries if ready is not None}
        threading.Thread(
            target=supervisor.watch_ready, args=(urls, args.started), daemon=True
        ).start()
        ended = supervisor.first_exit()
        if ended is not None:
            code = supervisor.children[ended].returncode
            out.line(f"[run] {ended} ended by itself (status {code}); stopping the others")
        supervisor.stop.set()
        codes = supervisor.stop_all()
    if ended is not None:
        return 1
    unclean = {name: code for name, code in codes.items() if code not in CLEAN}
    for name, code in unclean.items():
        out.line(f"[run] {name} stopped with status {code}")
    return 1 if unclean else 0


if __name__ == "__main__":
    sys.exit(main())
