"""Every service credential and key-encryption key rotated while cases flow, nothing re-encrypted,
nothing lost, and the old ones retired after (docs/operations.md, "Rotating keys and
certificates").

The services reach a key server of this test's own (so it can be restarted with other
certificates without touching the stack's). Before the burst, a new generation of certificates
is made (a new CA) and the key server trusts both CAs. While a burst of cases flows through
the fault run's harness (tests/reliability/chaos.py, no faults), each service in turn is
restarted with its new certificate and a new first key in its keyring (the old one still
opens). After quiet and the audit (nothing lost, nothing done twice), the old ones are retired:
notify seals its webhook secrets again, `avis-keys in-use` finds no value under an old key, the
key server trusts the new CA alone, and the services, restarted without the old keys and
without the old CA, still open every case; a client with an old certificate is refused.
"""

import asyncio
import os
from functools import partial
from pathlib import Path

import pytest

from avis.shared.key_usage import CASE_KEYS, in_use
from avis.shared.keys import KeyServiceError, KmipKeyService
from avis.shared.sealing import generate_key
from tests.reliability.chaos import CaseMix, Plan, Run, log, report, retrying, run
from tests.support.basics import MONGO_URL
from tests.support.kms import OwnKeyServer
from tests.support.stack import SERVICES

pytestmark = pytest.mark.infra

REASON = {"X-Avis-Reason": "rotation check"}


def keyrings() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Per service: its keyring before (one key), during (a new first key, the old one after)
    and after (the new key alone)."""
    old = {s: f"{s}-k1:{generate_key()}" for s in SERVICES}
    new = {s: f"{s}-k2:{generate_key()}" for s in SERVICES}
    return old, {s: f"{new[s]},{old[s]}" for s in SERVICES}, new


@pytest.mark.timeout(420)  # about 2.5 minutes on a quiet machine
async def test_credentials_and_keyrings_rotate_while_cases_flow(tmp_path: Path) -> None:
    server = OwnKeyServer(tmp_path / "state")
    first, second = server.first, tmp_path / "state" / "kms-2"
    old, during, new = keyrings()
    plan = Plan(
        cases=int(os.environ.get("ROTATION_CASES", "20")),
        seed=int(os.environ.get("CHAOS_SEED", "5")),
        reviewers=4,
        capacity=(2, 4),
        filers=4,
        fault_seconds=40.0,  # the filing's spread: the restarts land while it goes on
        kills_per_service=0,
        outages=False,
        think_seconds=2.0,
        quiet_timeout=180.0,
    )
    env = {"AVIS_KMS_CACHE_SECONDS": "1"}  # every read reaches the key server again
    each = {
        s: server.service_env(s, first, first / "trusted.pem") | {"AVIS_SEALING_KEYS": old[s]}
        for s in SERVICES
    }
    retired: dict[str, object] = {}

    async def rotate(chaos: Run) -> None:
        """While cases flow: each service in turn with its new certificate and keyring."""
        await asyncio.sleep(plan.fault_seconds * 0.1)  # a few cases on their way first
        for member in chaos.stack.members:
            renewed = server.service_env(member.service, second, second / "trusted.pem")
            renewed["AVIS_SEALING_KEYS"] = during[member.service]
            await chaos.stack.renew(member, renewed)
            log(f"{member.name}: new certificate and keyring, {len(chaos.cases)} cases filed")
            await asyncio.sleep(1.0)

    async def retire(chaos: Run) -> None:
        """After quiet: the old keys and certificates go, and every case still opens."""
        stack = chaos.stack
        resealed = await stack.client("notify", "ops", "service").post("/v1/webhook-secrets/reseal")
        assert resealed.status_code == 200, resealed.text
        assert resealed.json() == {"resealed": 2, "key_id": "notify-k2"}, "both partners'"
        usage = await in_use(MONGO_URL, list(stack.databases.values()))
        for service, database in stack.databases.items():
            sealed, _, digests = usage[database]
            retired[service] = (dict(sealed), dict(digests))
            assert f"{service}-k1" not in sealed, f"{service}: {sealed}"
        assert usage[stack.databases["intake"]].cases >= plan.cases
        assert usage[stack.databases["intake"]].sealed[CASE_KEYS] > 0

        log(f"re-sealed; in use: {retired}")
        # The key server trusts the new CA alone, with its new certificate.
        server.certs(second, "--retire")
        await asyncio.to_thread(server.run, "restart", AVIS_KMS_CERTS=str(second))
        refused = KmipKeyService(server.endpoint("intake", first, second / "trusted.pem"))
        taken = KmipKeyService(server.endpoint("intake", second, second / "trusted.pem"))
        key_ref = await taken.create_key("rotation-probe")
        with pytest.raises(KeyServiceError):
            await refused.key(key_ref)
        await taken.destroy(key_ref)

        # Every service without its old key and without the old CA (all at once: the burst
        # is over).
        await asyncio.gather(
            *(
                stack.renew(
                    member,
                    server.service_env(member.service, second, second / "trusted.pem")
                    | {"AVIS_SEALING_KEYS": new[member.service]},
                )
                for member in stack.members
            )
        )
        log("every service without its old key and CA: reading every case")
        coordinator = {s: stack.client(s, "rotation-coord", "coordinator") for s in SERVICES}
        assignments = chaos.db("review")["assignments"]
        gate = asyncio.Semaphore(4)

        async def opens(case_id: str) -> None:
            rounds = await assignments.find({"case_id": case_id}).to_list()
            [answered] = [a for a in rounds if a.get("opinions")]
            for service, path in (
                ("intake", f"/v1/cases/{case_id}/clinical"),
                ("review", f"/v1/assignments/{answered['_id']}/opinion"),
                ("reports", f"/v1/cases/{case_id}/report"),
            ):
                async with gate:
                    read = await retrying(partial(coordinator[service].get, path, headers=REASON))
                assert read.status_code == 200, f"{service} {path}: {read.text}"

        await asyncio.gather(*(opens(case_id) for case_id in chaos.cases))
        # Notify opens its webhook secrets with the new key alone: a new case is signed for.
        hooks = len(chaos.partners.received)
        await chaos.file(CaseMix(plan.cases, "partner-a", decline=False, correct=False))
        async with asyncio.timeout(60):
            while not any(h.verified for h in chaos.partners.received[hooks:]):
                chaos.partners.arrived.clear()
                await chaos.partners.arrived.wait()
        log("a new case's webhook signed with a secret opened under the new key alone")

    server.run("start")
    try:
        server.run("wait")
        server.certs(first, "--next", second)
        # Before the burst: the key server takes clients of both CAs (its certificate unchanged).
        server.run("restart", AVIS_KMS_TRUSTED_FILE=str(second / "trusted.pem"))
        figures = await run(plan, probe=retire, during=rotate, env=env, each=each)
    finally:
        server.run("stop")
    print(report(figures))
    print(f"after the re-seal, per service (sealed values, keyed digests by key id): {retired}")
    assert figures.service_restarts >= len(SERVICES) * 2, "each renewed twice"
    assert figures.problems == [], report(figures)
