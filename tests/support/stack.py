"""The four services as separate processes, the way `make run` starts them: one harness for the
end-to-end tests, the fault run and the benchmarks.

`ServiceStack` spawns each service (optionally several instances of one, in one consumer group
and one database), waits until each answers `/readyz`, and can kill, restart and supervise them:
with `supervise()` running, a process that exits is started again, as a process manager would.
`usage()` reads each process's CPU time and peak memory from /proc. Everything listens on
loopback; the broker and store are the ones given in `env`.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from avis.shared.security import Role, mint_token
from avis.shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "review", "reports", "notify")


def replicas_from_env(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """How many copies of each service the environment asks for, as `make run` reads it:
    `AVIS_<SERVICE>_REPLICAS`, else `AVIS_REPLICAS`, else 1."""
    env = os.environ if env is None else env
    return {
        s: max(1, int(env.get(f"AVIS_{s.upper()}_REPLICAS") or env.get("AVIS_REPLICAS") or 1))
        for s in SERVICES
    }


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of a process so far, in MiB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Instance:
    """One process of one service."""

    service: str
    index: int
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # CPU seconds of the earlier processes of this instance (before a kill and restart).
    cpu_before: float = 0.0
    peak_mib: float = 0.0
    # Settings of this instance alone, over the stack's (a rotated credential, say).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.service if self.index == 0 else f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ServiceStack:
    """The services as processes. `env` holds the settings they share (broker, store, secrets);
    `databases` names each service's database; `instances` how many processes each runs (by
    default what AVIS_REPLICAS / AVIS_<SERVICE>_REPLICAS say, else 1)."""

    env: Mapping[str, str]
    logs: Path
    databases: Mapping[str, str]
    instances: Mapping[str, int] = field(default_factory=replicas_from_env)
    services: Iterable[str] = SERVICES
    ready_timeout: float = 120.0
    # The command that starts one service (its console script by default); the benchmarks
    # start some runs through a launcher of their own.
    command: Callable[[str], list[str]] | None = None
    members: list[Instance] = field(default_factory=list)
    restarts: int = 0
    _supervising: bool = False
    _turns: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            for index in range(self.instances.get(service, 1)):
                log = self.logs / f"{service}-{index}.log"
                self.members.append(Instance(service, index, free_port(), log))

    @property
    def urls(self) -> dict[str, str]:
        """The first instance's address of each service."""
        return {m.service: m.url for m in self.members if m.index == 0}

    def client(
        self,
        service: str,
        sub: str,
        role: Role,
        partner_id: str | None = None,
        copy: int | None = None,
    ) -> httpx.AsyncClient:
        """An HTTP client of one instance of the service (`copy`, else each in turn, as a load
        balancer would), with a token for `sub` as `role`."""
        settings = CommonSettings(jwt_secret=self.env["AVIS_JWT_SECRET"])  # type: ignore[arg-type]
        token = mint_token(settings, sub, role, partner_id=partner_id)
        members = self.of(service)
        if copy is None:
            copy = self._turns.get(service, 0) % len(members)
            self._turns[service] = copy + 1
        return httpx.AsyncClient(
            base_url=members[copy].url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )

    def of(self, service: str) -> list[Instance]:
        return [m for m in self.members if m.service == service]

    def spawn(self, member: Instance) -> None:
        upper = member.service.upper()
        env = (
            dict(self.env)
            | member.env
            | {
                f"AVIS_{upper}_HTTP_PORT": str(member.port),
                f"AVIS_{upper}_MONGO_DATABASE": self.databases[member.service],
            }
        )
        with member.log.open("ab") as log:
            log.write(f"--- start {member.starts + 1} ---\n".encode())
            log.flush()
            command = self.command or (lambda s: [str(ROOT / ".venv/bin" / f"avis-{s}")])
            member.process = subprocess.Popen(
                command(member.service),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        member.starts += 1

    async def wait_ready(self, member: Instance) -> None:
        """Poll `/readyz` until the instance is ready (it reaches the broker and store first)."""
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{member.url}/readyz")).status_code == 200:
                        return
                if member.process is None or member.process.poll() is not None:
                    raise RuntimeError(f"{member.name} exited:\n{self.tail(member)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{member.name} not ready in time:\n{self.tail(member)}")
                await asyncio.sleep(0.3)

    async def start(self) -> None:
        for member in self.members:
            self.spawn(member)
        for member in self.members:
            await self.wait_ready(member)

    def _account(self, member: Instance) -> None:
        """Keep what a process used before it goes away."""
        if member.process is not None:
            member.cpu_before += cpu_seconds(member.process.pid)
            member.peak_mib = max(member.peak_mib, peak_rss_mib(member.process.pid))

    def kill(self, member: Instance, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the instance (SIGKILL: no cleanup at all). Under `supervise()` it is
        started again."""
        if member.alive():
            assert member.process is not None
            self._account(member)
            member.process.send_signal(sig)

    async def restart(self, member: Instance) -> None:
        """Start an instance that exited, and wait until it is ready."""
        if member.process is not None:
            member.process.wait()
        self.spawn(member)
        self.restarts += 1
        await self.wait_ready(member)

    async def renew(self, member: Instance, env: Mapping[str, str]) -> None:
        """Stop the instance cleanly (SIGTERM) and start it again with `env` over the stack's
        settings, as an operator rolls out a rotated credential; ready on return. Under
        `supervise()` too: whichever of the two starts it first, the other sees it running."""
        member.env = dict(env)
        process = member.process
        if process is not None and process.poll() is None:
            self._account(member)
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait)
        if member.process is process:
            self.spawn(member)
            self.restarts += 1
        await self.wait_ready(member)

    @contextlib.asynccontextmanager
    async def supervised(self, interval: float = 0.5) -> AsyncIterator[None]:
        """While inside, an instance that exits is started again (as systemd or Kubernetes
        would)."""

        async def watch() -> None:
            while True:
                for member in self.members:
                    if member.process is not None and member.process.poll() is not None:
                        with contextlib.suppress(RuntimeError):
                            await self.restart(member)
                await asyncio.sleep(interval)

        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def usage(self) -> dict[str, dict[str, float]]:
        """CPU seconds and peak memory (MiB) of each instance so far, restarts included."""
        figures = {}
        for member in self.members:
            cpu, peak = member.cpu_before, member.peak_mib
            if member.alive():
                assert member.process is not None
                cpu += cpu_seconds(member.process.pid)
                peak = max(peak, peak_rss_mib(member.process.pid))
            figures[member.name] = {"cpu_s": round(cpu, 2), "peak_mib": round(peak, 1)}
        return figures

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every instance (a clean stop flushes batched spans), then kill stragglers."""
        for member in self.members:
            if member.alive():
                assert member.process is not None
                self._account(member)
                member.process.send_signal(signal.SIGTERM)
        for member in self.members:
            if member.process is not None:
                try:
                    member.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    member.process.kill()
                    member.process.wait()

    def tail(self, member: Instance, size: int = 3000) -> str:
        return member.log.read_text(errors="replace")[-size:] if member.log.exists() else ""

    def tails(self, size: int = 2000) -> str:
        """The end of each instance's log, for a failure message."""
        return "\n".join(f"--- {m.name} log ---\n{self.tail(m, size)}" for m in self.members)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["ServiceStack"]:
        """Started and ready inside; stopped on the way out, whatever happened."""
        try:
            await self.start()
            yield self
        finally:
            self.stop()
