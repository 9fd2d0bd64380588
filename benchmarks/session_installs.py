"""What per-session installs cost: spawn latency with the session layer on vs off, and `%pip install` times.
Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/session_installs.py [--os debian-12] [--rounds 5] [--spawns 4] [--installs 5]

1. Spawn latency, on and off side by side in one run: rounds alternate the order (on first, then off first);
   each round sets user_environment.session_installs, reloads the hub, then starts the admin's server N times
   (start requested -> /user/<name>/lab served -> stop). Medians and p95 per side, and their difference.
2. What the layer costs inside the hub, on the same machine: writing a layer over /opt/tljh/user the way the
   spawner does at every start (read the environment, write ~25 files, chown, rename), N times, median.
3. Installs in a notebook kernel (over the kernel websocket, like JupyterLab): `%pip install cowsay` as the
   first install of a session (cold: the session's pip cache is empty), then uninstall + install again in the
   same session (warm), and the same with `%uv pip install`. pip's cache only keeps what the index allows
   (HTTP cache headers); the report says whether pip used its cache ("Using cached").
"""

import argparse
import asyncio
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


def server_cpu(m, unit=f"jupyter-{ADMIN}"):
    """CPU seconds the server's unit has used: what a start costs, little moved by the host's other load."""
    value = m.run(["systemctl", "show", "--value", "-p", "CPUUsageNSec", unit]).stdout.strip()
    return int(value) / 1e9 if value.isdigit() else float("nan")  # "[not set]": no CPU accounting there


async def spawns(m, n, cpu=None, user_options=None):
    """Seconds of ``n`` starts of the admin's server (request -> JupyterLab served), each stopped after."""
    times = []
    async with HubClient(m.url()) as admin:
        await admin.login(ADMIN, PASSWORD)
        for _ in range(n):
            started = time.monotonic()
            await admin.start_server(timeout=300, user_options=user_options)
            status = await admin.lab_page()
            if status != 200:
                raise RuntimeError(f"lab page answered {status}")
            times.append(time.monotonic() - started)
            if cpu is not None:
                cpu.append(await asyncio.to_thread(server_cpu, m))
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spawns", type=int, default=4)
    parser.add_argument("--installs", type=int, default=5)
    parser.add_argument("--layers", type=int, default=50)
    args = parser.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"load at start: {load()}")
    with installed_machine(args.os, "--admin", f"{ADMIN}:{PASSWORD}") as m:
        asyncio.run(spawns(m, 1))  # creates the admin's Unix account; not counted
        times = {True: [], False: []}
        cpu = {True: [], False: []}
        for r in range(args.rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                set_session_installs(m, on)
                times[on] += asyncio.run(spawns(m, args.spawns, cpu[on]))
        for on in (True, False):
            t = times[on]
            print(f"spawn with session layer {'on ' if on else 'off'}: median {statistics.median(t):.3f} s, "
                  f"p95 {p95(t):.3f} s, n={len(t)}; the server's CPU until its Lab page: median "
                  f"{statistics.median(cpu[on]):.3f} s")
        diff = statistics.median(times[True]) - statistics.median(times[False])
        print(f"median difference (on - off): {diff * 1000:+.0f} ms; server CPU "
              f"{(statistics.median(cpu[True]) - statistics.median(cpu[False])) * 1000:+.0f} ms")
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
