"""What a person costs in CPU besides their server's start, done the way `tljh loadtest`'s simulated people do
it: a kernel start (POST api/sessions, the kernel's websocket, kernel_info), each execution of ``1+1`` over that
websocket, and the server's stop ("Stop My Server", then waiting until the hub says it stopped). Each is split by
where the CPU goes: the server's unit (server and kernels), the hub, the proxy; what systemd itself and the
journal did meanwhile is printed apart. Sides of an A/B in one run. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/kernel_cpu.py [--os debian-12] [--rounds 3] [--kernels 3]
        [--executions 40] [--sides now,debugpy] [--machine NAME]

Sides: ``now``, the machine as installed. ``debugpy``: the installer's IPython kernel config
(/etc/ipython/ipython_kernel_config.py, read by every kernel at its start) after an import of
ipykernel.debugger, which loads debugpy as every kernel did before the file kept it out (ipykernel 7).
``history``: the installer's kernel config plus ``c.HistoryManager.db_cache_size = 10`` (IPython writes its
input history to SQLite every 10 inputs instead of after each one; a candidate, not what the installer
writes). ``exit-gc``: ``UserCreatingSpawner.exit_collection = True`` (a jupyterhub_config.d snippet, then the
hub is reloaded): servers run Python's final garbage collection when they stop, as before the installer's
Jupyter server config spared them it. Rounds
alternate the order of the sides. Per side and round: the admin's server starts (not measured), then
``--kernels`` times: a kernel start (its websocket in JupyterLab 4's binary ``v1.kernel.websocket.jupyter.org``
frames, as the load test opens it); ``--executions`` executions in those frames and as many on a websocket of
the older JSON text frames (no subprotocol asked for), one websocket open at a time and the order alternating
from kernel to kernel; after each batch an idle stretch as long as it took, whose CPU is taken off the batch's;
then the kernel is shut down (not measured). Last, the server's stop. Both formats are spoken by
tljh.loadtest.kernel_protocol, as in the load test.

CPU comes from /proc inside the machine (utime + stime and those of reaped children; units in test machines have
no CPU accounting), read by one process that stays in the machine for the whole run, so the readings add no
process of their own to what the machine's systemd reaps. A stopped server's unit is gone when the stop is
over: its CPU during the stop is what the machine's systemd gained in reaped children's CPU (the server and its
kernels, which systemd reaps) less what the unit had used when the stop was asked for.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from hubclient import HubClient  # noqa: E402
from tljh.loadtest.kernel_protocol import JSON, V1, KernelConnection  # noqa: E402
from session_installs import ADMIN, PASSWORD, add_machine_arguments, load, machine, spawns, wait_unloaded  # noqa: E402

HUB_PYTHON = "/opt/tljh/hub/bin/python"
KERNEL_CONFIG_PATH = "/etc/ipython/ipython_kernel_config.py"
SERVER_UNIT = f"jupyter-{ADMIN}"
# Machine-wide work beside the units, reported apart: systemd itself (units started and stopped) and the journal.
OUTSIDE = ["systemd", "systemd-journald"]
EXECUTION_V1 = "execution (v1 binary frames, as JupyterLab 4 and the load test)"
EXECUTION_JSON = "execution (JSON text frames, the older format)"
EXECUTION = {V1: EXECUTION_V1, JSON: EXECUTION_JSON}

# Stays in the machine for the run: for each line on stdin (unit names), prints the CPU seconds of each unit's
# processes (their own and their reaped children's), and the machine's systemd's (pid 1) own CPU and its reaped
# children's, as JSON.
METER = r"""
import json, os, subprocess, sys
hz = os.sysconf("SC_CLK_TCK")
def fields(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
def seconds(pid):
    f = fields(pid)
    return sum(int(x) for x in f[11:15]) / hz if f else 0.0
def unit(name):
    group = subprocess.run(["systemctl", "show", "-p", "ControlGroup", "--value", name], capture_output=True,
                           text=True).stdout.strip()
    if not group:
        return 0.0
    for root in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup"):
        try:
            with open(root + group + "/cgroup.procs") as f:
                return sum(seconds(p) for p in f.read().split())
        except OSError:
            pass
    return 0.0
for line in sys.stdin:
    reading = {name: unit(name) for name in line.split()}
    pid1 = fields(1)
    reading["pid 1 children"] = sum(int(x) for x in pid1[13:15]) / hz
    reading["systemd"] = sum(int(x) for x in pid1[11:13]) / hz
    print(json.dumps(reading), flush=True)
"""


class Meter:
    def __init__(self, m, units):
        self.units = units
        self.proc = subprocess.Popen(m.nsenter_prefix() + [HUB_PYTHON, "-u", "-c", METER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def read(self):
        self.proc.stdin.write(" ".join(self.units) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    async def aread(self):
        return await asyncio.to_thread(self.read)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


def delta(before, after):
    return {k: after[k] - before[k] for k in before}


SNIPPET = "/opt/tljh/config/jupyterhub_config.d/zz-kernel-cpu-benchmark.py"


def side_configs(m):
    """The installed kernel config, and per side: (kernel config, jupyterhub_config.d snippet or "")."""
    now = m.run([HUB_PYTHON, "-c", "from tljh.hub import isolation; print(isolation.KERNEL_CONFIG, end='')"]).stdout
    return now, {
        "now": (now, ""),
        "debugpy": ("import ipykernel.debugger  # loads debugpy, as kernels did before the file kept it out\n" + now,
                    ""),
        "history": (now + "\nc.HistoryManager.db_cache_size = 10\n", ""),
        "exit-gc": (now, "c.UserCreatingSpawner.exit_collection = True\n"),
    }


def set_side(m, kernel_config, snippet, current_snippet):
    m.run(["bash", "-c", f"cat > {KERNEL_CONFIG_PATH}"], input=kernel_config)
    if snippet != current_snippet:
        if snippet:
            m.run(["bash", "-c", f"cat > {SNIPPET}"], input=snippet)
        else:
            m.run(["rm", "-f", SNIPPET])
        m.run("tljh-config reload hub")
    return snippet


# -- the kernel websocket, in either format (tljh.loadtest.kernel_protocol) ------------------------------------


async def connect(admin, kernel_id, protocol):
    """protocol: V1 (JupyterLab's, and the load test's) or JSON (no subprotocol asked for)."""
    url = admin.url(admin.server_path() + f"api/kernels/{kernel_id}/channels").replace("http", "ws", 1)
    kernel = await KernelConnection.open(admin.session, url, protocols=(V1,) if protocol == V1 else (),
                                         params={"session_id": uuid.uuid4().hex}, headers=admin._auth())
    if kernel.protocol != protocol:
        raise RuntimeError(f"asked for {protocol}, the server speaks {kernel.protocol}")
    return kernel


async def execute(kernel, code):
    reply = await kernel.execute(code, timeout=60)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code!r}: {reply['content']}")


# -- one side ----------------------------------------------------------------------------------------------


async def executions(meter, kernel, n, think):
    """CPU of n executions (think seconds apart, as a person's 1 s is mostly waiting) less that of an idle
    stretch as long, per execution."""
    before = await meter.aread()
    started = time.monotonic()
    for _ in range(n):
        await execute(kernel, "1+1")
        await asyncio.sleep(think)
    busy = delta(before, await meter.aread())
    took = time.monotonic() - started
    before = await meter.aread()
    await asyncio.sleep(took)
    idle = delta(before, await meter.aread())
    return {k: (busy[k] - idle[k]) / n for k in busy}


async def one_side(m, meter, kernels, n, think):
    out = defaultdict(list)
    async with HubClient(m.url()) as admin:
        await admin.login(ADMIN, PASSWORD)
        await admin.start_server(timeout=300, follow_progress=True)
        await admin.api("GET", admin.server_path() + "api/status")  # the server has checked our token
        for i in range(kernels):
            before = await meter.aread()
            model = await admin.api("POST", admin.server_path() + "api/sessions", expect=(201,), json={
                "path": f"kernel-cpu-{uuid.uuid4().hex[:8]}.ipynb", "type": "notebook", "name": "",
                "kernel": {"name": "python3"}})
            kernel = await connect(admin, model["kernel"]["id"], V1)
            await kernel.request("kernel_info_request", {}, "kernel_info_reply", timeout=60)
            await asyncio.sleep(0.3)  # what the kernel still does right after its first reply
            out["kernel start"].append(delta(before, await meter.aread()))
            # One websocket at a time: every open one gets the kernel's iopub messages, in its own format.
            for protocol in (V1, JSON) if i % 2 == 0 else (JSON, V1):
                if kernel is None or kernel.protocol != protocol:
                    if kernel is not None:
                        await kernel.close()
                        await asyncio.sleep(0.3)  # the server closing its side
                    kernel = await connect(admin, model["kernel"]["id"], protocol)
                    await kernel.request("kernel_info_request", {}, "kernel_info_reply", timeout=60)
                out[EXECUTION[protocol]].append(await executions(meter, kernel, n, think))
                await kernel.close()
                kernel = None
                await asyncio.sleep(0.3)
            await admin.api("DELETE", admin.server_path() + f"api/sessions/{model['id']}", expect=(204,))
        # A stop with one kernel running, as the load test's people stop.
        model = await admin.api("POST", admin.server_path() + "api/sessions", expect=(201,), json={
            "path": "kernel-cpu-stop.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}})
        kernel = await connect(admin, model["kernel"]["id"], V1)
        await execute(kernel, "1+1")
        await kernel.close()
        before = await meter.aread()
        await admin.stop_server(timeout=120)
        after = await meter.aread()
        stop = delta(before, after)
        # The unit is gone: its processes' CPU during the stop reached systemd's reaped children.
        stop[SERVER_UNIT] = stop.pop("pid 1 children") - before[SERVER_UNIT]
        out["server stop"].append(stop)
    await asyncio.to_thread(wait_unloaded, m)
    return out


def report(results, units, proxy):
    names = {SERVER_UNIT: "server unit", "jupyterhub": "hub", proxy: "proxy"}
    for what in ("kernel start", EXECUTION_V1, EXECUTION_JSON, "server stop"):
        print(f"{what}:")
        for side, r in results.items():
            if what not in r:
                continue
            med = {u: statistics.median(x[u] for x in r[what]) for u in units + OUTSIDE}
            parts = ", ".join(f"{names[u]} {1000 * med[u]:.1f}" for u in units)
            outside = ", ".join(f"{u} {1000 * med[u]:.1f}" for u in OUTSIDE)
            print(f"    {side:8} {1000 * sum(med[u] for u in units):7.1f} ms CPU ({parts}; medians of "
                  f"n={len(r[what])}); outside those units: {outside}")
    for side, r in results.items():
        if r.get(EXECUTION_V1) and r.get(EXECUTION_JSON):
            v1, older = (statistics.median(x[SERVER_UNIT] for x in r[what]) for what in (EXECUTION_V1, EXECUTION_JSON))
            print(f"execution, server unit: {side}: v1 - JSON: {1000 * (v1 - older):+.2f} ms CPU "
                  f"(per-kernel differences: "
                  f"{', '.join(f'{1000 * (a[SERVER_UNIT] - b[SERVER_UNIT]):+.2f}' for a, b in zip(r[EXECUTION_V1], r[EXECUTION_JSON]))})")
    sides = list(results)
    for other in sides[1:]:
        for what in ("kernel start", EXECUTION_V1, "server stop"):
            a = sum(statistics.median(x[u] for x in results[sides[0]][what]) for u in units)
            b = sum(statistics.median(x[u] for x in results[other][what]) for u in units)
            print(f"{what}: {sides[0]} - {other}: {1000 * (a - b):+.1f} ms CPU")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_machine_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernels", type=int, default=3, help="kernel starts per side and round")
    parser.add_argument("--executions", type=int, default=40, help="executions per kernel and protocol")
    parser.add_argument("--think", type=float, default=0.2, help="seconds between executions")
    parser.add_argument("--sides", default="now,debugpy")
    args = parser.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"load at start: {load()}")
    with machine(args) as m:
        asyncio.run(spawns(m, 1))  # creates the admin's Unix account; not counted
        proxy = m.run([HUB_PYTHON, "-c", "from tljh.system import paths; print(paths.PROXY_UNIT)"]).stdout.strip()
        installed, configs = side_configs(m)
        sides = args.sides.split(",")
        units = [SERVER_UNIT, "jupyterhub", proxy]
        meter = Meter(m, units + ["systemd-journald"])
        results = {side: defaultdict(list) for side in sides}
        snippet = ""
        try:
            for r in range(args.rounds):
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    snippet = set_side(m, *configs[side], snippet)
                    for what, values in asyncio.run(one_side(m, meter, args.kernels, args.executions,
                                                             args.think)).items():
                        results[side][what].extend(values)
        finally:
            meter.close()
            set_side(m, installed, "", snippet)
        print(f"machine: {m.run(['nproc']).stdout.strip()} CPUs; {args.rounds} rounds x {args.kernels} kernels x "
              f"{args.executions} executions {args.think} s apart per side")
        report(results, units, proxy)
        print(f"load at the end: {load()}")


if __name__ == "__main__":
    main()
