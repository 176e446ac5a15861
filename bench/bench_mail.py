"""Notify's mailer side by side: a connection per email (the old way: `aiosmtplib.send`, which
connects, says EHLO, STARTTLS if offered, sends and says QUIT each time) against kept
connections (`avis.notify.mailer.Mailer`), in alternating rounds so that neither gains from
going first or from a warmer machine.

Two servers: the test stack's SMTP sink (deploy/local/smtp_sink.py: plain SMTP, no STARTTLS
offered, each message written to a file), as the journey's notify uses it; and an SMTP server
of the bench's own in a process of its own (tests/support/smtp.py) offering STARTTLS with a
certificate made for 127.0.0.1, as a real mail server would, the emails sent with
`AVIS_NOTIFY_SMTP_STARTTLS=always`. Against each: N emails one after another (as notify's email
queue sends them), and N with the mailer's connections at once (AVIS_NOTIFY_SMTP_CONNECTIONS,
4 by default, the old way under the same cap). It prints per way and round the emails a second,
the bench process's CPU milliseconds per email and the connections the mailer opened; then the
median of each over the rounds, and the new way's ratio to the old measured in the same run.
Every email must be accepted: a failed one is counted and shown. Writes
bench/results/mail-<time>.json.

Usage: make bench BENCH_ARGS="bench/bench_mail.py [--quick]"  (or: python bench/bench_mail.py)
       --rounds N    rounds of each way (default 3, quick 2)
       --emails N    emails per measure (default 200, quick 100)
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_journey import write_results

from avis.notify.mailer import Mailer, SmtpTarget
from avis.notify.models import Outcome
from tests.support.smtp import certificate, smtp_server, trusted

WAYS = ("per-email", "kept")
STAMP = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
SINK_URL = os.environ.get("AVIS_SMTP_URL", "smtp://127.0.0.1:11025")
CONNECTIONS = 4


class PerEmail(Mailer):
    """The old way: a connection of its own for each email (same outcomes, same cap)."""

    async def _exchange(self, message: EmailMessage) -> dict[str, aiosmtplib.SMTPResponse]:
        self.opened += 1
        responses, _ = await aiosmtplib.send(message, **self.target.client_options())
        return responses


def email(n: int) -> EmailMessage:
    """An email about the size of notify's (a text and an HTML part)."""
    message = EmailMessage()
    message["From"] = "Avis <no-reply@avis.local>"
    message["To"] = f"bench-mail-{n}@example.org"
    message["Subject"] = "Votre demande d'avis a bien été reçue"
    message["Message-ID"] = f"<bench-{STAMP}-{n}@avis.local>"
    text = "Bonjour,\n\nNous avons bien reçu votre demande. " * 40
    message.set_content(text)
    message.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    return message


async def measure(way: str, server: str, port: int, emails: int, at_once: bool) -> dict[str, Any]:
    """N emails one after another, or all at once under the cap; the figures."""
    start_tls = True if server == "starttls" else None
    target = SmtpTarget("127.0.0.1", port, False, start_tls, None, None, 15.0, CONNECTIONS, 20.0)
    mailer = (PerEmail if way == "per-email" else Mailer)(target)
    messages = [email(n) for n in range(emails)]
    cpu, wall = time.process_time(), time.perf_counter()
    if at_once:
        results = await asyncio.gather(*(mailer.send(m) for m in messages))
    else:
        results = [await mailer.send(m) for m in messages]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await mailer.close()
    failed = [r.reason for r in results if r.outcome is not Outcome.SENT]
    return {
        "way": way,
        "server": server,
        "at_once": at_once,
        "emails": emails,
        "per_second": round(emails / wall, 1),
        "cpu_ms_per_email": round(1000 * cpu / emails, 3),
        "connections": mailer.opened,
        "failed": failed,
    }


async def serve_starttls() -> None:
    """The bench's own STARTTLS server, in this process (`--serve`): prints its port and the
    certificate to trust, serves until its input closes."""
    with certificate() as (tls, cert_file):
        async with smtp_server(tls=tls) as server:
            print(server.port, cert_file, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        key = f"{r['server']} {'at once' if r['at_once'] else 'one by one'} {r['way']}"
        out.setdefault(key, {"per_second": [], "cpu_ms_per_email": [], "connections": []})
        for field in ("per_second", "cpu_ms_per_email", "connections"):
            out[key][field].append(r[field])
    return {k: {f: statistics.median(v) for f, v in d.items()} for k, d in out.items()}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--emails", type=int)
    args, _ = parser.parse_known_args()
    if args.serve:
        return await serve_starttls()
    rounds = args.rounds or (2 if args.quick else 3)
    emails = args.emails or (100 if args.quick else 200)
    sink_port = int(SINK_URL.rsplit(":", 1)[1].strip("/"))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    port_text, cert_file = (await child.stdout.readline()).decode().split()
    servers = {"sink": sink_port, "starttls": int(port_text)}
    print(f"mail: {emails} emails a measure, {rounds} rounds a way, cap {CONNECTIONS} at once")
    results = []
    with trusted(Path(cert_file)):
        for index in range(rounds):
            order = WAYS if index % 2 == 0 else tuple(reversed(WAYS))
            for server, port in servers.items():
                for at_once in (False, True):
                    for way in order:
                        r = await measure(way, server, port, emails, at_once)
                        results.append(r | {"round": index + 1})
                        pattern = "at once   " if at_once else "one by one"
                        failed = f"  FAILED {len(r['failed'])}" if r["failed"] else ""
                        print(
                            f"  round {index + 1} {server:8} {pattern} {way:9}: "
                            f"{r['per_second']:7.1f} emails/s  {r['cpu_ms_per_email']:6.2f} CPU "
                            f"ms/email  {r['connections']:4} connections{failed}"
                        )
    child.stdin.close()
    await child.wait()
    report(results, emails, rounds)


def report(results: list[dict[str, Any]], emails: int, rounds: int) -> None:
    medians = summary(results)
    print("  medians:")
    for key, figures in medians.items():
        print(f"    {key:32} {figures}")
    ratios = {}
    for key, figures in medians.items():
        if not key.endswith(" kept"):
            continue
        what = key.removesuffix(" kept")
        old = medians[f"{what} per-email"]
        ratios[what] = {
            "per_second": round(figures["per_second"] / old["per_second"], 2),
            "cpu_ms_per_email": round(figures["cpu_ms_per_email"] / old["cpu_ms_per_email"], 2),
        }
        print(
            f"  kept / per-email, {what}: {ratios[what]['per_second']} x the emails a second, "
            f"{ratios[what]['cpu_ms_per_email']} x the CPU per email"
        )
    failures = sum(len(r["failed"]) for r in results)
    if failures:
        print(
            f"  {failures} emails failed: {[r['failed'][:3] for r in results if r['failed']][:3]}"
        )
    write_results(
        "mail",
        STAMP,
        {
            "emails": emails,
            "rounds": rounds,
            "connections_cap": CONNECTIONS,
            "results": results,
            "medians": medians,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
