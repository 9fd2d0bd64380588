"""How many more servers this machine holds: the capacity part of `tljh status`.

Measured, not guessed: the memory each running server uses now (its systemd unit's working set, kernels
included), the memory still available, and what fits in it at that average, and at ``limits.memory`` per
server when a limit is set (the most each may take).
"""

from __future__ import annotations

import dataclasses

from tljh.system import paths
from tljh.system.cgroups import Cgroups, meminfo

MiB = 2**20


@dataclasses.dataclass
class Capacity:
    running: int
    per_server: float | None  # bytes, average over running servers
    available: int | None  # bytes the machine can still give
    total: int | None
    limit: int | None  # limits.memory in bytes, if set

    @property
    def more(self):
        """Servers that fit in the available memory at today's average (None when nothing to measure)."""
        if not self.per_server or self.available is None:
            return None
        return int(self.available // self.per_server)

    @property
    def more_at_limit(self):
        if not self.limit or self.available is None:
            return None
        return int(self.available // self.limit)

    def describe(self):
        if self.running == 0:
            text = "no server running, nothing to measure yet"
        else:
            text = (f"1 server running, {self.per_server / MiB:.0f} MiB (with its kernels)" if self.running == 1 else
                    f"{self.running} servers running, {self.per_server / MiB:.0f} MiB each on average (with their kernels)")
            if self.more is not None:
                text += f"; {self.more} more fit in the {self.available / MiB:.0f} MiB available"
        if self.more_at_limit is not None:
            text += f"; {self.more_at_limit} more at limits.memory ({self.limit / MiB:.0f} MiB each)"
        return text

    def as_dict(self):
        return {**dataclasses.asdict(self), "more": self.more, "more_at_limit": self.more_at_limit}


def measure(limit=None, cgroups=None):
    """Capacity now; ``limit`` = limits.memory in bytes (or None)."""
    cgroups = cgroups or Cgroups()
    servers = cgroups.units(paths.USER_SERVER_UNITS)
    used = [u.memory for u in (cgroups.usage(path) for path in servers.values()) if u.memory is not None]
    machine = cgroups.machine()
    available = None
    if machine.memory_total is not None and machine.memory is not None:
        available = max(0, machine.memory_total - machine.memory)
    else:
        available = meminfo().get("MemAvailable")
    return Capacity(
        running=len(servers),
        per_server=sum(used) / len(used) if used else None,
        available=available,
        total=machine.memory_total,
        limit=limit,
    )
