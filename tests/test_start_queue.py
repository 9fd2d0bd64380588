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
