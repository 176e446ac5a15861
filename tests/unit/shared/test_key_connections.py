"""The key service's connections, kept open between operations (`avis.shared.keys.ClientPool`):
reused, dropped when broken and the operation sent again once where that is safe, closed when
idle or when the service stops."""

from __future__ import annotations

import asyncio
import time

import pytest

from avis.shared.keys import ClientPool, KeyServiceError, KeyUnavailable, KmipKeyService
from tests.support.fake_kmip import FakeServer
from tests.unit.shared.test_keys import ENDPOINT


def service(server: FakeServer, **options: int) -> KmipKeyService:
    return KmipKeyService(ENDPOINT, client_factory=server, **options)


async def test_one_connection_serves_one_operation_after_another() -> None:
    server = FakeServer()
    keys = service(server)
    key_id = await keys.create_key("case-1")
    for _ in range(20):
        keys.forget(key_id)
        await keys.key(key_id)
    assert server.calls["get"] == 21
    assert server.calls["open"] == 1 and keys.pool.opened == 1
    assert server.open_now == 1


async def test_without_connections_kept_each_operation_opens_its_own() -> None:
    server = FakeServer()
    keys = service(server, connections=0)
    key_id = await keys.create_key("case-1")
    keys.forget(key_id)
    await keys.key(key_id)
    assert server.calls["open"] == 2 and server.calls["close"] == 2
    assert server.open_now == 0


def test_operations_at_once_open_more_and_keep_at_most_the_bound() -> None:
    server = FakeServer()
    pool = ClientPool(lambda: server(ENDPOINT), size=2)
    taken = [pool.take() for _ in range(3)]
    assert [reused for _, reused in taken] == [False, False, False]
    for client, _ in taken:
        pool.give(client)
    assert server.calls["open"] == 3 and server.open_now == 2 and len(pool) == 2
    assert not taken[2][0].is_open  # given back to a full pool: closed
    assert pool.take() == (taken[1][0], True)  # the one given back last
    pool.close()
    assert server.open_now == 1  # the one still taken


async def test_operations_beyond_the_connections_wait_for_one_and_open_none() -> None:
    server = FakeServer()
    keys = service(server, connections=3)
    ids = [await keys.create_key(f"case-{i}") for i in range(12)]
    for key_id in ids:
        keys.forget(key_id)
    server.request_seconds = 0.02  # twelve reads at once overlap
    read = await asyncio.gather(*(keys.key(key_id) for key_id in ids))
    assert read == [server.keys[key_id] for key_id in ids]
    assert keys.pool.opened <= 3 and server.calls["close"] == 0
    keys.close()


async def test_a_connection_the_server_closed_is_dropped_and_the_read_sent_again() -> None:
    server = FakeServer()
    keys = service(server)
    key_id = await keys.create_key("case-1")
    keys.forget(key_id)
    server.hang_up()

    assert await keys.key(key_id) == server.keys[key_id]

    assert server.calls["open"] == 2
    assert server.calls["get"] == 2  # the creation's, and the read on the new connection
    assert server.open_now == 1 and len(keys.pool) == 1


async def test_a_destruction_and_a_look_up_are_sent_again_on_a_new_connection() -> None:
    server = FakeServer()
    keys = service(server)
    key_id = await keys.create_key("case-1")
    server.hang_up()
    assert await keys.find_key("case-1") == key_id
    server.hang_up()
    await keys.destroy(key_id)
    assert key_id not in server.keys
    assert server.calls["open"] == 3


async def test_a_destruction_whose_answer_was_lost_finds_the_key_gone() -> None:
    server = FakeServer()
    keys = service(server)
    key_id = await keys.create_key("case-1")
    server.answer_lost = "destroy"
    with pytest.raises(KeyUnavailable):
        await keys.destroy(key_id)  # CaseKeys.destroy takes this as done
    assert key_id not in server.keys


async def test_a_creation_whose_answer_was_lost_takes_the_key_made_not_a_second() -> None:
    server = FakeServer()
    keys = service(server)
    await keys.create_key("case-0")  # a connection now in the pool
    server.answer_lost = "create"

    key_id = await keys.create_key("case-1")

    assert server.calls["create"] == 2  # case-0's, and case-1's once
    assert server.calls["locate"] == 1
    assert key_id in server.active
    assert [k for k, name in server.names.items() if name == "avis-case:case-1"] == [key_id]
    assert await keys.key(key_id) == server.keys[key_id]


async def test_a_creation_whose_activation_answer_was_lost_is_taken_as_it_is() -> None:
    server = FakeServer()
    keys = service(server)
    await keys.create_key("case-0")
    server.answer_lost = "activate"

    key_id = await keys.create_key("case-1")

    assert server.calls["create"] == 2 and server.calls["activate"] == 3  # one refused
    assert await keys.key(key_id) == server.keys[key_id]


async def test_a_creation_on_a_server_that_lost_nothing_makes_its_key_again() -> None:
    server = FakeServer()
    keys = service(server)
    await keys.create_key("case-0")
    server.hang_up()  # the request never reached it
    key_id = await keys.create_key("case-1")
    assert server.names[key_id] == "avis-case:case-1"
    assert server.calls["create"] == 2


async def test_a_new_connection_that_fails_is_not_tried_again() -> None:
    server = FakeServer()
    keys = service(server, connections=0)
    key_id = await keys.create_key("case-1")
    keys.forget(key_id)
    server.answer_lost = "get"
    with pytest.raises(KeyServiceError, match=r"cannot reach .*EOFError"):
        await keys.key(key_id)
    assert server.calls["get"] == 2
    assert server.open_now == 0


async def test_a_timeout_is_not_waited_for_twice() -> None:
    server = FakeServer()
    keys = service(server)
    key_id = await keys.create_key("case-1")
    keys.forget(key_id)
    (client,) = server.clients

    def slow(key_id: str) -> None:
        raise TimeoutError("The read operation timed out")

    client.get = slow  # type: ignore[method-assign]
    with pytest.raises(KeyServiceError, match="TimeoutError"):
        await keys.key(key_id)
    assert server.calls["open"] == 1
    assert not client.is_open and len(keys.pool) == 0  # its connection is in doubt: dropped


async def test_an_unknown_key_is_unavailable_and_its_connection_kept() -> None:
    server = FakeServer()
    keys = service(server)
    for _ in range(3):
        with pytest.raises(KeyUnavailable, match="key 404 is unknown"):
            await keys.key("404")
    assert server.calls["open"] == 1 and len(keys.pool) == 1


async def test_closing_the_service_closes_its_connections() -> None:
    server = FakeServer()
    keys = service(server)
    await keys.create_key("case-1")
    assert server.open_now == 1
    keys.close()
    assert server.open_now == 0
    keys.pool.give(server(ENDPOINT))  # one that was in use when it closed
    assert len(keys.pool) == 0


def test_a_connection_unused_for_its_idle_time_is_closed() -> None:
    server = FakeServer()
    now = [0.0]
    pool = ClientPool(lambda: server(ENDPOINT), size=4, idle_seconds=5, clock=lambda: now[0])
    first, _ = pool.take()
    second, _ = pool.take()
    pool.give(first)
    now[0] = 3.0
    pool.give(second)
    now[0] = 5.0
    pool.close_idle()
    assert not first.is_open and second.is_open
    assert pool.take() == (second, True)
    pool.close()


def test_the_idle_connections_are_closed_without_another_operation() -> None:
    server = FakeServer()
    pool = ClientPool(lambda: server(ENDPOINT), idle_seconds=0.05)
    client, _ = pool.take()
    pool.give(client)
    assert client.is_open
    deadline = time.monotonic() + 2.0
    while client.is_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not client.is_open and len(pool) == 0
