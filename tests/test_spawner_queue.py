"""The spawner waits for its turn in the hub's start line before JupyterHub's start timeout runs, tells the
person their place, and always gives its turn back."""

import asyncio
import types

import pytest

from tljh.hub import server_sockets
from tljh.hub import spawner as spawner_module
from tljh.hub.spawner import UserCreatingSpawner
from tljh.system import paths

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def fresh_line(monkeypatch, tmp_path):
    monkeypatch.setattr(UserCreatingSpawner, "_start_queue", None)
    monkeypatch.setattr(UserCreatingSpawner, "_port_isolation", None)
    # a poll that finds a server stopped cleans up after it: here, not in this host's /opt/tljh or /run/tljh
    monkeypatch.setattr(paths, "SESSIONS_DIR", str(tmp_path / "sessions"))


def make(name, **config):
    user = types.SimpleNamespace(name=name, id=1, admin=False, url=f"/user/{name}/")
    # (directories that do not exist: a poll's cleanup finds nothing to remove there)
    return UserCreatingSpawner(user=user, concurrent_starts=1, servers_dir="/nonexistent/tljh-servers",
                               server_links_dir="/nonexistent/tljh-server-links", **config)


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


def stopped_unit(monkeypatch, spawner, active_state, result="exit-code", status="1", shared=False):
    """The hub's shared look at every unit says "not running" (``shared``: False; None: systemctl failed);
    systemd's ActiveState of the unit says ``active_state``."""

    async def not_running(self, unit):
        return shared

    async def properties(unit, *names):
        assert unit == spawner.unit_name
        return {"ActiveState": active_state, "Result": result, "ExecMainStatus": status}

    monkeypatch.setattr(spawner_module.UnitStates, "running", not_running)
    monkeypatch.setattr(spawner_module.systemd, "properties", properties)


async def test_a_unit_that_failed_fails_the_start_at_once_with_its_reason(monkeypatch):
    alice = make("alice")
    alice.unit_name = "jupyter-alice"
    stopped_unit(monkeypatch, alice, "failed")
    assert await alice.poll() == 1  # the hub's own polls: a stopped server, no error
    alice._unit_starting = True  # systemdspawner's start() waiting for the unit to run
    with pytest.raises(RuntimeError, match=r"stopped while starting \(result: exit-code\)"):
        await alice.poll()


@pytest.mark.parametrize(
    "result, status",
    [
        ("oom-kill", "0"),  # cgroup v2: systemd says so
        ("signal", "9"),  # cgroup v1: the kernel's SIGKILL of the server
        ("exit-code", "137"),  # ... or of a shell's child (128 + 9)
    ],
)
async def test_a_server_killed_for_memory_while_starting_says_so(monkeypatch, result, status):
    alice = make("alice", mem_limit=2**28)
    alice.unit_name = "jupyter-alice"
    stopped_unit(monkeypatch, alice, "failed", result, status)
    alice._unit_starting = True
    with pytest.raises(RuntimeError, match=r"needed more memory than its limit \(256 MB\)"):
        await alice.poll()


async def test_a_server_without_a_memory_limit_is_not_said_to_have_run_out(monkeypatch):
    alice = make("alice")
    alice.unit_name = "jupyter-alice"
    stopped_unit(monkeypatch, alice, "failed", "signal", "9")
    alice._unit_starting = True
    with pytest.raises(RuntimeError, match=r"stopped while starting \(result: signal\)"):
        await alice.poll()


@pytest.mark.parametrize("shared", [False, None])
@pytest.mark.parametrize("active_state", ["", "active", "activating", "deactivating"])
async def test_a_server_is_stopped_only_when_systemd_says_so(monkeypatch, active_state, shared):
    # "": systemctl could not reach systemd in time (a busy machine); the shared look failed just the same.
    # False from the shared look: its answer may predate the unit's start.
    alice = make("alice")
    alice.unit_name = "jupyter-alice"
    stopped_unit(monkeypatch, alice, active_state, shared=shared)
    assert await alice.poll() is None
    alice._unit_starting = True
    assert await alice.poll() is None


@pytest.mark.parametrize("active_state", ["inactive", "failed"])
async def test_a_unit_gone_while_its_start_waits_fails_at_once(monkeypatch, active_state):
    # "inactive": it exited, or `systemd-run` never created it; outside a start it is just a stopped server.
    alice = make("alice")
    alice.unit_name = "jupyter-alice"
    stopped_unit(monkeypatch, alice, active_state)
    assert await alice.poll() == 1
    alice._unit_starting = True
    with pytest.raises(RuntimeError, match="stopped while starting"):
        await alice.poll()


async def test_a_slow_start_is_waited_for_longer_than_jupyterhubs_defaults():
    alice = make("alice")
    assert (alice.start_timeout, alice.http_timeout) == (300, 240)
    assert alice.start_timeout > alice.http_timeout  # the wait for HTTP runs inside the start
    bob = make("bob", start_timeout=90, http_timeout=60)  # an admin's own setting wins
    assert (bob.start_timeout, bob.http_timeout) == (90, 60)


class RecordedPorts:
    """Stands in for the hub's port rules (tljh.hub.port_isolation): what the spawner asked of them."""

    def __init__(self):
        self.calls = []

    async def update(self):
        self.calls.append("update")

    async def check(self):
        self.calls.append("check")

    async def admit(self, uid):
        self.calls.append(("admit", uid))


async def test_port_rules_follow_the_servers(monkeypatch):
    """A running server's polls let the rules be checked; a stop, or a poll that finds the server stopped
    behind the hub's back, rewrites them without it."""
    ports = RecordedPorts()
    monkeypatch.setattr(UserCreatingSpawner, "_port_isolation", ports)
    alice = make("alice")
    alice.unit_name = "jupyter-alice"

    async def running(self, unit):
        return True

    monkeypatch.setattr(spawner_module.UnitStates, "running", running)
    assert await alice.poll() is None
    assert ports.calls == ["check"]
    stopped_unit(monkeypatch, alice, "inactive")
    assert await alice.poll() == 1
    assert ports.calls == ["check", "update"]

    async def stop(self, now=False):
        pass

    monkeypatch.setattr(spawner_module.SystemdSpawner, "stop", stop)
    await alice.stop()
    assert ports.calls == ["check", "update", "update"]


async def test_one_port_rules_object_per_hub_with_the_configured_setting():
    alice, bob = make("alice", private_ports=False), make("bob")
    assert alice.port_isolation is bob.port_isolation
    assert alice.port_isolation.enabled is False
