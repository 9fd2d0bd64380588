"""Memory and CPU of the hub, the proxy, users' servers and the machine, sampled over a load test.

Processes are found by their systemd units (names in tljh.system.paths), so the sampler follows the
installation's layout instead of knowing its programs.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import time

from tljh.system import paths
from tljh.system.cgroups import Cgroups


def main_pid(unit):
    result = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", unit],
                            capture_output=True, text=True, check=False)
    pid = result.stdout.strip()
    return int(pid) if pid.isdigit() and pid != "0" else None


def rss(pid, proc="/proc"):
    try:
        with open(os.path.join(proc, str(pid), "status")) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def open_files(pid, proc="/proc"):
    """How many files and sockets a process holds open (None when it is gone)."""
    try:
        return len(os.listdir(os.path.join(proc, str(pid), "fd")))
    except OSError:
        return None


def open_files_limit(pid, proc="/proc"):
    """The process's soft limit on open files (what it hits first), None when unknown."""
    try:
        with open(os.path.join(proc, str(pid), "limits")) as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return None if soft == "unlimited" else int(soft)
    except (OSError, IndexError, ValueError):
        return None
    return None


class ServerCpu:
    """Total CPU seconds of every server unit seen, kept across stops and restarts of a unit."""

    def __init__(self):
        self.last = {}
        self.banked = 0.0

    def update(self, usage_by_unit):
        for unit, cpu in usage_by_unit.items():
            if cpu is None:
                continue
            before = self.last.get(unit)
            if before is not None and cpu < before:  # the unit started again: a new cgroup
                self.banked += before
            self.last[unit] = cpu
        return self.banked + sum(self.last.values())


class Sampler:
    def __init__(self, cgroups=None, interval=1.0, hub_unit=paths.HUB_UNIT, proxy_units=paths.PROXY_UNITS,
                 server_units=paths.USER_SERVER_UNITS):
        self.cgroups = cgroups or Cgroups()
        self.interval = interval
        self.hub_unit = hub_unit
        self.proxy_units = tuple(proxy_units)
        self.server_units = server_units
        self.samples = []
        self.server_cpu = ServerCpu()
        # Highest memory each server unit reached (a server with its kernel, while its person works).
        self.server_peaks = {}
        self._hub_pid = None
        self._t0 = None
        # The hub's open-files limit: every browser connection and every request to a server holds one.
        self.hub_files_limit = None

    def sample(self, t):
        cg = self.cgroups
        hub = cg.unit_usage(self.hub_unit)
        proxies = [cg.unit_usage(u) for u in self.proxy_units]
        servers = {unit: cg.usage(path) for unit, path in cg.units(self.server_units).items()}
        for unit, usage in servers.items():
            if usage.memory is not None and usage.memory > self.server_peaks.get(unit, 0):
                self.server_peaks[unit] = usage.memory
        machine = cg.machine()
        if self._hub_pid is None or not os.path.exists(f"/proc/{self._hub_pid}"):
            self._hub_pid = main_pid(self.hub_unit)
            if self._hub_pid:
                self.hub_files_limit = open_files_limit(self._hub_pid)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "t": round(t, 3),
            "hub": {"memory": hub.memory, "cpu": hub.cpu, "rss": rss(self._hub_pid) if self._hub_pid else None,
                    "files": open_files(self._hub_pid) if self._hub_pid else None},
            "proxy": {"memory": _sum(p.memory for p in proxies), "cpu": _sum(p.cpu for p in proxies)},
            "servers": {
                "running": len(servers),
                "memory": _sum(s.memory for s in servers.values()) if servers else 0,
                "cpu": self.server_cpu.update({u: s.cpu for u, s in servers.items()}),
            },
            "machine": {"memory": machine.memory, "cpu": machine.cpu, "memory_total": machine.memory_total},
            "generator": {"cpu": me.ru_utime + me.ru_stime, "rss": rss(os.getpid())},
        }

    def unit_cpu(self, unit):
        """CPU seconds of one unit now (None when it does not run)."""
        return self.cgroups.unit_usage(unit).cpu

    async def run(self, clock):
        """Sample every ``interval`` s until cancelled (reads run in a thread: the clients' loop stays free)."""
        while True:
            started = time.monotonic()
            self.samples.append(await asyncio.to_thread(self.sample, clock()))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))


def _sum(values):
    values = [v for v in values if v is not None]
    return sum(values) if values else None
