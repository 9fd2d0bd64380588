"""The load-test acceptance runs (issue 18) on a fresh machine. Prints numbers and the acceptance checks.

    sudo .venv-test/bin/python benchmarks/loadtest.py burst      # 100 users starting within 10 s, 20 s sessions
    sudo .venv-test/bin/python benchmarks/loadtest.py ramp       # 200 users over 60 s
    sudo .venv-test/bin/python benchmarks/loadtest.py profiles   # the burst, spread over two profiles
    sudo .venv-test/bin/python benchmarks/loadtest.py running    # 200 people with JupyterLab open at once (memory)
    sudo .venv-test/bin/python benchmarks/loadtest.py small      # 15 users at once (to try the tool)
    ... [--users N --ramp S --session S] [--out DIR] [--os debian-12] [--keep] [-- extra tljh loadtest flags]

Each run: a fresh machine, the real bootstrap of this checkout, DummyAuthenticator, then `tljh loadtest` run
inside the machine as an admin would (the simulated people, the sampler and the hub share its 2 CPUs: the
generator's own CPU is in the report). The JSON report and the PNG timeline are copied to --out. The host's
load average is printed before and after: numbers from a busy host are not acceptance numbers.
"""

import argparse
import json
import os
import platform
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from machine import Machine  # noqa: E402

SCENARIOS = {
    "burst": {"users": 100, "ramp": 10, "session": 20},
    "ramp": {"users": 200, "ramp": 60, "session": 20},
    "profiles": {"users": 100, "ramp": 10, "session": 20, "profiles": True},
    # Everyone's server running at the same time: people arrive over a minute and keep JupyterLab open (no
    # notebook: 200 kernels would not fit in 24 GB beside 200 servers) until well after the last one started.
    "running": {"users": 200, "ramp": 60, "session": 360, "kernel": False},
    "small": {"users": 15, "ramp": 0, "session": 10},
}
# Two profiles that differ in what they give (both use the default environment, so no build is needed).
PROFILES_YAML = """
profiles:
  - display_name: Small
    slug: small
    description: 1 GB of memory
    default: true
    spawner_override: {mem_limit: 1G}
  - display_name: Large
    slug: large
    description: 2 GB of memory
    spawner_override: {mem_limit: 2G}
"""


def uptime():
    with open("/proc/loadavg") as f:
        return f"{time.strftime('%H:%M:%S')} load average: {' '.join(f.read().split()[:3])}"


def acceptance(report, scenario):
    """The issue's acceptance checks that this run can decide, as (passed, line)."""
    r, p = report["results"], report["parameters"]
    phases, single = r["phases"], r.get("single") or {}
    checks = []
    visited = ("login", "spawn", "kernel", "code", "stop") if p.get("kernel", True) else ("login", "spawn", "stop")
    complete = all(phases[x]["ok"] == p["users"] for x in visited)
    failed = sum(phases[x]["failed"] for x in visited)
    checks.append((complete and failed == 0, f"{p['users']} of {p['users']} complete every phase, no attempt failed "
                   f"(the tool never retries): {min(phases[x]['ok'] for x in visited)} complete, "
                   f"{failed} failed"))
    if scenario in ("burst", "profiles"):
        floor, took = r.get("cpu_floor"), r.get("all_running")
        cpus = report["machine"]["cpus"]
        if floor and took:
            checks.append((took <= 1.3 * floor, f"all servers running in {took:.1f} s <= 1.3 x CPU floor "
                           f"{floor:.1f} s = {1.3 * floor:.1f} s (ratio {took / floor:.2f})"))
        work = r.get("work_until_all_running")
        if work and work.get("starts_cpu"):
            checks.append((None, f"(why) until then the machine used {work['machine_cpu']:.0f} CPU-s "
                           f"({100 * work['busy']:.0f} % busy): starts {work['starts_cpu']:.0f}, everything else "
                           f"{work['other_cpu']:.0f}; the time is {took / (work['machine_cpu'] / cpus):.2f} x the "
                           f"machine's CPU time used / cores"))
        median = single.get("spawn_median")
        start, spawn = phases["start"]["p95"], phases["spawn"]["p95"]
        if median and start:
            checks.append((start <= 3 * median, f"server start p95 (turn -> JupyterLab) {start:.2f} s <= 3 x "
                           f"single-user spawn median {median:.2f} s = {3 * median:.2f} s"))
        if median and spawn:
            checks.append((None, f"(for reference) person's wait p95 (request -> JupyterLab, incl. the line) "
                           f"{spawn:.1f} s = {spawn / median:.1f} x the single-user median"))
    if scenario in ("ramp", "running"):
        errors = r["hub_log"]["errors"]
        checks.append((errors == 0, f"hub error lines in its log during the run: {errors}"))
        checks.append((None, f"hub RSS peak {r['load']['hub']['rss_peak'] / 2**20:.0f} MiB"))
    per = r.get("per_server_memory") or {}
    if scenario == "running":
        checks.append((per.get("running") == p["users"], f"servers running at once, at most: {per.get('running')} of "
                       f"{p['users']}; then hub + proxy {(per.get('hub_proxy') or 0) / 10**6:.0f} MB, all servers "
                       f"{(per.get('memory') or 0) / 10**9:.1f} GB, machine {(per.get('machine') or 0) / 10**9:.1f} GB"))
    idle = (r["idle"]["hub"]["memory_peak"] or 0) + (r["idle"]["proxy"]["memory_peak"] or 0)
    checks.append((idle <= 150 * 10**6, f"hub + proxy memory idle {idle / 10**6:.0f} MB <= 150 MB"))
    loaded = (r["load"]["hub"]["memory_peak"] or 0) + (r["load"]["proxy"]["memory_peak"] or 0)
    checks.append((None, f"hub + proxy memory under load {loaded / 10**6:.0f} MB; per server (with kernel) median "
                   f"{(per.get('median') or 0) / 2**20:.0f} MiB, peak {per.get('running')} running at once"))
    return checks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--users", type=int)
    parser.add_argument("--ramp", type=float)
    parser.add_argument("--session", type=float)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--out", help="where the JSON and PNG go (default /tmp/tljh-loadtest-<scenario>-<time>)")
    parser.add_argument("--keep", action="store_true", help="leave the machine running (prints its name)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a tljh-config setting for the run (repeatable), e.g. hub.concurrent_starts=2: "
                             "tuning a default is comparing runs that differ only in it")
    parser.add_argument("extra", nargs="*", help="more `tljh loadtest` flags (after --)")
    args = parser.parse_args()
    scenario = dict(SCENARIOS[args.scenario])
    for key in ("users", "ramp", "session"):
        if getattr(args, key) is not None:
            scenario[key] = getattr(args, key)
    out = args.out or f"/tmp/tljh-loadtest-{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.makedirs(out, exist_ok=True)

    print(f"host: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}; guest {args.os}")
    print(f"host uptime before: {uptime()}", flush=True)
    m = Machine.boot(args.os, detach=args.keep)
    try:
        result = m.install_tljh("--admin", "admin:benchmark-password", check=False)
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            raise SystemExit("install failed")
        m.run("tljh-config set auth.type dummy")
        for setting in args.set:
            key, sep, value = setting.partition("=")
            if not sep:
                raise SystemExit(f"--set takes KEY=VALUE, not {setting!r}")
            m.run(["tljh-config", "set", key, value])
            print(f"set {key} = {value}", flush=True)
        if scenario.get("profiles"):
            m.run(["bash", "-c", f"cat >> /opt/tljh/config/config.yaml <<'EOF'\n{PROFILES_YAML}EOF"])
        reload = m.run("tljh-config reload hub", check=False)
        if reload.returncode != 0:
            raise SystemExit(f"the hub did not take the config: {reload.stdout}{reload.stderr}")
        flags = ["--users", str(scenario["users"]), "--ramp", str(scenario["ramp"]),
                 "--session", str(scenario["session"]), "--json", "/root/loadtest.json", "--png", "/root/loadtest.png"]
        if scenario.get("profiles"):
            flags += ["--profile", "small", "--profile", "large"]
        if not scenario.get("kernel", True):
            flags += ["--no-kernel"]
        flags += args.extra
        print(f"running: tljh loadtest {shlex.join(flags)}", flush=True)
        run = m.run(["tljh", "loadtest", *flags], check=False, timeout=7200)
        print(run.stdout)
        print(run.stderr[-2000:], file=sys.stderr)
        text = m.run("cat /root/loadtest.json", check=False).stdout
        if not text:
            raise SystemExit(f"no report (exit {run.returncode})")
        with open(os.path.join(out, "loadtest.json"), "w") as f:
            f.write(text)
        png = m.run("base64 -w0 /root/loadtest.png", check=False).stdout
        if png:
            import base64

            with open(os.path.join(out, "loadtest.png"), "wb") as f:
                f.write(base64.b64decode(png))
        report = json.loads(text)
        print(f"host uptime after: {uptime()}")
        print(f"acceptance ({args.scenario}):")
        for passed, line in acceptance(report, args.scenario):
            print(f"  {'PASS' if passed else ('FAIL' if passed is False else '    ')}  {line}")
        print(f"report and timeline: {out}")
    finally:
        if args.keep:
            print(f"machine left running: {m.name} (python3 integration-tests/machine.py destroy {m.name})")
        else:
            m.destroy()


if __name__ == "__main__":
    main()
