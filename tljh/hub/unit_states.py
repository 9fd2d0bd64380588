"""Whether users' server units run, asked of systemd once for all of them (at most once a second).

systemdspawner's poll runs ``systemctl is-active`` per server: JupyterHub polls every server every 30 s, and a
starting server is polled once a second until it answers. In a class's burst that was the hub's most frequent
subprocess (175 of 623 the hub ran for 33 people, `tljh loadtest`; each ~8 ms of CPU of systemctl and systemd,
and a fork of the hub process) and a quarter of the hub's event-loop time (py-spy). One ``systemctl
list-units`` of every server unit costs about the same as one ``is-active``, with 200 servers as with none.
"""

from __future__ import annotations

import asyncio
import time

from tljh.system import paths, systemd

# How old an answer may be: a server that stops is seen stopped up to this much later.
MAX_AGE_SECONDS = 1.0
# What ``systemctl is-active`` calls running (exit status 0).
RUNNING_STATES = ("active", "reloading")


def states_from(list_units_output: str) -> dict[str, str]:
    """{unit: ActiveState} from ``systemctl list-units --plain --no-legend --full`` (UNIT LOAD ACTIVE SUB
    DESCRIPTION; some versions put a status mark first). It lists the units that are not inactive."""
    states = {}
    for line in list_units_output.splitlines():
        fields = line.split()
        while fields and not fields[0].endswith(".service"):
            fields.pop(0)
        if len(fields) >= 3:
            states[fields[0]] = fields[2]
    return states


async def server_units() -> dict[str, str] | None:
    """{unit: ActiveState} of the users' server units that are not inactive, from one ``systemctl list-units``
    (its cost hardly grows with the number of units); None if systemctl failed."""
    status, out = await systemd.systemctl_output(
        "list-units", "--plain", "--no-legend", "--full", "--", paths.USER_SERVER_UNITS,
    )
    return states_from(out) if status == 0 else None


class UnitStates:
    """One per hub process: every server unit's state, from one query shared by everyone who asks meanwhile.

    An answer may be up to ``max_age`` old, so one that says "not running" may predate a unit just started:
    the spawner asks systemd about that unit alone before it takes it for stopped (UserCreatingSpawner.poll).
    """

    def __init__(self, max_age: float = MAX_AGE_SECONDS):
        self.max_age = max_age
        self._states = {}
        self._asked = None  # time.monotonic() when the query behind _states was sent; None: no answer
        self._query = None  # the query under way

    async def running(self, unit: str) -> bool | None:
        """True if systemd says ``unit`` (``jupyter-x`` or ``jupyter-x.service``) runs, False if it does not,
        None if systemd could not be asked (systemctl failed, as while systemd re-executes itself)."""
        unit = unit if unit.endswith(".service") else unit + ".service"
        if self._asked is None or time.monotonic() - self._asked > self.max_age:
            if self._query is None:
                self._query = asyncio.ensure_future(self._refresh())
            await asyncio.shield(self._query)
        if self._asked is None:
            return None
        return self._states.get(unit, "inactive") in RUNNING_STATES

    async def _refresh(self) -> None:
        sent = time.monotonic()
        try:
            out = await server_units()
        except OSError:
            out = None
        finally:
            self._query = None
        self._asked, self._states = (None, {}) if out is None else (sent, out)
