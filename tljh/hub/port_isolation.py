"""Keeps the hub's nftables table (:mod:`tljh.system.port_rules`) in step with the users' servers that run.

One object per hub process. The table is always written whole, from what systemd says runs now, so it never
depends on what this hub process remembers: a hub restart, a server stopped behind the hub's back or two spawns
at once all converge on the next write. (Which units run is asked at every write; a unit's owner and cgroup are
remembered only while its main process stays in that cgroup, which is read again at every write.) Writes are
serialized and coalesced (a write that starts after a change includes it). Nothing here fails a spawn or a
stop: a machine that cannot enforce the rules gets a warning in the hub's log, in the installer's output and in
``tljh status``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import time

from tljh.system import port_rules, systemd

from . import unit_states

# How often a running hub looks whether its table is still there (at most; each server's poll asks). Something
# that flushes the whole ruleset (restarting Debian's nftables.service: its config starts with `flush ruleset`)
# removes it, and the hub writes it again within this time.
RECHECK_SECONDS = 30
# A server that stops while the table is being written makes nft refuse the whole write (its cgroup is gone):
# list the servers again and retry this many times.
WRITE_ATTEMPTS = 3


class PortIsolation:
    """Each user's TCP/UDP ports answer only that user and root, while ``enabled``; otherwise no table."""

    def __init__(self, enabled: bool = True, log=None):
        self.enabled = enabled
        self.log = log or logging.getLogger("tljh.hub.port_isolation")
        self._lock = asyncio.Lock()
        self._pending = False
        self._offset = None  # levels between the global cgroup root and ours, measured once
        self._problem = None  # why the rules are not enforced, once logged
        self._written = False  # by this hub process
        self._checked = None  # when check() last looked
        self._owners = set()  # uids of the servers this hub process started: their connections are marked
        self._marked = frozenset()  # the uids the table written last marks
        self._known = {}  # unit -> (main pid, cgroup, Server) of the servers seen running (running_servers)

    async def update(self) -> None:
        """Write the table for the servers that run now (after a server started or stopped)."""
        self._pending = True
        async with self._lock:
            if not self._pending:  # a write that started after our change has done it
                return
            self._pending = False
            try:
                await self._write()
            except Exception:
                self.log.exception("Could not update the rules that keep users' ports to themselves")

    async def admit(self, uid: int) -> None:
        """Before a server of ``uid`` starts: its owner's new connections must carry their mark from the start.
        The server opens its connection to the hub while it starts, before the table protects it; a connection
        opened unmarked keeps mark 0, and once the server is in the table every packet the server sends on it is
        refused — its first request to the hub (checking a token, OAuth) then waited ~26 s of TCP retries until
        conntrack forgot the connection. Writes the table only when ``uid`` is not marked yet."""
        self._owners.add(uid)
        if self.enabled and uid not in self._marked:
            await self.update()

    async def check(self) -> None:
        """Cheap, for every poll: the first call of a hub process writes the table (or removes it when
        disabled); later ones, at most every RECHECK_SECONDS, write it again if it has disappeared (or could not
        be written yet)."""
        now = time.monotonic()
        if self._checked is not None and now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        if self._written and not self.enabled:
            return
        if self._written:
            if await asyncio.to_thread(port_rules.table_present):
                return
            self.log.warning("The rules that keep users' ports to themselves (nft table %s) are gone; writing "
                             "them again", port_rules.TABLE)
        await self.update()

    async def _write(self) -> None:
        if not self.enabled:
            if await asyncio.to_thread(port_rules.remove):
                self.log.info("Users' ports are open to each other (network.allow_connections_between_users)")
            self._written = True
            return
        try:
            if self._offset is None:
                self._offset = await asyncio.to_thread(port_rules.find_level_offset)
            for attempt in range(WRITE_ATTEMPTS):
                servers = await self.running_servers()
                owners = frozenset(self._owners)
                try:
                    await asyncio.to_thread(port_rules.apply, servers, owners)
                    self._marked = owners | {s.uid for s in servers}
                    break
                except port_rules.Unsupported:
                    if attempt == WRITE_ATTEMPTS - 1:
                        raise
        except port_rules.Unsupported as e:
            if str(e) != self._problem:
                self.log.warning("Users' ports are NOT kept from each other on this machine: %s", e)
            self._problem = str(e)
            return
        self._problem = None
        self._written = True
        self._checked = time.monotonic()

    async def running_servers(self) -> list[port_rules.Server]:
        """The users' server units that run now, from systemd: units named for their account (``jupyter-x``,
        or ``jupyter-x:server`` for a named server) with processes in them.

        Which units run is asked every time, with one cheap question (``systemctl list-units``). What the table
        needs of each (owner, cgroup) is asked (``systemctl show``) only of units this hub process has not seen
        run yet, or whose main process has left its cgroup (stopped, restarted) since: ``systemctl show`` of
        the glob made systemd and systemctl fetch every property of every running server, 1-1.4 ms of CPU per
        server per write (180-260 ms with 200 servers; benchmarks/hub_cpu.py), two or three writes a person."""
        listed = await unit_states.server_units()
        if listed is None:  # the last table written stays until systemd answers
            raise port_rules.Unsupported("systemctl list-units failed")
        units = [unit for unit, state in sorted(listed.items()) if state not in ("failed", "inactive")]
        known = {unit: seen for unit in units if (seen := self._known.get(unit)) and still_running(*seen)}
        fresh = [unit for unit in units if unit not in known]
        if fresh:
            _, shown = await systemd.systemctl_output("show", "--property=Id,User,MainPID", "--", *fresh)
            known.update(units_from(shown, self._offset or 0))
        self._known = known
        return [server for unit, (pid, cgroup, server) in sorted(known.items())]


def still_running(pid: str, cgroup: str, server: port_rules.Server, proc="/proc",
                  cgroup_fs=port_rules.CGROUP_FS) -> bool:
    """Is a unit seen earlier as ``server`` (main process ``pid`` in ``cgroup``) the same run of it still? Its
    main process is still in its cgroup, and the cgroup (nft's name for it) is still there."""
    return (port_rules.process_cgroup(pid, proc=proc) == cgroup
            and os.path.isdir(os.path.join(cgroup_fs, server.cgroup)))


def units_from(show_output: str, offset: int, mount=None, proc="/proc", cgroup_fs=port_rules.CGROUP_FS):
    """{unit: (main pid, its cgroup, Server)} from ``systemctl show --property=Id,User,MainPID`` of many units
    (blank-line separated blocks), each unit's cgroup read from its main process. Units that stopped meanwhile,
    and units that are not a server the spawner started, are left out."""
    mount = mount or port_rules.cgroup2_mount()
    units = {}
    for block in show_output.split("\n\n"):
        fields = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        unit, user, pid = fields.get("Id", ""), fields.get("User", ""), fields.get("MainPID", "0")
        if not user or not pid.isdigit() or pid == "0":
            continue
        try:  # systemdspawner gives systemd-run the uid: User= is a number
            account = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            continue
        name, uid = account.pw_name, account.pw_uid
        if unit != f"{name}.service" and not unit.startswith(f"{name}:"):
            continue  # not a server the spawner started (its units are named for their account)
        cgroup = port_rules.process_cgroup(pid, proc=proc)
        name = port_rules.nft_name(cgroup, mount, cgroup_fs) if cgroup and mount else None
        if name is None or '"' in name or not os.path.isdir(os.path.join(cgroup_fs, name)):
            continue
        units[unit] = (pid, cgroup, port_rules.Server(name, port_rules.depth(cgroup) + offset, uid))
    return units
