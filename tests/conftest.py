"""Fixtures shared by the suite. Integration tests talk to the real broker and store that
`make test` starts (deploy/local/test.sh); their addresses and helpers live in tests/support."""

from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from avis.shared.settings import CommonSettings
from tests.support.basics import BOOTSTRAP, make_settings, unique
from tests.support.stack import ServiceStack
from tests.support.web import web_stack

# The properties are about values, never about speed: on a loaded machine one example can take
# longer than Hypothesis' deadline (200 ms) or its generation look slow, and the run would fail
# ("Unreliable test timings") for no fault of the code. Built on the profile in force, so the
# `ci` profile Hypothesis loads in CI keeps its own settings.
_in_force = hypothesis_settings.default
assert _in_force is not None
hypothesis_settings.register_profile(
    "avis",
    _in_force,
    deadline=None,
    suppress_health_check=list(
        dict.fromkeys([*_in_force.suppress_health_check, HealthCheck.too_slow])
    ),
)
hypothesis_settings.load_profile("avis")


@pytest.fixture
def settings() -> CommonSettings:
    """Fresh settings: a service name, group and database of this test's own."""
    return make_settings()


@pytest.fixture
async def topic() -> AsyncIterator[str]:
    """A topic (and its .dlq) of this test's own, so tests never read each other's events."""
    name = unique("test")
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1), NewTopic(f"{name}.dlq", 1, 1)])
        yield name
    finally:
        await admin.delete_topics([name, f"{name}.dlq"])
        await admin.close()


@pytest.fixture(scope="session")
def web_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """The five processes behind the pages, started once for every web and browser test (each
    test works on cases and ids of its own)."""
    with web_stack(tmp_path_factory.mktemp("web") / "logs") as running:
        yield running
