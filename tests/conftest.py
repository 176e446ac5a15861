"""Fixtures shared by the suite. Integration tests talk to the real broker and store that
`make test` starts (deploy/local/test.sh); their addresses and helpers live in tests/support."""

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from avis.shared.settings import CommonSettings
from tests.support.basics import KAFKA, make_settings, unique
from tests.support.stack import ServiceStack
from tests.support.web import SharedWebStack

# A hung test prints where the event loop's tasks wait, before its timeout fails it.
pytest_plugins = ["tests.support.hangs"]

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
    admin = AIOKafkaAdminClient(**KAFKA.options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1), NewTopic(f"{name}.dlq", 1, 1)])
        yield name
    finally:
        await admin.delete_topics([name, f"{name}.dlq"])
        await admin.close()


# The five processes behind the pages, shared by the web and browser tests that run one after
# another, and stopped after the last of them, so they never see other tests' events.
WEB = SharedWebStack()


@pytest.fixture
def web_services(tmp_path_factory: pytest.TempPathFactory) -> ServiceStack:
    """The web stack (started by the first test that asks for it; each test works on cases
    and ids of its own)."""
    return WEB.get(lambda: tmp_path_factory.mktemp("web") / "logs")


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the web stack after the last of a run of tests that use it."""
    uses = "web_services" in getattr(item, "fixturenames", ())
    if uses and (nextitem is None or "web_services" not in getattr(nextitem, "fixturenames", ())):
        WEB.stop()
