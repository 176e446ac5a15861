"""After a rotation of notify's keyring, its webhook secrets are sealed again under the new first
key (POST /v1/webhook-secrets/reseal, service machines only), and a secret whose key already
left the keyring is a clear 409, never a 500 (docs/operations.md, "Rotating keys and
certificates"; tests/reliability/test_rotation.py does it while cases flow)."""

import pytest

from avis.notify.store import secret_aad
from avis.shared.sealing import Keyring, Sealed, generate_key
from tests.support.basics import SEALING_KEYS, unique
from tests.support.notify import running_notify, subscribe

pytestmark = pytest.mark.infra

RESEAL = "/v1/webhook-secrets/reseal"


async def test_secrets_sealed_again_under_the_new_key_by_a_service_machine_only() -> None:
    async with running_notify() as stack:
        partner = unique("ptn")
        sub = await subscribe(stack, partner, "http://hooks.partner.example:9/r")
        stored = stack.db["subscriptions"]
        doc = await stored.find_one({"_id": sub["id"]})
        assert doc is not None and doc["secrets"][0]["sealed"]["kid"] == "k1"

        # The keyring rotated: a new first key, the old one still opens.
        stack.notify.keyring = Keyring.parse(f"k2:{generate_key()},{SEALING_KEYS}")
        async with stack.client(partner, "partner") as them:
            assert (await them.post(RESEAL)).status_code == 403
        async with stack.client("ops", "service") as ops:
            first = await ops.post(RESEAL)
            assert first.status_code == 200, first.text
            assert first.json() == {"resealed": 1, "key_id": "k2"}
            assert (await ops.post(RESEAL)).json()["resealed"] == 0, "nothing left to do"
        doc = await stored.find_one({"_id": sub["id"]})
        assert doc is not None
        [secret] = doc["secrets"]
        assert secret["sealed"]["kid"] == "k2"
        aad = secret_aad(sub["id"], secret["id"])
        value = stack.notify.keyring.open(Sealed.model_validate(secret["sealed"]), aad)
        assert value.decode() == sub["secret"], "the same secret, under the new key"

        # A key dropped before its values were sealed again: said, not a 500.
        stack.notify.keyring = Keyring.parse(f"k3:{generate_key()}")
        async with stack.client("ops", "service") as ops:
            refused = await ops.post(RESEAL)
        assert refused.status_code == 409, refused.text
        assert "k2" in refused.json()["detail"]
