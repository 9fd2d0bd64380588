"""What one server start costs in CPU, as servers started before the lean start (jupyter-lsp and JupyterLab's PyPI
extension manager loaded, jupyter-resource-usage's metrics refreshed every second) and as they start now, both
sides in one run; and what an idle server costs per minute. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/start_cpu.py [--os debian-12] [--rounds 4] [--spawns 3]
        [--breakdown] [--machine NAME]   (a running test machine with TLJH installed, instead of a fresh one)

1. CPU per start, side by side: rounds alternate the order of the sides; a side is set with a
   jupyterhub_config.d snippet (``before``: ``UserCreatingSpawner.language_servers = True``,
   ``lab_extension_manager = ""`` and ``resource_metrics = True``, so the server gets none of the lean start's
   flags) or without it (``after``: the defaults), then the hub is reloaded and the admin's server started N
   times (start requested -> its /user/<name>/lab page served with a token -> stop). Per side: the server's CPU seconds until the Lab page
   (utime + stime of its unit's processes, from /proc: read-only, and CPU seconds move little with the host's
   load), of which the first /lab request, the hub's CPU for the start, wall time; then the floor for N people
   (N x CPU per start / CPUs).
2. ``--breakdown``: where a start's CPU goes, for each side, from single profiled starts (the server's command
   swapped for a wrapper that runs jupyterhub-singleuser): CPU by phase (interpreter, imports, config, each
   extension's import / link / load, web app, the first requests), the imports by package (``python -X
   importtime``), the top functions (cProfile, stopped when the Lab page has been served), whether the
   environment's bytecode is compiled (``python -v``: modules compiled from source at import), the server
   extensions enabled, and an idle server's CPU per minute.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from hubclient import HubClient  # noqa: E402
from session_installs import (ADMIN, PASSWORD, add_machine_arguments, load, machine, p95, spawns,  # noqa: E402
                              unit_cpu, wait_unloaded)

SNIPPET = "/opt/tljh/config/jupyterhub_config.d/zz-start-cpu-benchmark.py"
SIDES = {
    # What every start loaded before the lean start: no flags at all.
    "before": ('c.UserCreatingSpawner.language_servers = True\nc.UserCreatingSpawner.lab_extension_manager = ""\n'
               "c.UserCreatingSpawner.resource_metrics = True\n"),
    "after": "",
}
PROFILER = "/usr/local/share/tljh-start-cpu-profiler.py"
SERVER_UNIT = f"jupyter-{ADMIN}"
PYTHON = "/opt/tljh/user/bin/python"

# The server's command in --breakdown: runs jupyterhub-singleuser as the unit would, noting the process's CPU
# (all threads) at each phase; on SIGUSR2 it writes what it noted to ~/start-cpu-<pid>.json (and the
# cProfile stats). Its first argument says what else to do: "phases", "importtime" (with python -X importtime:
# the import lines go to ~/start-cpu-<pid>.imports), "cprofile".
PROFILER_SOURCE = r'''
import json, os, signal, sys, time
mode = sys.argv.pop(1).split("=", 1)[1]
out = os.path.expanduser(f"~/start-cpu-{os.getpid()}")
marks, steps, requests, extra = [("interpreter and site", time.process_time())], {}, [], {}
def mark(what):
    marks.append((what, time.process_time()))
if mode == "importtime":
    os.dup2(os.open(out + ".imports", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
profile = None
if mode == "cprofile":
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
import jupyterhub.singleuser
mark("import jupyterhub.singleuser")
import jupyter_server.serverapp
import jupyter_server.extension.manager as manager
import tornado.web
mark("import jupyter_server.serverapp")

def timed(cls, name, per_name=False):
    original = getattr(cls, name)
    def wrapper(self, *args, **kwargs):
        started = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            key = f"{name} {args[0]}" if per_name and args else name
            steps[key] = steps.get(key, 0.0) + time.process_time() - started
    setattr(cls, name, wrapper)

for name in ("initialize", "find_server_extensions", "init_server_extensions", "init_resources",
             "init_configurables", "init_components", "init_webapp", "init_signal", "load_server_extensions",
             "init_logging", "init_event_logger", "init_metrics", "init_httpserver"):
    timed(jupyter_server.serverapp.ServerApp, name)
for name in ("add_extension", "link_extension", "load_extension"):
    timed(manager.ExtensionManager, name, per_name=True)

original_load = manager.ExtensionManager.load_extension
def load_extension(self, name):
    result = original_load(self, name)
    lsp = sys.modules.get("jupyter_lsp.manager")
    if name == "jupyter_lsp" and lsp is not None:
        initialize = lsp.LanguageServerManager.initialize
        def timed_initialize(self, *args, **kwargs):
            started = time.thread_time()
            try:
                return initialize(self, *args, **kwargs)
            finally:
                extra["jupyter_lsp search for language servers (its thread)"] = time.thread_time() - started
        lsp.LanguageServerManager.initialize = timed_initialize
    return result
manager.ExtensionManager.load_extension = load_extension

original_start_ioloop = jupyter_server.serverapp.ServerApp.start_ioloop
def start_ioloop(self):
    mark("ready: the io loop starts")
    return original_start_ioloop(self)
jupyter_server.serverapp.ServerApp.start_ioloop = start_ioloop

original_log_request = tornado.web.Application.log_request
def log_request(self, handler):
    if len(requests) < 30:
        requests.append((time.process_time(), handler.request.method, handler.request.uri, handler.get_status()))
    return original_log_request(self, handler)
tornado.web.Application.log_request = log_request

def dump(signum, frame):
    if profile is not None:
        profile.disable()
        profile.dump_stats(out + ".pstats")
    with open(out + ".json.tmp", "w") as f:
        json.dump({"marks": marks, "steps": steps, "requests": requests, "extra": extra, "mode": mode,
                   "now": time.process_time(), "pid": os.getpid()}, f)
    os.replace(out + ".json.tmp", out + ".json")
signal.signal(signal.SIGUSR2, dump)
sys.argv[0] = "jupyterhub-singleuser"
sys.exit(jupyterhub.singleuser.main())
'''

# Runs in the machine: the hub process's own CPU seconds and those of its reaped child processes (systemctl,
# systemd-run, nft, ...), from /proc/<MainPID>/stat.
HUB_SPLIT = r"""
import os, subprocess
pid = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "jupyterhub"], capture_output=True,
                     text=True).stdout.strip()
with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
hz = os.sysconf("SC_CLK_TCK")
print((int(fields[11]) + int(fields[12])) / hz, (int(fields[13]) + int(fields[14])) / hz)
"""


def hub_split(m):
    own, children = m.run(["/opt/tljh/hub/bin/python", "-c", HUB_SPLIT]).stdout.split()
    return float(own), float(children)


PSTATS = """
import pstats, sys
stats = pstats.Stats(sys.argv[1])
stats.sort_stats("cumulative").print_stats(35)
stats.sort_stats("tottime").print_stats(25)
"""

MODULES = ("jupyterhub.singleuser.extension jupyter_server.serverapp jupyterlab.labapp notebook.app "
           "jupyter_lsp.serverextension jupyter_server_terminals jupyter_resource_usage.server_extension "
           "nbgitpuller notebook_shim jupyterlab.extensions.pypi")


def set_side(m, side):
    if SIDES[side]:
        m.run(["bash", "-c", f"cat > {SNIPPET}"], input=SIDES[side])
    else:
        m.run(["rm", "-f", SNIPPET])
    m.run("tljh-config reload")


def cpus(m):
    return int(m.run(["nproc"]).stdout.strip())


# What a browser's JupyterLab asks its server for right after the page (a sample: static files are left out), for
# --breakdown's per-request CPU.
LAB_REQUESTS = ("api/me", "lab/api/settings", "lab/api/translations/default", "api/kernelspecs", "api/sessions",
                "api/kernels", "api/terminals", "api/contents?content=1&hash=0", "lab/api/workspaces/default",
                "lab/api/build", "lab/api/extensions?refresh=0", "api/metrics/v1")


async def start_and_lab(m, follow_up=False):
    """One start: the server's CPU when it is ready (the hub says so and the proxy serves its /api/status) and
    after its Lab page was served; the hub's CPU for it. Waits on the progress stream, as the spawn page does
    (polling the REST API would add the hub's CPU for each poll)."""
    async with HubClient(m.url()) as admin:
        await admin.login(ADMIN, PASSWORD)
        hub_before, = await asyncio.to_thread(unit_cpu, m, "jupyterhub")
        split_before = await asyncio.to_thread(hub_split, m)
        started = time.monotonic()
        await admin.start_server(timeout=300, follow_progress=True)
        ready, = await asyncio.to_thread(unit_cpu, m, SERVER_UNIT)
        status = await admin.lab_page()
        if status != 200:
            raise RuntimeError(f"lab page answered {status}")
        wall = time.monotonic() - started
        server, hub = await asyncio.to_thread(unit_cpu, m, SERVER_UNIT, "jupyterhub")
        split = await asyncio.to_thread(hub_split, m)
        for path in LAB_REQUESTS if follow_up else ():
            async with admin.session.get(admin.url(f"user/{ADMIN}/{path}"), headers=admin._auth()) as r:
                await r.read()
        return {"server": server, "ready": ready, "lab": server - ready, "hub": hub - hub_before,
                "hub own": split[0] - split_before[0], "hub children": split[1] - split_before[1], "wall": wall}


async def stop(m):
    async with HubClient(m.url()) as admin:
        await admin.login(ADMIN, PASSWORD)
        await admin.stop_server()
    await asyncio.to_thread(wait_unloaded, m)


def compare(m, rounds, n):
    results = {side: defaultdict(list) for side in SIDES}
    for r in range(rounds):
        for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
            set_side(m, side)
            for _ in range(n):
                one = asyncio.run(start_and_lab(m))
                asyncio.run(stop(m))
                for k, v in one.items():
                    results[side][k].append(v)
    return results


def report(results, machine_cpus, users):
    med = {side: {k: statistics.median(v) for k, v in r.items()} for side, r in results.items()}
    for side, r in results.items():
        s = med[side]
        print(f"{side:6}: server CPU until its Lab page {s['server']:.3f} s (p95 {p95(r['server']):.3f}; ready "
              f"{s['ready']:.3f}, the Lab page {s['lab']:.3f}), hub {s['hub']:.3f} s (its process {s['hub own']:.3f}, "
              f"its child processes {s['hub children']:.3f}), per start "
              f"{s['server'] + s['hub']:.3f} CPU-s; wall {s['wall']:.2f} s (medians, n={len(r['server'])})")
    b, a = med["before"], med["after"]
    per = {side: med[side]["server"] + med[side]["hub"] for side in med}
    print(f"after - before: server {1000 * (a['server'] - b['server']):+.0f} ms CPU "
          f"({100 * (a['server'] / b['server'] - 1):+.1f} %), hub {1000 * (a['hub'] - b['hub']):+.0f} ms, "
          f"per start {1000 * (per['after'] - per['before']):+.0f} ms ({100 * (per['after'] / per['before'] - 1):+.1f} %)")
    for n in users:
        print(f"CPU floor for {n} people on {machine_cpus} CPUs (N x CPU per start / CPUs): before "
              f"{n * per['before'] / machine_cpus:.1f} s, after {n * per['after'] / machine_cpus:.1f} s")


# -- breakdown ---------------------------------------------------------------------------------------------


def profiled_start(m, mode):
    """One start with the profiler as the server's command, in ``mode``; returns what it wrote."""
    python = [PYTHON, "-X", "importtime"] if mode == "importtime" else [PYTHON]
    snippet = f"c.Spawner.cmd = {python + [PROFILER, '--start-cpu=' + mode]!r}\n"
    m.run(["bash", "-c", f"cat >> {SNIPPET}"], input=snippet)
    m.run("tljh-config reload")
    try:
        asyncio.run(start_and_lab(m, follow_up=True))
        pid = m.run(["systemctl", "show", "-p", "MainPID", "--value", SERVER_UNIT]).stdout.strip()
        home = f"/home/{SERVER_UNIT}"
        m.run(["kill", "-USR2", pid])
        m.run(f"for i in $(seq 100); do test -e {home}/start-cpu-{pid}.json && exit 0; sleep 0.1; done; exit 1")
        data = json.loads(m.run(["cat", f"{home}/start-cpu-{pid}.json"]).stdout)
        if mode == "importtime":
            data["imports"] = m.run(["cat", f"{home}/start-cpu-{pid}.imports"]).stdout
        if mode == "cprofile":
            data["pstats"] = m.run([PYTHON, "-c", PSTATS, f"{home}/start-cpu-{pid}.pstats"]).stdout
        m.run(f"rm -f {home}/start-cpu-*")
        return data
    finally:
        asyncio.run(stop(m))


def print_phases(data):
    marks, steps = data["marks"], data["steps"]
    previous = 0.0
    for what, at in marks:
        print(f"    {what:55} {1000 * (at - previous):7.0f} ms CPU (at {1000 * at:.0f})")
        previous = at
    print("    of which, inside ServerApp.initialize:")
    for key in sorted(steps, key=lambda k: -steps[k]):
        if steps[key] >= 0.002:
            print(f"      {key:53} {1000 * steps[key]:7.0f} ms")
    for key, value in data["extra"].items():
        print(f"    {key:55} {1000 * value:7.0f} ms (thread CPU)")
    previous = marks[-1][1]
    for at, method, uri, status in data["requests"]:
        print(f"    request {method} {uri[:60]:60} {status} {1000 * (at - previous):6.0f} ms CPU since the last mark")
        previous = at
    print(f"    the process's CPU when it was told to write this: {1000 * data['now']:.0f} ms")


def print_imports(text, top=25):
    self_us, total = defaultdict(int), 0
    for line in text.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            package = match.group(4).split(".")[0]
            self_us[package] += int(match.group(1))
            total += int(match.group(1))
    print(f"    all imports: {total / 1000:.0f} ms (wall, self times summed; {len(self_us)} top-level packages)")
    for package, us in sorted(self_us.items(), key=lambda kv: -kv[1])[:top]:
        print(f"      {package:40} {us / 1000:7.1f} ms")


def breakdown(m):
    m.run(["bash", "-c", f"cat > {PROFILER}"], input=PROFILER_SOURCE)
    print("server extensions enabled in the default environment (jupyter server extension list):")
    listing = m.run("/opt/tljh/user/bin/jupyter server extension list 2>&1", user=SERVER_UNIT, check=False).stdout
    print("    " + "\n    ".join(line for line in listing.splitlines() if "enabled" in line or "disabled" in line))
    verbose = m.run([PYTHON, "-v", "-c", "import " + ", ".join(MODULES.split())], user=SERVER_UNIT, check=False).stderr
    from_source = [line for line in verbose.splitlines() if re.match(r"# code object from /", line)]
    from_bytecode = [line for line in verbose.splitlines() if re.match(r"# code object from '", line)]
    print(f"bytecode: importing the servers' modules loaded {len(from_bytecode)} modules from .pyc files and "
          f"compiled {len(from_source)} from source")
    for line in from_source[:10]:
        print("    " + line)
    marker = m.run("cat /opt/tljh/user/tljh-bytecode.txt", check=False).stdout.strip()
    print(f"    the build's bytecode marker: {marker or 'absent'}")
    for side in ("before", "after"):
        set_side(m, side)
        print(f"\n== {side}: one start, CPU by phase ==")
        print_phases(profiled_start(m, "phases"))
        print(f"== {side}: imports by package (python -X importtime) ==")
        print_imports(profiled_start(m, "importtime")["imports"])
        print(f"== {side}: top functions (cProfile: its overhead inflates every number) ==")
        print(profiled_start(m, "cprofile")["pstats"])
        set_side(m, side)
        idle, lsp = asyncio.run(idle_cpu(m, 60))
        print(f"== {side}: an idle server (Lab page served, no kernel): {1000 * idle:.0f} ms CPU per minute; "
              f"language servers jupyter-lsp found: {lsp if isinstance(lsp, str) else sorted(lsp) or 'none'} ==")


async def idle_cpu(m, seconds):
    """An idle server's CPU seconds per minute (Lab page served once, nothing open), and what its jupyter-lsp
    found (its /lsp/status, when it is loaded)."""
    await start_and_lab(m)
    async with HubClient(m.url()) as admin:
        await admin.login(ADMIN, PASSWORD)
        async with admin.session.get(admin.url(f"user/{ADMIN}/lsp/status"), headers=admin._auth()) as r:
            # "sessions": the language servers it found installed ("specs" also lists those it could use)
            lsp = (await r.json()).get("sessions", {}) if r.status == 200 else f"not loaded ({r.status})"
    first, = await asyncio.to_thread(unit_cpu, m, SERVER_UNIT)
    await asyncio.sleep(seconds)
    last, = await asyncio.to_thread(unit_cpu, m, SERVER_UNIT)
    await stop(m)
    return (last - first) * 60 / seconds, lsp


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_machine_arguments(parser)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--spawns", type=int, default=3)
    parser.add_argument("--users", type=int, nargs="*", default=[100, 200])
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"load at start: {load()}")
    with machine(args) as m:
        asyncio.run(spawns(m, 1))  # creates the admin's Unix account; not counted
        try:
            if args.breakdown:
                breakdown(m)
                print(f"load after the breakdown: {load()}")
            if args.rounds:
                results = compare(m, args.rounds, args.spawns)
                report(results, cpus(m), args.users)
        finally:
            m.run(["rm", "-f", SNIPPET, PROFILER])
            m.run("tljh-config reload", check=False)
        print(f"load at the end: {load()}")


if __name__ == "__main__":
    main()
