"""The test stack's key server (PyKMIP, started by deploy/local/test.sh as by `make run`): its
address, the certificates deploy/kms/install.sh made for it, and a client factory that counts
the KMIP requests a key service sends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from avis.shared.case_keys import CaseKeys
from avis.shared.envelope import Event
from avis.shared.events import CaseErased
from avis.shared.keys import KmipEndpoint, proxy_client
from avis.shared.sealing import Sealed
from avis.shared.settings import CommonSettings
from tests.support.basics import ROOT
from tests.support.stack import free_port

PORT = int(os.environ.get("AVIS_KMS_PORT", "15696"))
FOLDER = Path(os.environ.get("AVIS_STATE_DIR", str(ROOT / ".local/test"))) / "kms"
REQUESTS = ("create", "activate", "get", "locate", "revoke", "destroy")


def endpoint(identity: str, folder: Path = FOLDER) -> KmipEndpoint:
    """The key server as `identity` (a service, or admin) with its certificate from `folder`;
    the server is always checked against the stack's own CA."""
    return KmipEndpoint(
        host="127.0.0.1",
        port=PORT,
        cert_file=str(folder / f"{identity}.pem"),
        key_file=str(folder / f"{identity}.key"),
        ca_file=str(FOLDER / "ca.pem"),
        timeout_seconds=10.0,
    )


class CountingClients:
    """A client factory for KmipKeyService: real PyKMIP clients whose connections and requests
    are counted in `calls` ("open", "create", "get", ...)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, where: KmipEndpoint) -> _Counted:
        return _Counted(proxy_client(where), self.calls)


class _Counted:
    def __init__(self, client: Any, calls: Counter[str]) -> None:
        self._client = client
        self._calls = calls

    def open(self) -> None:
        self._calls["open"] += 1
        self._client.open()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> _Counted:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in REQUESTS:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


async def opened(settings: CommonSettings, sealed: Sealed, aad: str) -> bytes:
    """A sealed value opened as a service with `settings` opens it: under its case's key, read
    from the key server with the service's certificate, or under the service's keyring."""
    return (await CaseKeys.from_settings(settings).opening(sealed)).open(sealed, aad)


def erased_event(
    case_id: str, key_ref: str | None, *, notice: Sealed | None = None, event_id: str | None = None
) -> Event:
    """`avis.case.erased.v1` of the patient's request, as intake publishes it once it destroyed
    the case's key; with `notice`, the contact for the erasure's email, sealed under its own key
    and bound to `event_id`."""
    payload = CaseErased(
        case_id=case_id,
        key_ref=key_ref,
        erased_at=datetime.now(UTC),
        requested_by="patient",
        notice=notice,
    )
    return Event.new(payload, "/avis/intake", event_id=event_id)


def kms_env() -> dict[str, str]:
    """The test stack's key server and each service's certificate there, for services started
    as processes: every case sealed under its own key, as with `make run`."""
    return {k: v for k, v in os.environ.items() if k.startswith("AVIS_") and "_KMS_" in k}


class OwnKeyServer:
    """A key server of a test's own: deploy/kms/install.sh with a state folder and a port of its
    own, so the test may restart it with other certificates (a rotation) and never touch the
    stack's, which the other tests use. Its first certificates are made in `state`/kms."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = free_port()
        self.first = state / "kms"

    def run(self, action: str, **settings: str) -> None:
        """`install.sh <action>` for this server, with `settings` (AVIS_KMS_CERTS, ...)."""
        env = (
            os.environ
            | settings
            | {
                "AVIS_STATE_DIR": str(self.state),
                "AVIS_KMS_PORT": str(self.port),
            }
        )
        subprocess.run([str(ROOT / "deploy/kms/install.sh"), action], env=env, cwd=ROOT, check=True)

    def crash(self) -> None:
        """End this server at once (SIGKILL to its process group: no goodbye to its clients),
        then start it again and wait until it answers."""
        recorded = self.state / "kms.pid"
        os.killpg(int(recorded.read_text()), signal.SIGKILL)
        # Gone when nothing listens on its port (its children held the socket too), though maybe
        # not yet reaped: `start` must not take its pid for a server still running.
        deadline = time.monotonic() + 10.0
        while _listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        recorded.unlink()
        self.run("start")
        self.run("wait")

    def certs(self, *args: str | Path) -> None:
        """deploy/kms/certs.py with `args` (--next NEW, --retire)."""
        command = [str(ROOT / ".venv/bin/python"), str(ROOT / "deploy/kms/certs.py")]
        subprocess.run([*command, *map(str, args)], cwd=ROOT, check=True)

    def service_env(self, service: str, folder: Path, trusted: Path) -> dict[str, str]:
        """A service's settings for this server: its certificate from `folder`, the server
        checked against the CAs in `trusted`."""
        upper = service.upper()
        return {
            "AVIS_KMS_URL": f"kmip://127.0.0.1:{self.port}",
            "AVIS_KMS_CA_FILE": str(trusted),
            f"AVIS_{upper}_KMS_CERT_FILE": str(folder / f"{service}.pem"),
            f"AVIS_{upper}_KMS_KEY_FILE": str(folder / f"{service}.key"),
        }

    def endpoint(self, identity: str, folder: Path, trusted: Path) -> KmipEndpoint:
        """This server as `identity` with its certificate from `folder`."""
        return KmipEndpoint(
            host="127.0.0.1",
            port=self.port,
            cert_file=str(folder / f"{identity}.pem"),
            key_file=str(folder / f"{identity}.key"),
            ca_file=str(trusted),
            timeout_seconds=10.0,
        )


def _listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
