"""The hub keeps its nftables table in step with the servers that run, never failing a spawn over it."""

import asyncio
import logging
import types

import pytest

from tljh.hub import port_isolation
from tljh.hub.port_isolation import PortIsolation
from tljh.system import port_rules
from tljh.system.port_rules import Server

SHOW = """Id=jupyter-alice.service
User=jupyter-alice
MainPID=10

Id=jupyter-alice:lab.service
User=1001
MainPID=11

Id=jupyter-notebook.service
User=
MainPID=12

Id=jupyter-bob.service
User=jupyter-bob
MainPID=0

Id=jupyter-carol.service
User=jupyter-carol
MainPID=13

Id=jupyter-dave.service
User=jupyter-alice
MainPID=14
"""


def test_servers_are_the_units_named_for_their_account_that_run(tmp_path, monkeypatch):
    proc, fs = tmp_path / "proc", tmp_path / "cgroupfs"
    cgroups = {10: "/system.slice/jupyter-alice.service", 11: "/system.slice/jupyter-alice:lab.service",
               12: "/system.slice/jupyter-notebook.service", 13: "/system.slice/jupyter-carol.service",
               14: "/system.slice/jupyter-dave.service"}
    for pid, cgroup in cgroups.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")
        if pid != 13:  # carol's server stopped after systemd was asked: its cgroup is gone
            (fs / "unified" / cgroup.lstrip("/")).mkdir(parents=True)
    accounts = [types.SimpleNamespace(pw_name="jupyter-alice", pw_uid=1001),
                types.SimpleNamespace(pw_name="jupyter-carol", pw_uid=1003)]
    # systemdspawner starts units with the account's uid: systemd shows User= as that number
    monkeypatch.setattr(port_isolation.pwd, "getpwnam", lambda name: next(a for a in accounts if a.pw_name == name))
    monkeypatch.setattr(port_isolation.pwd, "getpwuid", lambda uid: next(a for a in accounts if a.pw_uid == uid))
    units = port_isolation.units_from(SHOW, 2, mount=(str(fs / "unified"), "/"), proc=str(proc), cgroup_fs=str(fs))
    # not: a unit that is no user's server (no User=), one not running (MainPID 0), one whose cgroup is gone, one
    # not named for its account
    assert units == {
        "jupyter-alice.service": ("10", cgroups[10], Server("unified/system.slice/jupyter-alice.service", 4, 1001)),
        "jupyter-alice:lab.service": ("11", cgroups[11],
                                      Server("unified/system.slice/jupyter-alice:lab.service", 4, 1001)),
    }
    # the same run of a unit, later: its main process still in its cgroup, and the cgroup there
    alice = units["jupyter-alice.service"]
    assert port_isolation.still_running(*alice, proc=str(proc), cgroup_fs=str(fs))
    (proc / "10" / "cgroup").write_text("0::/user.slice\n")  # pid 10 is now another process
    assert not port_isolation.still_running(*alice, proc=str(proc), cgroup_fs=str(fs))
    (proc / "10" / "cgroup").write_text(f"0::{cgroups[10]}\n")
    (fs / "unified" / "system.slice" / "jupyter-alice.service").rmdir()
    assert not port_isolation.still_running(*alice, proc=str(proc), cgroup_fs=str(fs))
    assert not port_isolation.still_running("99", cgroups[10], alice[2], proc=str(proc), cgroup_fs=str(fs))


@pytest.mark.asyncio
async def test_systemd_is_asked_the_details_only_of_units_not_seen_running_yet(monkeypatch):
    """Each write lists the units that run (one cheap call); `systemctl show`, whose cost grows with every
    server it covers, is asked only about units this hub process has not seen run, or whose run ended."""
    running = {}  # unit -> main pid: what systemd runs
    alive = set()  # pids still in their unit's cgroup
    calls = []

    async def server_units():
        calls.append(("list-units",))
        return {**{unit: "active" for unit in running}, "jupyter-x.service": "failed"}

    async def systemctl_output(*args):
        calls.append(args)
        assert args[:3] == ("show", "--property=Id,User,MainPID", "--")
        return 0, "\n\n".join(f"Id={unit}\nUser=x\nMainPID={running[unit]}" for unit in args[3:] if unit in running)

    def units_from(shown, offset):
        blocks = [dict(line.split("=", 1) for line in block.splitlines()) for block in shown.split("\n\n") if block]
        return {b["Id"]: (b["MainPID"], f"/{b['Id']}", Server(b["Id"], 1 + offset, 1000)) for b in blocks}

    monkeypatch.setattr(port_isolation.systemd, "systemctl_output", systemctl_output)
    monkeypatch.setattr(port_isolation.unit_states, "server_units", server_units)
    monkeypatch.setattr(port_isolation, "units_from", units_from)
    monkeypatch.setattr(port_isolation, "still_running", lambda pid, cgroup, server: pid in alive)

    def shown():
        return [args[3:] for args in calls if args[0] == "show"]

    ports = PortIsolation()
    ports._offset = 0
    running.update({"a.service": "10", "b.service": "11"})
    alive.update({"10", "11"})
    assert [s.cgroup for s in await ports.running_servers()] == ["a.service", "b.service"]  # a new hub process
    assert shown() == [("a.service", "b.service")]
    running["c.service"] = "12"
    alive.add("12")
    assert [s.cgroup for s in await ports.running_servers()] == ["a.service", "b.service", "c.service"]
    assert shown()[1:] == [("c.service",)]  # only the new one
    await ports.running_servers()
    assert len(shown()) == 2  # nothing new: nothing shown
    del running["b.service"]  # stopped
    assert [s.cgroup for s in await ports.running_servers()] == ["a.service", "c.service"]
    assert len(shown()) == 2
    running["a.service"] = "20"  # restarted behind the hub's back: a new main process
    alive.discard("10")
    alive.add("20")
    await ports.running_servers()
    assert shown()[2:] == [("a.service",)]
    running["b.service"] = "21"  # started again: asked again, though seen before
    alive.add("21")
    assert [s.cgroup for s in await ports.running_servers()] == ["a.service", "b.service", "c.service"]
    assert shown()[3:] == [("b.service",)]
    assert sum(args[0] == "list-units" for args in calls) == 6


@pytest.mark.asyncio
async def test_when_systemd_cannot_list_the_servers_the_last_table_stays(monkeypatch, caplog):
    written = []

    async def server_units():
        return None  # systemctl failed (systemd re-executing itself)

    monkeypatch.setattr(port_isolation.unit_states, "server_units", server_units)
    monkeypatch.setattr(port_rules, "find_level_offset", lambda: 0)
    monkeypatch.setattr(port_rules, "apply", lambda servers, senders=(): written.append(servers))
    with caplog.at_level(logging.WARNING):
        await PortIsolation().update()
    assert written == []  # not an empty table: the servers running are still protected
    assert "systemctl list-units failed" in caplog.text


@pytest.fixture
def machine(monkeypatch):
    """A machine whose running servers the test sets; records every table written and every removal."""
    state = types.SimpleNamespace(servers=[], written=[], senders=[], removed=0, present=True, offset_calls=0, fail_writes=0,
                                  unsupported=None)

    def find_level_offset():
        state.offset_calls += 1
        if state.unsupported:
            raise port_rules.Unsupported(state.unsupported)
        return 2

    def apply(servers, senders=()):
        if state.fail_writes:
            state.fail_writes -= 1
            raise port_rules.Unsupported("nft failed: Error: cgroupv2 path fails: No such file or directory")
        state.written.append(list(servers))
        state.senders.append(set(senders))

    def remove():
        state.removed += 1
        return True

    async def running_servers(self):
        await asyncio.sleep(0)
        return list(state.servers)

    monkeypatch.setattr(port_rules, "find_level_offset", find_level_offset)
    monkeypatch.setattr(port_rules, "apply", apply)
    monkeypatch.setattr(port_rules, "remove", remove)
    monkeypatch.setattr(port_rules, "table_present", lambda: state.present)
    monkeypatch.setattr(PortIsolation, "running_servers", running_servers)
    return state


ALICE, BOB = Server("system.slice/jupyter-alice.service", 2, 1001), Server("system.slice/jupyter-bob.service", 2, 1002)


@pytest.mark.asyncio
async def test_each_write_is_what_runs_now_and_concurrent_changes_are_coalesced(machine):
    ports = PortIsolation()
    machine.servers = [ALICE]
    await ports.update()
    assert machine.written == [[ALICE]]
    machine.servers = [ALICE, BOB]
    await asyncio.gather(*(ports.update() for _ in range(5)))
    assert machine.written[-1] == [ALICE, BOB] and len(machine.written) <= 3
    machine.servers = [BOB]  # alice stopped
    await ports.update()
    assert machine.written[-1] == [BOB]
    assert machine.offset_calls == 1  # measured once per hub process


@pytest.mark.asyncio
async def test_a_server_stopping_during_a_write_is_retried(machine):
    machine.servers, machine.fail_writes = [ALICE, BOB], 1
    await PortIsolation().update()
    assert machine.written == [[ALICE, BOB]]


@pytest.mark.asyncio
async def test_a_machine_that_cannot_enforce_says_so_once_and_fails_nothing(machine, caplog):
    machine.unsupported = "nft is not installed (Debian/Ubuntu package nftables)"
    ports = PortIsolation()
    with caplog.at_level(logging.WARNING):
        await ports.update()
        await ports.update()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Users' ports are NOT kept from each other on this machine: nft is not installed "
                        "(Debian/Ubuntu package nftables)"]
    assert machine.written == []
    machine.unsupported = None  # nftables installed meanwhile: the next write works
    machine.servers = [ALICE]
    await ports.update()
    assert machine.written == [[ALICE]]


@pytest.mark.asyncio
async def test_disabled_removes_the_table_and_writes_none(machine):
    ports = PortIsolation(enabled=False)
    machine.servers = [ALICE]
    await ports.check()
    await ports.update()
    assert machine.written == [] and machine.removed == 2 and machine.offset_calls == 0


@pytest.mark.asyncio
async def test_polls_write_once_per_hub_process_then_only_put_back_a_vanished_table(machine, monkeypatch, caplog):
    clock = [1000.0]
    monkeypatch.setattr(port_isolation.time, "monotonic", lambda: clock[0])
    ports = PortIsolation()
    machine.servers = [ALICE]
    await ports.check()  # a new hub process: its first poll writes the table
    assert machine.written == [[ALICE]]
    for _ in range(10):
        await ports.check()
    assert len(machine.written) == 1
    machine.present = False  # `systemctl restart nftables` flushed the ruleset
    clock[0] += port_isolation.RECHECK_SECONDS - 1
    await ports.check()
    assert len(machine.written) == 1  # not looked at yet
    clock[0] += 2
    with caplog.at_level(logging.WARNING):
        await ports.check()
    assert len(machine.written) == 2
    assert "are gone; writing them again" in caplog.text


@pytest.mark.asyncio
async def test_errors_never_reach_the_spawner(machine, monkeypatch):
    async def broken(self):
        raise OSError("systemctl: no such file")

    monkeypatch.setattr(PortIsolation, "running_servers", broken)
    await PortIsolation().update()  # logged, not raised


@pytest.mark.asyncio
async def test_an_owner_is_marked_before_their_server_starts(machine):
    """A server opens its connection to the hub while it starts, before the table protects it: its owner's uid
    must be in the senders map by then, or that connection keeps mark 0 and is refused once the server is in
    the table (seen: every first token check of a user's only server waited ~26 s of TCP retries)."""
    ports = PortIsolation()
    machine.servers = [BOB]
    await ports.admit(1001)  # alice, whose server is not running yet
    assert machine.written == [[BOB]] and 1001 in machine.senders[-1]
    await ports.admit(1001)  # already marked: no write on the start path
    await ports.admit(1002)  # bob's uid is marked as the owner of a running server
    assert len(machine.written) == 1
    machine.servers = []  # both stopped: their uids stay marked (a mark lets nobody in by itself)
    await ports.update()
    assert machine.written[-1] == [] and machine.senders[-1] == {1001, 1002}
    await ports.admit(1002)  # so a later start of theirs writes nothing first
    assert len(machine.written) == 2
    await ports.admit(1003)  # carol's first server
    assert len(machine.written) == 3 and machine.senders[-1] == {1001, 1002, 1003}


@pytest.mark.asyncio
async def test_admit_writes_nothing_while_disabled(machine):
    ports = PortIsolation(enabled=False)
    await ports.admit(1001)
    assert machine.written == []
