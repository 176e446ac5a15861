"""Whether the local key server answers: with the admin certificate, it creates one key under our
operation policy, gives it back and destroys it. Its policy monitor loads the policy a moment
after the server listens, and until then the key can be neither read nor destroyed, so the key
is created once and read again until the policy lets it be read."""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

POLICY = "avis-case-key"


def alive(pid: int) -> bool:
    """Whether process `pid` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def client(port: int, folder: Path) -> ProxyKmipClient:
    """A client of the server on 127.0.0.1:port with the admin certificate of `folder`, which
    checks the server against the CAs that folder trusts."""
    trusted = folder / "trusted.pem"
    return ProxyKmipClient(
        hostname="127.0.0.1",
        port=port,
        cert=str(folder / "admin.pem"),
        key=str(folder / "admin.key"),
        ca=str(trusted if trusted.exists() else folder / "ca.pem"),
        ssl_version="PROTOCOL_TLSv1_2",
        config_file="/dev/null",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--pid", type=int, help="give up at once when this process has exited")
    parser.add_argument("--seconds", type=float, default=90.0)
    args = parser.parse_args()
    # Its client logs each refused connection; this loop expects some while the server starts.
    logging.getLogger("kmip").addHandler(logging.NullHandler())
    logging.getLogger("kmip").propagate = False
    deadline = time.monotonic() + args.seconds
    uid = None
    while True:
        try:
            with client(args.port, args.folder) as c:
                if uid is None:
                    uid = c.create(
                        enums.CryptographicAlgorithm.AES, 256, operation_policy_name=POLICY
                    )
                if len(c.get(uid).value) != 32:
                    raise RuntimeError("the key read back is not 32 bytes")
                c.destroy(uid)
            return
        except Exception as error:
            if args.pid and not alive(args.pid):
                print(f"the key server (pid {args.pid}) exited", file=sys.stderr)
                sys.exit(1)
            if time.monotonic() > deadline:
                print(f"no answer from the key server: {error}", file=sys.stderr)
                sys.exit(1)
            time.sleep(0.2)


if __name__ == "__main__":
    main()
