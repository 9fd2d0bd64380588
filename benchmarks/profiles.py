"""Profiles: how fast the picker is served, and what a profile adds to a spawn. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/profiles.py [--os debian-12] [--pages 100] [--spawns 10] [--rounds 2]

1. Picker page: with 20 profiles configured (each with an option of two choices), a logged-in user GETs
   /hub/spawn N times through the public port; median, p95, max, and the page size.
2. Spawn with and without a profile, in one run on one machine: rounds of N named-server spawns with no profiles
   configured, then N choosing a profile (same limits as the hub-wide ones, so the server started is the same), the
   hub reloaded between blocks, the order alternating; "start requested -> JupyterLab served" medians of both sides
   and the difference, and the same for the hub's own start times (from its log).
3. What a profile adds to a spawn inside the hub, without the noise of a server start: the time of checking a
   choice against the 20 profiles and applying it to a spawner, in this process (the hub runs the same code).
"""

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from hubclient import HubClient  # noqa: E402
from installed import installed_machine  # noqa: E402

PASSWORD = "benchmark-password"


def profiles_yaml(n):
    lines = ["profiles:"]
    for i in range(n):
        lines += [
            f"  - display_name: Profile {i}",
            f"    description: Profile number {i}, with a memory option of two sizes and a longer text as admins write.",
            "    profile_options:",
            "      memory:",
            "        display_name: Memory",
            "        choices:",
            "          small: {display_name: 1 GB, description: Most notebooks., spawner_override: {mem_limit: 1G}}",
            "          large: {display_name: 2 GB, description: Large data., spawner_override: {mem_limit: 2G}}",
        ]
    return "\n".join(lines) + "\n"


def set_profiles(m, text):
    """Replace the profiles block of config.yaml (the benchmark's own; the file has nothing after it) and reload."""
    m.run("sed -i '/^profiles:/,$d' /opt/tljh/config/config.yaml && cat >> /opt/tljh/config/config.yaml", input=text)
    m.run(["tljh-config", "reload", "hub"])


def percentile(values, q):
    values = sorted(values)
    return values[max(0, int(round(q * len(values))) - 1)]


async def picker_times(m, n):
    async with HubClient(m.url("/")) as client:
        await client.login("admin", PASSWORD)
        times, size = [], 0
        for _ in range(n):
            started = time.perf_counter()
            async with client.session.get(client.url("hub/spawn")) as r:
                body = await r.read()
            times.append((time.perf_counter() - started) * 1000)
            shown = body.count(b'name="profile"')
            if r.status != 200 or shown != 20:
                raise RuntimeError(f"picker answered {r.status} with {shown} profiles")
            size = len(body)
        return times, size


async def spawn_times(m, n, user_options, prefix):
    """n starts of named servers prefix0..prefix<n-1>: each start is a unit systemd has never seen (in test
    machines, a stopped unit whose cgroup systemd could not remove stays loaded and blocks a start under its
    name; see the report in notes), and both sides start the same kind of server."""
    times = []
    async with HubClient(m.url("/")) as client:
        await client.login("admin", PASSWORD)
        for i in range(n):
            name = f"{prefix}{i}"
            started = time.monotonic()
            await client.start_server(120, name=name, user_options=user_options, follow_progress=True)
            if await client.lab_page(name=name) != 200:
                raise RuntimeError("lab page did not answer 200")
            times.append(time.monotonic() - started)
            await client.stop_server(name=name)
    return times


def hub_start_seconds(m, prefix):
    """The hub's own start times ("User admin:<name> took N seconds to start") of the servers named prefix*."""
    out = m.run(f"journalctl -u jupyterhub -o cat --no-pager | grep -o 'admin:{prefix}[0-9]* took [0-9.]* seconds'",
                check=False).stdout
    return [float(line.split()[2]) for line in out.splitlines()]


def in_hub_cost(n=2000):
    """Seconds per spawn that profiles add in the hub: tljh.hub.profiles.choose + apply, 20 profiles."""
    import types

    from tljh.hub import profiles
    from tljh.settings import config_file, schema

    raw = config_file.to_plain(config_file.parse_document(profiles_yaml(20), "<benchmark>"))
    effective = schema.effective_config(raw)["profiles"]
    # every attribute a profile can override (the list grows with the overrides), then the defaults that matter
    attrs = {attr: None for names, _ in profiles.APPLIERS.values() for attr in names}
    spawner = types.SimpleNamespace(**{**attrs, "default_url": "/lab", "environment": {},
                                       "user_environment": "default", "session_installs": True})
    options = {"profile": "profile-7", "memory": "small"}
    started = time.perf_counter()
    for _ in range(n):
        profiles.apply(spawner, profiles.choose(effective, options, set(), False).overrides)
    return (time.perf_counter() - started) / n


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--spawns", type=int, default=10, help="spawns per block")
    parser.add_argument("--rounds", type=int, default=2, help="blocks of each side, alternating")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, host {platform.platform()}; guest {args.os}")
    print(f"in the hub, per spawn with a profile (choose + apply, 20 profiles): {1e6 * in_hub_cost():.0f} µs")
    with installed_machine(args.os, "--admin", f"admin:{PASSWORD}") as m:
        m.run(["tljh-config", "set", "limits.memory", "1G"])
        m.run(["tljh-config", "set", "allow_named_servers", "true"])
        set_profiles(m, profiles_yaml(20))
        times, size = asyncio.run(picker_times(m, args.pages))
        print(f"picker page, 20 profiles, {len(times)} GETs of /hub/spawn: median {statistics.median(times):.1f} ms, "
              f"p95 {percentile(times, 0.95):.1f} ms, max {max(times):.1f} ms, {size} bytes")

        # The admin's first server also creates their Unix account: not counted on either side.
        asyncio.run(spawn_times(m, 1, {"profile": "profile-7", "memory": "small"}, "warmup"))
        sides = {"without": ("profiles: []\n", None, "plain"),
                 "with": (profiles_yaml(20), {"profile": "profile-7", "memory": "small"}, "picked")}
        times = {"without": [], "with": []}
        hub_times = {"without": [], "with": []}
        for r in range(args.rounds):
            # the order alternates, so neither side always runs first after the other's reload
            for side in (("without", "with") if r % 2 == 0 else ("with", "without")):
                text, options, prefix = sides[side]
                set_profiles(m, text)
                times[side] += asyncio.run(spawn_times(m, args.spawns, options, f"{prefix}{r}x"))
                hub_times[side] += hub_start_seconds(m, f"{prefix}{r}x")
        a, b = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"spawn -> JupyterLab served, {len(times['without'])} spawns each: without profiles median {a:.3f} s "
              f"(p95 {percentile(times['without'], 0.95):.3f}), with a profile median {b:.3f} s "
              f"(p95 {percentile(times['with'], 0.95):.3f}); difference {1000 * (b - a):+.0f} ms")
        a, b = statistics.median(hub_times["without"]), statistics.median(hub_times["with"])
        print(f"the hub's own start time (\"took N seconds to start\"), median: without {a:.3f} s, with a profile "
              f"{b:.3f} s; difference {1000 * (b - a):+.0f} ms")


if __name__ == "__main__":
    main()
