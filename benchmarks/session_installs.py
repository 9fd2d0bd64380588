"""What per-session installs cost: spawn latency with the session layer on vs off, and `%pip install` times.
Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/session_installs.py [--os debian-12] [--rounds 5] [--spawns 4] [--installs 5]
        [--machine NAME]   (a running test machine with TLJH installed, instead of a fresh one)

1. Spawn latency, on and off side by side in one run: two profiles that differ only in
   spawner_override.session_installs, and the sides alternate start by start (on, off, off, on, ...) with no
   reload in between, so whatever drifts over the run (the host's load, the hub's caches) falls on both sides
   alike. Each start: start requested -> /user/<name>/lab served -> stop; --rounds x --spawns starts per side.
   Medians and p95 per side, their difference, and the median of the differences of adjacent on/off pairs;
   per side also the hub's own start time (its "took N seconds to start"), the server's CPU seconds until its
   Lab page and the hub's CPU seconds for the start (from /proc: wall-clock medians on a shared host move by
   hundreds of ms between runs, CPU seconds much less).
2. What the layer costs inside the hub, on the same machine: writing a layer over /opt/tljh/user the way the
   spawner does at every start (read the environment, write ~25 files, chown, rename), N times, median.
3. Installs in a notebook kernel (over the kernel websocket, like JupyterLab): `%pip install cowsay` as the
   first install of a session (cold: the session's pip cache is empty), then uninstall + install again in the
   same session (warm), and the same with `%uv pip install`. pip's cache only keeps what the index allows
   (HTTP cache headers); the report says whether pip used its cache ("Using cached").
"""

import argparse
import asyncio
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from hubclient import HubClient  # noqa: E402
from installed import installed_machine  # noqa: E402
from machine import Machine  # noqa: E402
from test_session_installs import unload_script  # noqa: E402

ADMIN, PASSWORD = "admin", "benchmark-password"


def p95(values):
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def load():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# Runs in the machine with the hub's python, as the hub would (root), for the admin's Unix account.
LAYER_TIMING = """
import pwd, statistics, sys, time
from tljh.hub import session_installs
account = pwd.getpwnam("jupyter-{admin}")
times = []
for i in range({n}):
    started = time.perf_counter()
    layer = session_installs.open_layer("bench-layer", "/opt/tljh/user", "", account.pw_uid, account.pw_gid)
    times.append(time.perf_counter() - started)
    layer.remove()
print(f"{{statistics.median(times) * 1000:.1f}} {{min(times) * 1000:.1f}} {{max(times) * 1000:.1f}}")
"""


def layer_creation(m, n):
    out = m.run(["/opt/tljh/hub/bin/python", "-c", LAYER_TIMING.format(admin=ADMIN, n=n)]).stdout.split()
    return [float(x) for x in out]


def wait_unloaded(m, unit=f"jupyter-{ADMIN}"):
    """Until systemd has unloaded the stopped unit: starting it again before then fails ("already loaded").
    In test machines a stopped unit can stay loaded until the next job on it (see the integration tests)."""
    m.run(unload_script(unit))


def set_session_installs(m, on):
    m.run(f"tljh-config set user_environment.session_installs {'true' if on else 'false'} && tljh-config reload")


# The two sides as profiles (slugs from the display names): a start picks its side, no reload between sides.
SIDE_PROFILES = """
profiles:
  - display_name: Layer on
    description: Session packages.
    spawner_override: {session_installs: true}
  - display_name: Layer off
    description: No session packages.
    spawner_override: {session_installs: false}
"""
SIDE = {True: {"profile": "layer-on"}, False: {"profile": "layer-off"}}


# Runs in the machine: CPU seconds (utime + stime, and those of reaped children) of the processes in a unit's
# cgroup, from /proc. Units in test machines have no CPU accounting (cgroup v1 with a separate cpuacct
# hierarchy, which systemd does not set up for units: CPUUsageNSec stays "[not set]" even with
# DefaultCPUAccounting=yes), and this works the same with accounting, on cgroup v1 and v2.
UNIT_CPU = r"""
import os, subprocess, sys
hz = os.sysconf("SC_CLK_TCK")
def seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / hz
for unit in sys.argv[1:]:
    group = subprocess.run(["systemctl", "show", "-p", "ControlGroup", "--value", unit],
                           capture_output=True, text=True).stdout.strip()
    pids = []
    for root in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup"):
        try:
            with open(root + group + "/cgroup.procs") as f:
                pids = f.read().split()
            break
        except OSError:
            pass
    print(sum(seconds(p) for p in pids) if group else "nan")
"""


def unit_cpu(m, *units):
    """CPU seconds the processes of each unit have used so far: what a start costs, little moved by the host's
    other load (which moves wall-clock medians by hundreds of ms between runs)."""
    out = m.run(["/opt/tljh/hub/bin/python", "-c", UNIT_CPU, *units]).stdout.split()
    return [float(x) for x in out]


def hub_start_seconds(m):
    """The hub's own measure of the last start ("User admin took N seconds to start"): from the spawn request
    to the server answering, without the proxy route and the client's requests."""
    out = m.run("journalctl -u jupyterhub -o cat --no-pager -n 200 | grep -o 'took [0-9.]* seconds to start' | tail -1",
                check=False).stdout.split()
    return float(out[1]) if len(out) > 1 else float("nan")


async def spawns(m, n, side=None, user_options=None):
    """Start (with ``user_options``, a profile's choices) and stop the admin's server n times; returns the
    wall-clock times (request -> JupyterLab served). With ``side`` (a dict of
    lists), also records per start the hub's own start time, the server's CPU until its Lab page was served
    and the hub's CPU for the start."""
    times = []
    async with HubClient(m.url()) as admin:
        await admin.login(ADMIN, PASSWORD)
        for _ in range(n):
            if side is not None:
                hub_before, = await asyncio.to_thread(unit_cpu, m, "jupyterhub")
            started = time.monotonic()
            await admin.start_server(timeout=300, user_options=user_options, follow_progress=True)
            status = await admin.lab_page()
            if status != 200:
                raise RuntimeError(f"lab page answered {status}")
            times.append(time.monotonic() - started)
            if side is not None:
                server, hub = await asyncio.to_thread(unit_cpu, m, f"jupyter-{ADMIN}", "jupyterhub")
                side["server cpu"].append(server)
                side["hub cpu"].append(hub - hub_before)
                side["hub start"].append(await asyncio.to_thread(hub_start_seconds, m))
            await admin.stop_server()
            await asyncio.to_thread(wait_unloaded, m)
    return times


async def installs(m, n):
    results = {"pip cold": [], "pip warm": [], "uv cold": [], "uv warm": []}
    cached = 0
    async with HubClient(m.url()) as admin:
        await admin.login(ADMIN, PASSWORD)
        for _ in range(n):
            await admin.start_server(timeout=300)  # a new session: empty caches
            kernel = await admin.open_kernel()
            for tool, install, uninstall in (("pip", "%pip install cowsay", "%pip uninstall -y cowsay"),
                                             ("uv", "%uv pip install cowsay", "%uv pip uninstall cowsay")):
                for kind in ("cold", "warm"):
                    started = time.monotonic()
                    out = await kernel.execute(install, timeout=300)
                    results[f"{tool} {kind}"].append(time.monotonic() - started)
                    if "cowsay" not in re.sub(r"\x1b\[[0-9;]*m", "", out):
                        raise RuntimeError(f"{install}: {out}")
                    cached += "Using cached" in out
                    await kernel.execute(uninstall, timeout=300)
            await kernel.close()
            await admin.stop_server()
            await asyncio.to_thread(wait_unloaded, m)
    return results, cached


def add_machine_arguments(parser):
    """--os and --machine, which machine() reads."""
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--machine", help="a running test machine with TLJH installed (bootstrap --admin "
                        f"{ADMIN}:{PASSWORD}) instead of a fresh one")


def machine(args):
    if args.machine:
        return contextlib.nullcontext(Machine.attach(args.machine))
    return installed_machine(args.os, "--admin", f"{ADMIN}:{PASSWORD}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_machine_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spawns", type=int, default=4)
    parser.add_argument("--installs", type=int, default=5)
    parser.add_argument("--layers", type=int, default=50)
    args = parser.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"load at start: {load()}")
    with machine(args) as m:
        set_session_installs(m, True)
        config = m.run("cat /opt/tljh/config/config.yaml").stdout
        m.run("cat >> /opt/tljh/config/config.yaml && tljh-config reload hub", input=SIDE_PROFILES)
        asyncio.run(spawns(m, 1, user_options=SIDE[True]))  # creates the admin's Unix account; not counted
        times = {True: [], False: []}
        sides = {on: {"server cpu": [], "hub cpu": [], "hub start": []} for on in (True, False)}
        for i in range(args.rounds * args.spawns):
            for on in ((True, False) if i % 2 == 0 else (False, True)):
                times[on] += asyncio.run(spawns(m, 1, sides[on], user_options=SIDE[on]))
        m.run("cat > /opt/tljh/config/config.yaml && tljh-config reload hub", input=config)
        for on in (True, False):
            t, side = times[on], sides[on]
            print(f"spawn with session layer {'on ' if on else 'off'}: median {statistics.median(t):.3f} s, "
                  f"p95 {p95(t):.3f} s, n={len(t)}; the hub's own start time: median "
                  f"{statistics.median(side['hub start']):.3f} s; CPU: the server's until its Lab page "
                  f"{statistics.median(side['server cpu']):.3f} s, the hub's for the start "
                  f"{statistics.median(side['hub cpu']):.3f} s (medians)")
        diff = {k: (statistics.median(sides[True][k]) - statistics.median(sides[False][k])) * 1000
                for k in sides[True]}
        print(f"median difference (on - off): spawn {(statistics.median(times[True]) - statistics.median(times[False])) * 1000:+.0f} ms, "
              f"hub start {diff['hub start']:+.0f} ms, server CPU {diff['server cpu']:+.0f} ms, "
              f"hub CPU {diff['hub cpu']:+.0f} ms")
        pairs = {k: [(a - b) * 1000 for a, b in zip(sides[True][k], sides[False][k])] for k in sides[True]}
        pairs["spawn"] = [(a - b) * 1000 for a, b in zip(times[True], times[False])]
        print("median of the differences of adjacent on/off starts (n=%d pairs): " % len(pairs["spawn"])
              + ", ".join(f"{k} {statistics.median(v):+.0f} ms" for k, v in pairs.items()))
        print(f"load after the spawns: {load()}")
        median, low, high = layer_creation(m, args.layers)
        print(f"layer creation in the hub: median {median:.1f} ms, min {low:.1f} ms, max {high:.1f} ms, "
              f"n={args.layers}")
        set_session_installs(m, True)
        results, cached = asyncio.run(installs(m, args.installs))
        for name, t in results.items():
            print(f"%{name.split()[0]} install cowsay, {name.split()[1]}: median {statistics.median(t):.2f} s, "
                  f"min {min(t):.2f} s, max {max(t):.2f} s, n={len(t)}")
        print(f"pip reported 'Using cached' in {cached} of {2 * args.installs} pip installs")
        print(f"load at the end: {load()}")


if __name__ == "__main__":
    main()
