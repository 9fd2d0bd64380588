"""What the hub's port-rules writes (tljh.hub.port_isolation) cost per person, with many servers running: the way
each write listed the servers before (``systemctl show`` of the ``jupyter-*.service`` glob) and now (``systemctl
list-units``, then ``systemctl show`` of only the units not seen running yet), both sides in one run on one
machine. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/hub_cpu.py [--os debian-12] [--servers 0,50,100,200] [--people 6]
        [--machine NAME]   (a running test machine with TLJH installed, instead of a fresh one)

Inside the machine (this checkout's tljh, run with the hub's Python, the hub stopped meanwhile): N stand-in
servers (``sleep`` in transient units ``jupyter-bN`` run as accounts of that name, as systemdspawner runs them),
then per simulated person the three writes a person's server makes (before its start: the owner's mark; after
it: the new unit; after its stop) around the start and stop of one more unit, alternating the sides person by
person. Per write: CPU of the writing process and its children (systemctl, nft) and of systemd (PID 1), from
getrusage and /proc/1/stat; the start and stop themselves are not counted. Also the first write of a hub
process (which asks about every server). Then, at each level, the CPU of one call of each query a poll or a
write made before and makes now. Load at the start and the end.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from installed import installed_machine  # noqa: E402
from machine import Machine  # noqa: E402
from session_installs import load  # noqa: E402

PROBE = r'''
import asyncio, json, os, pwd, resource, subprocess, sys, time
from tljh.hub import port_isolation
from tljh.hub.port_isolation import PortIsolation
from tljh.system import paths, systemd

TICK = os.sysconf("SC_CLK_TCK")
levels, people = [int(n) for n in sys.argv[1].split(",")], int(sys.argv[2])


def pid1():
    fields = open("/proc/1/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def hub():  # this process and its children (systemctl, nft), as the hub's cgroup counts them
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Before(PortIsolation):
    async def running_servers(self):  # each write before: every property of every unit of the glob
        _, shown = await systemd.systemctl_output("show", "--property=Id,User,MainPID", "--", paths.USER_SERVER_UNITS)
        return [server for pid, cgroup, server in port_isolation.units_from(shown, self._offset or 0).values()]


def account(name):
    if subprocess.run(["id", name], capture_output=True).returncode:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    return pwd.getpwnam(name).pw_uid


def start(name):
    uid = account(name)
    subprocess.run(["systemd-run", "--quiet", f"--unit={name}", f"--uid={uid}", "sleep", "infinity"], check=True)
    return uid


def stop(name):
    subprocess.run(["systemctl", "stop", name], check=True)


async def measured(write):
    h, p = hub(), pid1()
    await write()
    return hub() - h, pid1() - p


QUERIES = {  # one call each; CPU of systemctl (the caller's child) and of PID 1
    "is-active (a poll before)": ["systemctl", "is-active", "jupyter-b1"],
    "list-units (all polls of a second now)": ["systemctl", "list-units", "--plain", "--no-legend", "--full", "--",
                                               paths.USER_SERVER_UNITS],
    "show of the glob (a write before)": ["systemctl", "show", "--property=Id,User,MainPID", "--",
                                          paths.USER_SERVER_UNITS],
}


def queries(reps=10):
    costs = {}
    for name, command in QUERIES.items():
        h, p = hub(), pid1()
        for _ in range(reps):
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        costs[name] = ((hub() - h) / reps, (pid1() - p) / reps)
    return costs


async def main():
    running = 0
    sides = {"before": Before(), "now": PortIsolation()}
    for n in levels:
        while running < n:
            running += 1
            start(f"jupyter-b{running}")
        await asyncio.sleep(1)
        first = {}
        for name, side in sides.items():
            side._known, side._marked, side._owners = {}, frozenset(), set()
            first[name] = await measured(side.update)
        result = {name: {"admit": [], "started": [], "stopped": []} for name in sides}
        for i in range(people):
            for name in (("before", "now") if i % 2 == 0 else ("now", "before")):
                side, person = sides[name], f"jupyter-p{i}"
                uid = account(person)
                side._marked = side._marked - {uid}
                result[name]["admit"].append(await measured(lambda: side.admit(uid)))
                start(person)
                result[name]["started"].append(await measured(side.update))
                stop(person)
                result[name]["stopped"].append(await measured(side.update))
        servers = len(await sides["now"].running_servers())
        print(json.dumps({"servers": n, "seen": servers, "first": first, "writes": result, "queries": queries()}),
              flush=True)
    for i in range(1, running + 1):
        subprocess.run(["systemctl", "stop", "--no-block", f"jupyter-b{i}"])


asyncio.run(main())
'''


def median_ms(pairs, index):
    return 1000 * statistics.median(p[index] for p in pairs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--machine", help="a running test machine with TLJH installed, instead of a fresh one")
    parser.add_argument("--servers", default="0,50,100,200", help="servers running, one level after another")
    parser.add_argument("--people", type=int, default=6, help="simulated people per side and level")
    args = parser.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; guest {args.os}")
    print(f"load at start: {load()}", flush=True)
    context = (contextlib.nullcontext(Machine.attach(args.machine)) if args.machine
               else installed_machine(args.os, "--admin", "admin:benchmark-password"))
    with context as m:
        m.copy_checkout("/srv/tljh-hub-cpu")
        m.run("systemctl stop jupyterhub")
        try:
            run = m.run(["/opt/tljh/hub/bin/python", "-", args.servers, str(args.people)], input=PROBE,
                        env={"PYTHONPATH": "/srv/tljh-hub-cpu"}, timeout=3600)
        finally:
            m.run("systemctl start jupyterhub", check=False)
        print("CPU ms per write, median (hub = the writing process + systemctl + nft; systemd = PID 1)")
        print(f"{'servers':>7}  {'side':6}  {'admit':>13}  {'after start':>13}  {'after stop':>13}  "
              f"{'per person':>13}  {'first write':>13}")
        levels = [json.loads(line) for line in run.stdout.splitlines()]
        for level in levels:
            for side, writes in level["writes"].items():
                cells = [f"{median_ms(writes[w], 0):5.0f} / {median_ms(writes[w], 1):5.0f}"
                         for w in ("admit", "started", "stopped")]
                person = (sum(median_ms(writes[w], 0) for w in writes), sum(median_ms(writes[w], 1) for w in writes))
                first = level["first"][side]
                print(f"{level['servers']:>7}  {side:6}  {'  '.join(cells)}  {person[0]:5.0f} / {person[1]:5.0f}  "
                      f"{1000 * first[0]:5.0f} / {1000 * first[1]:5.0f}   (servers seen: {level['seen']})")
        print("\nCPU ms per call, mean of 10 (systemctl / systemd)")
        for level in levels:
            print(f"{level['servers']:>7}  " + "  ".join(f"{name} {1000 * c[0]:5.1f} / {1000 * c[1]:5.1f}"
                                                     for name, c in level["queries"].items()))
    print(f"load at end: {load()}")


if __name__ == "__main__":
    main()
