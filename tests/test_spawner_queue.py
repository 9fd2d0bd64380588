"""The spawner waits for its turn in the hub's start line before JupyterHub's start timeout runs, tells the
person their place, and always gives its turn back."""

import asyncio
import types

import pytest

from tljh.hub import server_sockets
from tljh.hub import spawner as spawner_module
from tljh.hub.spawner import UserCreatingSpawner

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def fresh_line(monkeypatch):
    monkeypatch.setattr(UserCreatingSpawner, "_start_queue", None)


def make(name, **config):
    user = types.SimpleNamespace(name=name, id=1, admin=False, url=f"/user/{name}/")
    return UserCreatingSpawner(user=user, concurrent_starts=1, **config)


async def collect(agen, n):
    events = []
    async for event in agen:
        events.append(event)
        if len(events) == n:
            break
    return events


async def test_second_person_waits_and_sees_their_place():
    alice, bob = make("alice"), make("bob")
    await alice.run_pre_spawn_hook()
    waiting = asyncio.create_task(bob.run_pre_spawn_hook())
    await asyncio.sleep(0)
    events = asyncio.create_task(collect(bob.progress(), 2))
    await asyncio.sleep(0.05)
    alice.start_queue.release(alice)  # alice's start ends
    await asyncio.wait_for(waiting, 1)
    first, second = await asyncio.wait_for(events, 1)
    assert first["tljh_phase"] == "queued"
    assert first["message"] == "Waiting for a turn to start: 1 servers are starting, 0 people are ahead of you"
    assert second["tljh_phase"] == "starting" and second["tljh_waited"] >= 0.05


async def test_turn_is_given_back_when_the_start_fails(monkeypatch):
    alice = make("alice")

    async def broken(self):
        raise RuntimeError("systemd-run failed")

    monkeypatch.setattr(UserCreatingSpawner, "_start", broken)
    await alice.run_pre_spawn_hook()
    with pytest.raises(RuntimeError):
        await alice.start()
    assert not alice.start_queue.running


async def test_turn_is_given_back_when_a_pre_spawn_hook_fails():
    def hook(spawner):
        raise ValueError("plugin hook failed")

    alice = make("alice", pre_spawn_hook=hook)
    with pytest.raises(ValueError):
        await alice.run_pre_spawn_hook()
    assert not alice.start_queue.running


async def test_waiting_too_long_fails_with_a_message():
    alice, bob = make("alice"), make("bob", start_queue_timeout=0.05)
    await alice.run_pre_spawn_hook()
    with pytest.raises(RuntimeError, match="did not get its turn"):
        await bob.run_pre_spawn_hook()
    assert bob not in alice.start_queue.waiting


async def test_unit_state_is_checked_once_a_second_not_at_every_probe(monkeypatch):
    # The spawner's own clock: each HTTP probe takes 70 ms of it, so nothing depends on how busy this host is.
    clock = types.SimpleNamespace(now=0.0)
    clock.monotonic = lambda: clock.now
    alice = make("alice", ready_poll_interval=0, http_timeout=3)
    polls, probes = [], []

    async def poll():
        polls.append(clock.now)
        return None

    async def never(*args):
        probes.append(clock.now)
        clock.now += 0.07
        return False

    monkeypatch.setattr(server_sockets, "time", clock)
    monkeypatch.setattr(alice, "poll", poll)
    monkeypatch.setattr(spawner_module, "answers_http", never)
    alice.server = None
    await alice._wait_answering()
    assert len(polls) == 2  # 43 probes in 3 s, one unit check per second (at 1.05 s and 2.1 s)
    assert len(probes) == 43
