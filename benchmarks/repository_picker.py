"""Users' builds from a repository (issue 14, the picker's "Other: build from a repository") on a fresh machine.
Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/repository_picker.py [--os debian-12] [--people 4] [--rounds 3]

The machine serves a git repository over git:// (`git daemon` on 127.0.0.1, as a forge would over the network)
whose requirements.txt names one small package; builds.allowed_hosts lets users build from it.

1. Shared build: ``--people`` users ask for the same commit, not built yet, at the same moment (REST API, the
   picker's user_options): the time until every server is ready, and how often the hub ran the builder for that
   commit (the usage record's count: one build is the point). The servers start once the build serves; its
   bytecode is compiled after that in the background, and the time until it is done is printed too (the next
   part waits for it).
2. Cached start against a normal start, side by side in one run (rounds alternate the order): the admin starts a
   server with the "Default" profile, and with the repository at that (built) commit — the hub then only looks
   the commit up (`git ls-remote` as the builder) before the same start. Request -> /user/<name>/lab served ->
   stop. Medians.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from environments import bytecode_done  # noqa: E402
from hubclient import HubClient  # noqa: E402
from installed import installed_machine  # noqa: E402
from session_installs import ADMIN, PASSWORD, load, spawns  # noqa: E402

URL = "git://127.0.0.1/bench.git"
PICK = "build-from-a-repository"
WORK = "/root/bench"
GIT = f"git -C {WORK} -c user.name=Bench -c user.email=bench@example.org"
USAGE_DIR = "/opt/tljh/state/environments/repository-builds"


def repository(m):
    m.run("apt-get update -qq && apt-get install -y -qq git >/dev/null", timeout=600)
    m.run(f"git init -q --bare -b main /srv/git/bench.git && git init -q -b main {WORK}")
    m.run(f"{GIT} remote add origin /srv/git/bench.git")
    m.run(f"echo cowsay > {WORK}/requirements.txt && {GIT} add -A && {GIT} commit -q -m bench && {GIT} push -q origin main")
    m.run("systemd-run --unit=bench-git-daemon --collect git daemon --reuseaddr --listen=127.0.0.1 "
          "--base-path=/srv/git --export-all /srv/git")
    m.run(f"for i in $(seq 50); do git ls-remote {URL} >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1")
    m.run("tljh-config add-item builds.allowed_hosts 127.0.0.1 && tljh-config reload hub")


async def shared_build(m, people):
    names = [f"bench{i}" for i in range(people)]
    async with HubClient(m.url()) as admin:
        await admin.login(ADMIN, PASSWORD)
        await admin.create_users(*names)
    clients = []
    for name in names:
        client = HubClient(m.url())
        await client.__aenter__()
        await client.login(name, PASSWORD)
        clients.append(client)
    try:
        started = time.monotonic()
        await asyncio.gather(*(c.start_server(timeout=1800, user_options={"profile": PICK,
                                                                          "repository--unlisted-choice": URL})
                               for c in clients))
        seconds = time.monotonic() - started
        for c in clients:
            await c.stop_server()
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
    paths = m.run(f"ls {USAGE_DIR}/*.json").stdout.split()
    records = {os.path.basename(path)[:-len(".json")]: json.loads(m.run(f"cat {path}").stdout) for path in paths}
    return seconds, records


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--people", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; guest {args.os}")
    print(f"load at start: {load()}")
    with installed_machine(args.os, "--admin", f"{ADMIN}:{PASSWORD}") as m:
        repository(m)
        options = {"default": {"profile": "default"},
                   "repository": {"profile": PICK, "repository--unlisted-choice": URL}}
        seconds, records = asyncio.run(shared_build(m, args.people))
        print(f"{args.people} people asking for one unbuilt commit at once: all servers ready after {seconds:.1f} s; "
              f"builds run: {[r['builds'] for r in records.values()]} (one record per build: {len(records)})")
        for name in records:
            print(f"  bytecode of {name}, compiled in the background: done {bytecode_done(m, name):.1f} s after that")
        print(f"load after the build: {load()}")
        asyncio.run(spawns(m, 1, user_options=options["default"]))  # the admin's Unix account; not counted
        times = {"default": [], "repository": []}
        for r in range(args.rounds):
            for kind in (("repository", "default") if r % 2 == 0 else ("default", "repository")):
                times[kind] += asyncio.run(spawns(m, args.starts, user_options=options[kind]))
        for kind, t in times.items():
            print(f"start with profile {kind}: median {statistics.median(t):.3f} s, min {min(t):.3f} s, "
                  f"max {max(t):.3f} s, n={len(t)}")
        diff = statistics.median(times["repository"]) - statistics.median(times["default"])
        print(f"median difference (cached repository build - default): {diff * 1000:+.0f} ms")
        print(f"load at the end: {load()}")


if __name__ == "__main__":
    main()
