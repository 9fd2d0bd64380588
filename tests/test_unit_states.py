"""The hub asks systemd about every server unit at once, and at most once a second, for all servers' polls."""

import asyncio

import pytest

from tljh.hub import unit_states
from tljh.hub.unit_states import UnitStates

LISTED = (
    "jupyter-alice.service      loaded active       running   /opt/tljh/user/bin/jupyterhub-singleuser\n"
    "jupyter-alice:lab.service  loaded reloading    reload    /opt/tljh/user/bin/jupyterhub-singleuser\n"
    "\u25cf jupyter-bob.service   loaded failed       failed    /opt/tljh/user/bin/jupyterhub-singleuser\n"
    "jupyter-carol.service      loaded activating   start     /opt/tljh/user/bin/jupyterhub-singleuser\n"
    "jupyter-dave.service       loaded deactivating stop-sigterm /opt/tljh/user/bin/jupyterhub-singleuser\n"
)


def test_states_are_read_from_list_units():
    assert unit_states.states_from(LISTED + "\n") == {
        "jupyter-alice.service": "active", "jupyter-alice:lab.service": "reloading", "jupyter-bob.service": "failed",
        "jupyter-carol.service": "activating", "jupyter-dave.service": "deactivating"}
    assert unit_states.states_from("") == {}


class Clock:
    now = 100.0

    def monotonic(self):
        return self.now


@pytest.fixture
def systemd(monkeypatch):
    """systemctl list-units as the test says (None: it failed); counts the queries."""
    clock = Clock()
    monkeypatch.setattr(unit_states, "time", clock)
    state = {"queries": 0, "out": LISTED, "clock": clock, "gate": None}

    async def server_units():
        state["queries"] += 1
        if state["gate"] is not None:
            await state["gate"].wait()
        return None if state["out"] is None else unit_states.states_from(state["out"])

    monkeypatch.setattr(unit_states, "server_units", server_units)
    return state


@pytest.mark.asyncio
async def test_running_is_what_systemctl_is_active_calls_running(systemd):
    states = UnitStates()
    # unit names as systemdspawner gives them (no suffix) or in full
    answers = [await states.running(u) for u in ("jupyter-alice", "jupyter-alice:lab.service", "jupyter-bob",
                                                  "jupyter-carol", "jupyter-dave", "jupyter-erin")]
    assert answers == [True, True, False, False, False, False]  # erin's unit is not loaded: inactive
    assert systemd["queries"] == 1


@pytest.mark.asyncio
async def test_every_poll_meanwhile_shares_one_query_and_an_old_answer_is_asked_again(systemd):
    states = UnitStates()
    systemd["gate"] = asyncio.Event()
    polls = [asyncio.ensure_future(states.running(f"jupyter-{u}")) for u in ("alice", "bob", "carol") * 20]
    await asyncio.sleep(0)
    systemd["gate"].set()
    assert (await asyncio.gather(*polls))[:3] == [True, False, False]
    assert systemd["queries"] == 1
    systemd["gate"] = None
    systemd["clock"].now += unit_states.MAX_AGE_SECONDS  # still fresh enough
    await states.running("jupyter-alice")
    assert systemd["queries"] == 1
    systemd["out"] = ""  # alice's server stopped
    systemd["clock"].now += 0.01
    assert await states.running("jupyter-alice") is False
    assert systemd["queries"] == 2


@pytest.mark.asyncio
async def test_a_failed_systemctl_is_no_answer_and_is_not_kept(systemd):
    states = UnitStates()
    systemd["out"] = None  # systemd re-executing itself
    assert await states.running("jupyter-alice") is None
    systemd["out"] = LISTED
    assert await states.running("jupyter-alice") is True  # asked again at once
    assert systemd["queries"] == 2
