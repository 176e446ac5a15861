"""The bare pipeline (bench/bare_pipeline.py) does the work it claims: a small run against the
test stack puts every case through every Kafka hop and every store write of its table."""

import importlib.util
import sys
from types import ModuleType

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from tests.support.basics import BOOTSTRAP, KAFKA, MONGO_URL, ROOT

pytestmark = pytest.mark.infra
CASES = 12


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bare_pipeline", ROOT / "bench/bare_pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bare_pipeline", module)
    spec.loader.exec_module(module)
    return module


async def test_every_case_goes_through_every_hop_and_write_and_nothing_is_left() -> None:
    bare = load()
    # The table the docstring states: 5 events published and 11 records consumed per case,
    # 62 writes (requests; intake's and reports' inbox markers go together, apart).
    assert sum(sum(t.values()) for t in bare.PUBLISHED_BY.values()) == 5
    assert sum(sum(t.values()) for t in bare.CONSUMED_PER_CASE.values()) == 11
    assert sum(sum(s.values()) for s in bare.WRITES_PER_CASE.values()) == 62

    figures = await bare.run(
        CASES, bootstrap=BOOTSTRAP, mongo_url=MONGO_URL, database_prefix="tbare", timeout=45
    )

    assert figures["errors"] == {}
    assert figures["complete_cases"] == CASES  # every mark of every case: each hop happened
    assert figures["published"] == figures["expected_published"]
    assert figures["consumed"] == figures["expected_consumed"]
    assert figures["writes"] == figures["expected_writes"]
    assert figures["writes_per_case"] == 62
    # What the store holds afterwards, counted there: every case left its documents.
    assert figures["verify"]["found"] == figures["verify"]["wanted"]
    assert all(len(p) == 4 for p in figures["hops_ms"].values())
    assert figures["cases_per_s"] > 0

    # Its topics and databases are gone.
    run_id = figures["run_id"]
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(MONGO_URL)
    try:
        assert not [n for n in await client.list_database_names() if run_id in n]
    finally:
        await client.close()
    admin = AIOKafkaAdminClient(**KAFKA.options())
    await admin.start()
    try:
        assert not [t for t in await admin.list_topics() if run_id in t]
    finally:
        await admin.close()
