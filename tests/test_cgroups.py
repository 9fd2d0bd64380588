"""Reading units' and the machine's memory and CPU from cgroup trees (fake trees on disk; systemctl faked)."""

import os
import subprocess

import pytest

from tljh.system import cgroups
from tljh.system.cgroups import Cgroups

MiB = 2**20


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def proc(tmp_path):
    p = tmp_path / "proc"
    write(p, "meminfo", "MemTotal:       2048000 kB\nMemFree:  100 kB\nMemAvailable:   1024000 kB\n")
    write(p, "stat", "cpu  100 0 50 1000 20 0 0 0 0 0\ncpu0 1 1 1 1\n")
    return str(p)


@pytest.fixture
def systemd(monkeypatch):
    """Fake systemctl: units = {name: cgroup path}; only those are active."""
    units = {}

    def run(cmd, **kwargs):
        out = ""
        if cmd[:2] == ["systemctl", "list-units"]:
            out = "".join(f"{u} loaded active running x\n" for u in units if u.startswith("jupyter-"))
        elif cmd[:2] == ["systemctl", "show"]:
            if "--value" in cmd:
                out = units.get(cmd[-1], "") + "\n"
            else:
                # systemctl's own order, not the requested one
                out = "\n".join(f"ControlGroup={units[u]}\nId={u}\n" for u in cmd[cmd.index("--") + 1:])
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(cgroups.subprocess, "run", run)
    return units


def test_v2_unit_working_set_and_cpu(tmp_path, proc, systemd):
    root = tmp_path / "cg"
    write(root, "cgroup.controllers", "cpu memory")
    write(root, "system.slice/jupyterhub.service/memory.current", str(100 * MiB))
    write(root, "system.slice/jupyterhub.service/memory.stat", f"anon 1\ninactive_file {30 * MiB}\n")
    write(root, "system.slice/jupyterhub.service/cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n")
    systemd["jupyterhub.service"] = "/system.slice/jupyterhub.service"
    usage = Cgroups(str(root), proc).unit_usage("jupyterhub.service")
    assert usage.memory == 70 * MiB  # page cache the kernel can drop is not counted
    assert usage.cpu == 2.5


def test_v2_machine_without_own_cgroup_uses_meminfo(tmp_path, proc):
    root = tmp_path / "cg"
    write(root, "cgroup.controllers", "cpu memory")
    write(root, "cpu.stat", "usage_usec 7000000\n")
    machine = Cgroups(str(root), proc).machine()
    assert machine.memory_total == 2048000 * 1024
    assert machine.memory == (2048000 - 1024000) * 1024
    assert machine.cpu == 7.0


def test_v1_memory_controller_and_process_cpu(tmp_path, proc, systemd):
    """v1 without CPUAccounting: memory from the memory controller, CPU summed over the unit's processes."""
    root = tmp_path / "cg"
    cgpath = "system.slice/jupyter-alice.service"
    write(root, f"memory/{cgpath}/memory.usage_in_bytes", str(50 * MiB))
    write(root, f"memory/{cgpath}/memory.stat", f"cache 0\ntotal_inactive_file {10 * MiB}\n")
    write(root, f"systemd/{cgpath}/cgroup.procs", "41\n42\n")
    tick = os.sysconf("SC_CLK_TCK")
    # comm with a space and a parenthesis: fields are counted after the last ')'
    write(proc, "41/stat", f"41 (jupyter) x) S 1 1 1 0 -1 0 0 0 0 0 {tick} {tick} {tick} 0 20 0")
    write(proc, "42/stat", f"42 (python3) S 41 1 1 0 -1 0 0 0 0 0 {2 * tick} 0 0 0 20 0")
    systemd["jupyter-alice.service"] = "/" + cgpath
    cg = Cgroups(str(root), proc)
    assert cg.units("jupyter-*.service") == {"jupyter-alice.service": "/" + cgpath}
    usage = cg.usage("/" + cgpath)
    assert usage.memory == 40 * MiB
    assert usage.cpu == pytest.approx(5.0)


def test_v1_cpuacct_when_accounted(tmp_path, proc):
    root = tmp_path / "cg"
    write(root, "cpuacct/system.slice/x.service/cpuacct.usage", str(3 * 10**9))
    assert Cgroups(str(root), proc).usage("/system.slice/x.service").cpu == 3.0


def test_v1_machine_is_the_visible_root_with_its_limit(tmp_path, proc):
    root = tmp_path / "cg"
    write(root, "memory/memory.usage_in_bytes", str(600 * MiB))
    write(root, "memory/memory.stat", f"total_inactive_file {100 * MiB}\n")
    write(root, "memory/memory.limit_in_bytes", str(1024 * MiB))
    write(root, "cpuacct/cpuacct.usage", str(9 * 10**9))
    machine = Cgroups(str(root), proc).machine()
    assert (machine.memory, machine.memory_total, machine.cpu) == (500 * MiB, 1024 * MiB, 9.0)


def test_no_accounting_at_all_falls_back_to_proc_stat(tmp_path, proc):
    root = tmp_path / "cg"
    os.makedirs(root)
    machine = Cgroups(str(root), proc).machine()
    assert machine.cpu == pytest.approx(150 / os.sysconf("SC_CLK_TCK"))  # user + system, not idle or iowait
    assert machine.memory == (2048000 - 1024000) * 1024


def test_stopped_unit_has_no_usage(tmp_path, proc, systemd):
    root = tmp_path / "cg"
    write(root, "cgroup.controllers", "")
    assert Cgroups(str(root), proc).unit_usage("jupyterhub.service") == cgroups.Usage()


@pytest.mark.parametrize("quota, cpus", [("max 100000", None), ("50000 100000", 0.5)])
def test_cpus_respects_a_quota(tmp_path, proc, quota, cpus):
    root = tmp_path / "cg"
    write(root, "cgroup.controllers", "")
    write(root, "cpu.max", quota)
    expected = cpus if cpus is not None else float(len(os.sched_getaffinity(0)))
    assert Cgroups(str(root), proc).cpus() == min(expected, len(os.sched_getaffinity(0)))


def test_v1_without_memory_controller_sums_the_processes_resident_pages(tmp_path, proc):
    """A process that exited between listing and reading (no /proc entry) counts as nothing."""
    root = tmp_path / "cg"
    cgpath = "system.slice/jupyter-bob.service"
    write(root, f"systemd/{cgpath}/cgroup.procs", "51\n52\n53\n")
    write(proc, "51/statm", "9000 100 50 1 0 80 0")
    write(proc, "52/statm", "9000 300 50 1 0 80 0")
    assert Cgroups(str(root), proc).usage("/" + cgpath).memory == 400 * os.sysconf("SC_PAGE_SIZE")
