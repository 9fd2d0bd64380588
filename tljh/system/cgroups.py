"""Memory and CPU of systemd units and of the whole machine, read from cgroups.

systemd puts every unit in a cgroup of its own name; the kernel keeps the unit's CPU time and memory there,
including processes that already exited. Three layouts exist in the wild and all are read here: cgroup v2
(Debian 11+, Ubuntu 22.04+), hybrid (v1 controllers plus a v2 tree that only tracks processes) and v1.

Memory is the *working set* (usage minus inactive file cache), the number Kubernetes and cAdvisor report:
page cache the kernel can drop at once is not memory a server needs.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess

CGROUP_ROOT = "/sys/fs/cgroup"
PROC = "/proc"


@dataclasses.dataclass
class Usage:
    memory: int | None = None  # bytes (working set)
    cpu: float | None = None  # CPU seconds used since the cgroup was made


@dataclasses.dataclass
class MachineUsage(Usage):
    memory_total: int | None = None  # bytes this machine may use (its cgroup limit when lower than RAM)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _stat_value(text, key):
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def meminfo(proc=PROC):
    """/proc/meminfo as {key: bytes}."""
    values = {}
    for line in (_read(os.path.join(proc, "meminfo")) or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


class Cgroups:
    """Reads units' cgroups under ``root`` (tests point it at a fake tree)."""

    def __init__(self, root=CGROUP_ROOT, proc=PROC):
        self.root = root
        self.proc = proc
        self.v2 = os.path.exists(os.path.join(root, "cgroup.controllers"))
        self._paths = {}

    # ---- where a unit's cgroup is

    def _tracking_root(self):
        """The hierarchy that lists every unit: v2's root, else v1's name=systemd tree (hybrid systems have both
        that and a v2 tree; containers on a hybrid host share the host's v2 tree, so it may hold other
        machines' units of the same name)."""
        if self.v2:
            return self.root
        for name in ("systemd", "unified"):
            path = os.path.join(self.root, name)
            if os.path.isdir(path):
                return path
        return self.root

    def unit_path(self, unit):
        """The unit's cgroup path (``/system.slice/jupyterhub.service``), or None when it is not running."""
        if unit not in self._paths:
            result = subprocess.run(
                ["systemctl", "show", "--property=ControlGroup", "--value", unit],
                capture_output=True, text=True, check=False,
            )
            path = result.stdout.strip()
            if not path:
                return None
            self._paths[unit] = path
        return self._paths[unit]

    def units(self, pattern):
        """{unit: cgroup path} of active units whose name matches ``pattern`` (a systemctl pattern).

        Asked of systemd, not read from the cgroup tree: in containers on a hybrid host the process-tracking
        trees are shared with other machines and list their units too."""
        result = subprocess.run(
            ["systemctl", "list-units", "--type=service", "--state=active", "--plain", "--no-legend",
             "--no-pager", pattern], capture_output=True, text=True, check=False)
        names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
        unknown = [n for n in names if n not in self._paths]
        if unknown:
            shown = subprocess.run(["systemctl", "show", "--property=Id,ControlGroup", "--", *unknown],
                                   capture_output=True, text=True, check=False)
            # One block per unit, blank-line separated; systemctl prints properties in its own order.
            for block in shown.stdout.split("\n\n"):
                fields = dict(line.partition("=")[::2] for line in block.splitlines())
                if fields.get("Id") and fields.get("ControlGroup"):
                    self._paths[fields["Id"]] = fields["ControlGroup"]
        return {n: self._paths[n] for n in names if n in self._paths}

    # ---- what it uses

    def usage(self, path):
        """Usage of the cgroup at ``path``; each field None when this kernel does not account it."""
        return Usage(memory=self._memory(path), cpu=self._cpu(path))

    def unit_usage(self, unit):
        path = self.unit_path(unit)
        if path is None or not os.path.isdir(os.path.join(self._tracking_root(), path.lstrip("/"))):
            self._paths.pop(unit, None)
            return Usage()
        return self.usage(path)

    def _memory(self, path):
        rel = path.lstrip("/")
        if self.v2:
            current = _read(os.path.join(self.root, rel, "memory.current"))
            stat_key = "inactive_file"
            stat = _read(os.path.join(self.root, rel, "memory.stat"))
        else:
            current = _read(os.path.join(self.root, "memory", rel, "memory.usage_in_bytes"))
            stat_key = "total_inactive_file"
            stat = _read(os.path.join(self.root, "memory", rel, "memory.stat"))
        if current is None:
            return self._processes_rss(path)
        return max(0, int(current) - (_stat_value(stat, stat_key) or 0))

    def _cpu(self, path):
        rel = path.lstrip("/")
        if self.v2:
            usec = _stat_value(_read(os.path.join(self.root, rel, "cpu.stat")), "usage_usec")
            if usec is not None:
                return usec / 1e6
        else:
            # v1 has a cpuacct group for units with CPUAccounting=yes only.
            nsec = _read(os.path.join(self.root, "cpuacct", rel, "cpuacct.usage"))
            if nsec is not None:
                return int(nsec) / 1e9
        return self._processes_cpu(path)

    # ---- fallback: the processes of the unit (exited ones are not counted)

    def _pids(self, path):
        text = _read(os.path.join(self._tracking_root(), path.lstrip("/"), "cgroup.procs"))
        return [int(p) for p in (text or "").split()]

    def _sum_over_processes(self, path, proc_file, value):
        pids = self._pids(path)
        if not pids:
            return None
        texts = (_read(os.path.join(self.proc, str(pid), proc_file)) for pid in pids)
        # A process may exit between listing and reading: its file is gone and it counts as 0.
        return sum(value(text) for text in texts if text)

    def _processes_rss(self, path):
        page = os.sysconf("SC_PAGE_SIZE")
        return self._sum_over_processes(path, "statm", lambda statm: int(statm.split()[1]) * page)

    def _processes_cpu(self, path):
        def ticks(stat):
            # Fields after the command (which may hold spaces): utime stime cutime cstime are 14-17.
            return sum(int(v) for v in stat.rpartition(")")[2].split()[11:15])

        total = self._sum_over_processes(path, "stat", ticks)
        return None if total is None else total / os.sysconf("SC_CLK_TCK")

    # ---- the whole machine (a container sees its own cgroup as root)

    def machine(self):
        info = meminfo(self.proc)
        ram = info.get("MemTotal")
        if self.v2:
            cpu = _stat_value(_read(os.path.join(self.root, "cpu.stat")), "usage_usec")
            cpu = cpu / 1e6 if cpu is not None else None
            current = _read(os.path.join(self.root, "memory.current"))
            if current is not None:  # a container's own cgroup
                memory = max(0, int(current) - (_stat_value(_read(os.path.join(self.root, "memory.stat")), "inactive_file") or 0))
                limit = (_read(os.path.join(self.root, "memory.max")) or "max").strip()
                total = min(ram, int(limit)) if limit.isdigit() and ram else ram
            else:
                memory = ram - info["MemAvailable"] if ram and "MemAvailable" in info else None
                total = ram
            return MachineUsage(memory=memory, cpu=cpu if cpu is not None else self._proc_stat_cpu(), memory_total=total)
        nsec = _read(os.path.join(self.root, "cpuacct", "cpuacct.usage"))
        cpu = int(nsec) / 1e9 if nsec is not None else self._proc_stat_cpu()
        usage = _read(os.path.join(self.root, "memory", "memory.usage_in_bytes"))
        if usage is None:
            memory = ram - info["MemAvailable"] if ram and "MemAvailable" in info else None
            return MachineUsage(memory=memory, cpu=cpu, memory_total=ram)
        stat = _read(os.path.join(self.root, "memory", "memory.stat"))
        memory = max(0, int(usage) - (_stat_value(stat, "total_inactive_file") or 0))
        limit = _read(os.path.join(self.root, "memory", "memory.limit_in_bytes"))
        total = min(ram, int(limit)) if limit and ram else ram
        return MachineUsage(memory=memory, cpu=cpu, memory_total=total)

    def cpus(self):
        """CPUs this machine may use: its CPU affinity, lowered by a CPU quota on its cgroup."""
        count = float(len(os.sched_getaffinity(0)))
        if self.v2:
            quota, _, period = (_read(os.path.join(self.root, "cpu.max")) or "max").partition(" ")
        else:
            quota = (_read(os.path.join(self.root, "cpu", "cpu.cfs_quota_us")) or "-1").strip()
            period = (_read(os.path.join(self.root, "cpu", "cpu.cfs_period_us")) or "").strip()
        if quota.lstrip("-").isdigit() and int(quota) > 0 and period.strip().isdigit():
            count = min(count, int(quota) / int(period))
        return count

    def _proc_stat_cpu(self):
        first = (_read(os.path.join(self.proc, "stat")) or "").partition("\n")[0].split()
        if not first or first[0] != "cpu":
            return None
        # user nice system idle iowait irq softirq steal: busy = all but idle and iowait
        values = [int(v) for v in first[1:9]]
        return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
