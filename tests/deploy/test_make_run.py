"""`make run` as a person runs it: in a terminal, until it says "ready", then Ctrl-C.

The terminal is a pseudo-terminal whose Ctrl-C (the byte ^C) reaches the foreground process
group as a real one does; the output goes to a file (`make run > file`), so it must be plain.
Every port and the state folder are moved to free ones, so this runs beside `make test`'s own
stack and beside a developer's `make run`.
"""

import contextlib
import fcntl
import os
import pty
import random
import re
import signal
import socket
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.support.basics import ROOT

# Generous: a cold start formats Kafka's storage and starts two JVMs on a loaded 2-core machine.
READY_SECONDS = 600.0
STOP_SECONDS = 180.0
# Ports other stacks of this machine may take later: `make run`'s defaults and `make test`'s
# prefixed ones (TEST_PORT_PREFIX 1 to 5).
RESERVED = {
    *(9092, 9093, 27017, 1025, 9411, 8001, 8002, 8003, 8004, 8005, 8428, 8429, 8880, 8089),
    *(4444, 4445, 5696),
} | {
    int(f"{prefix}{port}")
    for prefix in range(1, 6)
    for port in ("9092", "9093", "7117", "1025", "4444", "4445", "8010", "5696")
}
PORT_VARIABLES = (
    "AVIS_KAFKA_PORT",
    "AVIS_KAFKA_CONTROLLER_PORT",
    "AVIS_MONGO_PORT",
    "AVIS_SMTP_PORT",
    "AVIS_ZIPKIN_PORT",
    "AVIS_WEB_HTTP_PORT",
    "AVIS_INTAKE_HTTP_PORT",
    "AVIS_REVIEW_HTTP_PORT",
    "AVIS_REPORTS_HTTP_PORT",
    "AVIS_NOTIFY_HTTP_PORT",
    "AVIS_LAG_PORT",
    "AVIS_METRICS_PORT",
    "AVIS_VMALERT_PORT",
    "AVIS_ALERTS_PORT",
    "AVIS_FERRETDB_METRICS_PORT",
    "AVIS_OIDC_PORT",
    "AVIS_OIDC_ADMIN_PORT",
    "AVIS_KMS_PORT",
    "AVIS_KRATOS_PORT",
    "AVIS_KRATOS_ADMIN_PORT",
)
ANSI = re.compile(r"\x1b\[")


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on, below the kernel's ephemeral range and clear of other stacks."""
    rng = random.Random()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(20000, 28000)
        if port in RESERVED or port in chosen or listening(port):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def run_environment(state: Path) -> dict[str, str]:
    """This environment without its AVIS settings or make's, plus a state folder and free ports."""
    keep = {"AVIS_CACHE"}
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("AVIS_") or k in keep)
        and k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    env["AVIS_STATE_DIR"] = str(state)
    env.update(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES))), strict=True))
    return env


def take_terminal() -> None:
    """In the child: the pseudo-terminal on stdin becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes], seconds: float) -> str:
    """The first line of `log` matching `pattern`, polled until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            return match.group(0)
        if process.poll() is not None:
            pytest.fail(f"make run exited ({process.returncode}) first:\n{text[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"no line matching {pattern!r} within {seconds:.0f} s:\n{text[-4000:]}")


def test_make_run_says_ready_and_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    env = run_environment(tmp_path / "state")
    ports = [int(env[name]) for name in PORT_VARIABLES]
    log = tmp_path / "make-run.log"
    master, slave = pty.openpty()
    drained = threading.Event()

    def drain() -> None:
        while not drained.is_set():
            try:
                if not os.read(master, 1024):
                    return
            except OSError:
                return

    threading.Thread(target=drain, daemon=True).start()
    began = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=take_terminal,
        )
    try:
        ready = wait_for(log, r"^\[run\] ready in .*$", process, READY_SECONDS)
        waited = time.monotonic() - began
        for name in (
            "web",
            "intake",
            "review",
            "reports",
            "notify",
            "traces",
            "lag",
            "metrics",
            "alerts",
            "oidc",
            "identities",
        ):
            assert name in ready, ready
        os.write(master, b"\x03")  # Ctrl-C, as typed
        returncode = process.wait(STOP_SECONDS)
        stopped_after = time.monotonic() - began - waited
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        drained.set()
        os.close(slave)
        os.close(master)
        clean_up(env)
    text = log.read_text(errors="replace")
    print(f"ready after {waited:.1f} s ({ready}); stopped {stopped_after:.1f} s after Ctrl-C")
    assert returncode == 0, text[-4000:]
    summaries = re.findall(r"^\[run\] stopped.*$", text, re.MULTILINE)
    assert len(summaries) == 1, text[-4000:]
    parts = ("web", "intake", "review", "reports", "notify", "Zipkin", "VictoriaMetrics", "vmalert")
    parts += ("Hydra", "Kratos", "PyKMIP")
    for part in (*parts, "Kafka", "FerretDB", "SMTP"):
        assert part in summaries[0], summaries[0]
    assert not re.search(r"^make: \*\*\*|stopped \(rc=", text, re.MULTILINE), text[-4000:]
    assert not ANSI.search(text), "colour codes in a log that is not a terminal"
    still = [port for port in ports if listening(port)]
    assert not still, f"still listening after the stop: {still}\n{text[-2000:]}"


def clean_up(env: dict[str, str]) -> None:
    """Stop whatever a failed run may have left (the scripts stop only what they recorded)."""
    for script in (
        "deploy/local/infra.sh",
        "deploy/tracing/install.sh",
        "deploy/metrics/install.sh",
        "deploy/oidc/install.sh",
        "deploy/oidc/kratos.sh",
        "deploy/kms/install.sh",
    ):
        subprocess.run(
            [str(ROOT / script), "stop"], cwd=ROOT, env=env, capture_output=True, check=False
        )
