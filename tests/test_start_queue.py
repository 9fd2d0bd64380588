"""The hub's line of starting servers: a few at a time, in order, and nobody lost when a wait is cancelled."""

import asyncio

import pytest

pytestmark = pytest.mark.asyncio

from tljh.hub.start_queue import StartQueue, parallel_for


@pytest.mark.filterwarnings("ignore")
def test_parallel_for():
    assert parallel_for(None, cpus=2) == 2
    assert parallel_for("auto", cpus=8) == 8
    assert parallel_for(4) == 4


async def test_at_most_parallel_start_and_the_rest_wait_in_order():
    q = StartQueue(2)
    order = []

    async def start(name, seconds):
        await q.acquire(name)
        order.append(name)
        assert len(q.running) <= 2
        await asyncio.sleep(seconds)
        q.release(name)

    tasks = [asyncio.create_task(start(n, 0.02)) for n in "abcde"]
    await asyncio.sleep(0)
    assert q.state("a") == ("starting", 0) and q.state("b") == ("starting", 0)
    assert q.state("c") == ("waiting", 0) and q.state("e") == ("waiting", 2)
    await asyncio.gather(*tasks)
    assert order == list("abcde")
    assert not q.running and not q.waiting


async def a_starts_b_and_c_wait():
    q = StartQueue(1)
    await q.acquire("a")
    waiter = asyncio.create_task(q.acquire("b"))
    behind = asyncio.create_task(q.acquire("c"))
    await asyncio.sleep(0)
    return q, waiter, behind


async def test_cancelled_wait_leaves_the_line():
    q, waiter, behind = await a_starts_b_and_c_wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert q.state("c") == ("waiting", 0)
    q.release("a")
    await asyncio.wait_for(behind, 1)
    assert q.running == {"c"}


async def test_turn_granted_as_the_wait_is_cancelled_passes_on():
    q, waiter, behind = await a_starts_b_and_c_wait()
    q.release("a")  # b's turn comes ...
    waiter.cancel()  # ... but b gave up before it could start
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.wait_for(behind, 1)
    assert q.running == {"c"}


async def test_changed_wakes_watchers():
    q = StartQueue(1)
    watcher = asyncio.create_task(q.changed())
    await asyncio.sleep(0)
    assert not watcher.done()
    await q.acquire("a")
    await asyncio.wait_for(watcher, 1)


async def told(q, key, interval, into):
    async for state, before in q.places(key, interval):
        into.append((round(asyncio.get_running_loop().time(), 3), state, before))


async def test_a_place_is_told_when_it_changes_at_most_every_interval_and_the_turn_at_once():
    q = StartQueue(1)
    await q.acquire("a")
    for key in "bcd":
        asyncio.ensure_future(q.acquire(key))
    await asyncio.sleep(0)
    events = []
    watcher = asyncio.create_task(told(q, "d", 0.3, events))
    await asyncio.sleep(0.01)
    assert [e[1:] for e in events] == [("waiting", 2)]
    for key in "efg":  # people joining behind d do not change d's place: nothing to tell
        asyncio.ensure_future(q.acquire(key))
    await asyncio.sleep(0.01)
    q.release("a")  # d moves up twice within the quiet time: told once, the latest place, after it
    await asyncio.sleep(0.01)
    q.release("b")
    await asyncio.sleep(0.05)
    assert [e[1:] for e in events] == [("waiting", 2)]
    await asyncio.sleep(0.6)
    assert [e[1:] for e in events] == [("waiting", 2), ("waiting", 0)]
    assert events[1][0] - events[0][0] >= 0.29
    q.release("c")  # d's turn, inside the next quiet time: at once
    await asyncio.wait_for(watcher, 0.1)
    assert events[-1][1:] == ("starting", 0)
    for key in "defg":
        q.release(key)


async def test_places_stay_right_as_people_leave_the_line():
    q, waiter, behind = await a_starts_b_and_c_wait()
    late = asyncio.create_task(q.acquire("d"))
    await asyncio.sleep(0)
    assert q.state("d") == ("waiting", 2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (q.state("c"), q.state("d")) == (("waiting", 0), ("waiting", 1))
    q.release("a")
    await asyncio.wait_for(behind, 1)
    assert q.state("d") == ("waiting", 0)
    late.cancel()
