"""Install time and spawn latency on a fresh machine. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/install.py [--os debian-12] [--spawns 20]

1. Cold install: a fresh machine (no package cache inside), the real bootstrap of this checkout; seconds
   from starting bootstrap to /hub/login answering 200 through the proxy.
2. Spawn latency: the admin logs in, then N times: start the server, GET /user/admin/lab (200), stop.
   Reports median and p95 of "start requested -> lab page served".
"""

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from hubclient import HubClient  # noqa: E402
from machine import Machine  # noqa: E402


def wait_login(m, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(m.url("/hub/login"), timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("login page never answered")


async def spawn_latencies(m, n):
    times = []
    async with HubClient(m.url()) as admin:
        await admin.login("admin", "benchmark-password")
        for _ in range(n):
            started = time.monotonic()
            await admin.start_server()
            status = await admin.lab_page()
            if status != 200:
                raise RuntimeError(f"lab page answered {status}")
            times.append(time.monotonic() - started)
            await admin.stop_server()
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--spawns", type=int, default=20)
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, host {platform.platform()}; guest {args.os}")
    with Machine.boot(args.os) as m:
        m.copy_checkout()
        started = time.monotonic()
        result = m.install_tljh("--admin", "admin:benchmark-password", check=False)
        if result.returncode != 0:
            print(result.stdout, result.stderr)
            raise SystemExit("install failed")
        wait_login(m)
        install = time.monotonic() - started
        print(f"cold install, bootstrap start -> login page 200: {install:.1f} s")
        for line in result.stdout.splitlines():
            if line.startswith(("==>", "    done")):
                print("   ", line.strip())

        times = asyncio.run(spawn_latencies(m, args.spawns))
        times.sort()
        p95 = times[max(0, int(round(0.95 * len(times))) - 1)]
        print(
            f"spawn -> JupyterLab served, {len(times)} spawns: median {statistics.median(times):.2f} s, "
            f"p95 {p95:.2f} s, min {times[0]:.2f} s, max {times[-1]:.2f} s"
        )

        started = time.monotonic()
        result = m.install_tljh("--admin", "admin:benchmark-password", check=False)
        print(f"no-op rerun of bootstrap: {time.monotonic() - started:.1f} s (exit {result.returncode})")


if __name__ == "__main__":
    main()
