"""Environments from a repository (issue 14) on a fresh machine. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/repository_environments.py [--os debian-12] [--rounds 3] [--spawns 3]

1. Builds of a repository whose requirements.txt names 5 small packages (a git repository on the machine's
   disk, so no git server is timed), each the time of `tljh env build bench` from start to exit (fetch,
   resolve, install with the server packages, switch: the build serves). Its bytecode is compiled after that,
   in the background: the time from the command's exit until that compile has finished is printed beside it
   (each compile is waited for before the next step, so no step runs beside the previous one's compile):
   - first build (packages not yet in the builders' uv cache);
   - the environment removed and built again: every package in the cache ("warm cache", a fresh venv);
   - a new commit adding one package (the current build is copied and the difference installed);
   - the same commit again ("up to date": the fetch and the comparison only).
2. Spawn latency of a server in that built environment against one in the default environment, side by side
   in one run (rounds alternate the order), both compiled: start requested -> /user/<name>/lab served -> stop.
   Medians.
"""

import argparse
import asyncio
import os
import platform
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from environments import bytecode_done, timed  # noqa: E402
from installed import installed_machine  # noqa: E402
from session_installs import ADMIN, PASSWORD, load, spawns  # noqa: E402

FIVE = ["cowsay", "pyjokes", "tabulate", "termcolor", "text-unidecode"]
WORK = "/srv/bench-course"
GIT = f"git -C {WORK} -c user.name=Bench -c user.email=bench@example.org"
SNIPPET = "/opt/tljh/config/jupyterhub_config.d/bench-environment.py"


def commit(m, requirements):
    m.run(f"printf '%s\\n' {' '.join(requirements)} > {WORK}/requirements.txt")
    m.run(f"{GIT} add -A && {GIT} commit -q -m bench")


def serve(m, environment):
    """Every server runs from ``environment`` (what a profile does, for the benchmark's one admin)."""
    m.run(f"""echo "c.UserCreatingSpawner.user_environment = '{environment}'" > {SNIPPET} && tljh-config reload hub""")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spawns", type=int, default=3)
    args = parser.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; guest {args.os}")
    print(f"load at start: {load()}")
    with installed_machine(args.os, "--admin", f"{ADMIN}:{PASSWORD}") as m:
        m.run("apt-get update -qq && apt-get install -y -qq git >/dev/null", timeout=600)
        m.run(f"git init -q -b main {WORK}")
        commit(m, FIVE)
        m.run(f"tljh-config set environments.bench.repository {WORK}")
        cold, _ = timed(m, "tljh env build bench")
        cold_bytecode = bytecode_done(m, "bench")
        m.run("tljh env remove bench")
        m.run(f"tljh-config set environments.bench.repository {WORK}")
        warm, out = timed(m, "tljh env build bench")
        warm_bytecode = bytecode_done(m, "bench")
        packages = m.run("grep -c '==' /opt/tljh/envs/bench/tljh-lock.txt").stdout.strip()
        commit(m, [*FIVE, "art"])
        new_commit, _ = timed(m, "tljh env build bench")
        new_bytecode = bytecode_done(m, "bench")
        same, _ = timed(m, "tljh env build bench")
        print(f"5-package repository ({', '.join(FIVE)}; {packages} packages with the server's), "
              "`tljh env build bench` until it serves; then until its bytecode is compiled in the background:")
        print(f"  first build, packages downloaded: {cold:.1f} s; bytecode {cold_bytecode:.1f} s later")
        print(f"  rebuilt from scratch with a warm cache: {warm:.1f} s; bytecode {warm_bytecode:.1f} s later")
        print(f"  new commit (+1 package): {new_commit:.1f} s; bytecode {new_bytecode:.1f} s later")
        print(f"  same commit again (up to date): {same:.1f} s")
        # Where the warm build's time went, in uv's own words (resolve, install from the cache).
        steps = [line.strip() for line in out.splitlines() if line.strip().startswith(
            ("Resolved", "Prepared", "Installed", "Uninstalled"))]
        print("  warm build, uv's steps: " + "; ".join(steps))
        print(f"load after the builds: {load()}")

        asyncio.run(spawns(m, 1))  # creates the admin's Unix account; not counted
        times = {"default": [], "bench": []}
        for r in range(args.rounds):
            for environment in (("bench", "default") if r % 2 == 0 else ("default", "bench")):
                serve(m, environment)
                times[environment] += asyncio.run(spawns(m, args.spawns))
        for environment, t in times.items():
            print(f"spawn in {environment}: median {statistics.median(t):.3f} s, min {min(t):.3f} s, "
                  f"max {max(t):.3f} s, n={len(t)}")
        diff = statistics.median(times["bench"]) - statistics.median(times["default"])
        print(f"median difference (repository environment - default): {diff * 1000:+.0f} ms")
        print(f"load at the end: {load()}")


if __name__ == "__main__":
    main()
