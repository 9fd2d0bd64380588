"""How long `tljh backup` and `tljh restore` take, and how big the archive is. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/backup.py [--os debian-12] [--users 20] [--home-mb 5] [--rounds 3]

One freshly installed machine. USERS hub accounts are made the way the spawner makes them (jupyter-<name>,
member of jupyterhub-users), each home holding HOME_MB of files: half random bytes (data, incompressible), half
text (notebooks, compressible). Then, ROUNDS times each: `tljh backup` without homes and with `--homes` (wall
time, tljh's own time, archive size). Last, one `tljh restore` of the archive with homes onto the same server:
wall time split at the line where it starts the hub (checks + saved previous state + accounts/files/homes
placed; then the installer's rerun, which takes the hub up again). Host load at the start and the end.
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from installed import installed_machine  # noqa: E402

ADMIN, PASSWORD = "admin", "benchmark-password"

# In the machine: accounts as the spawner makes them, homes with data and text files.
MAKE_HOMES = r"""
set -e
for i in $(seq -w 1 {users}); do
    name=jupyter-user$i
    useradd --create-home --shell /bin/bash "$name"
    gpasswd --add "$name" jupyterhub-users >/dev/null
    home=/home/$name
    head -c $(( {kib} / 2 ))K /dev/urandom > "$home/data.bin"
    yes '{{"cell_type": "code", "source": ["import numpy as np\n", "np.arange(10).sum()"], "outputs": []}},' \
        | head -c $(( {kib} / 2 ))K > "$home/notebook.ipynb"
    chown -R "$name:$name" "$home"
done
"""

# Each output line with the guest's clock in front, to split the restore where it starts the hub.
TIMESTAMPED = "{command} 2>&1 | while IFS= read -r line; do printf '%s %s\\n' \"$(date +%s.%N)\" \"$line\"; done; exit ${{PIPESTATUS[0]}}"


def load():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def human(size):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def timed_backup(m, target, homes):
    m.run(f"rm -f {target}")
    started = time.monotonic()
    out = m.run(f"tljh backup {'--homes ' if homes else ''}{target}", timeout=3600).stdout
    wall = time.monotonic() - started
    own = float(re.search(r", ([0-9.]+) s\)", out).group(1))
    size = int(m.run(f"stat -c %s {target}").stdout)
    return wall, own, size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--home-mb", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"load at start: {load()}")
    with installed_machine(args.os, "--admin", f"{ADMIN}:{PASSWORD}") as m:
        m.run(MAKE_HOMES.format(users=args.users, kib=int(args.home_mb * 1024)), timeout=1800)
        content = int(m.run("du -sb /home | cut -f1").stdout)
        print(f"{args.users} accounts, homes {human(content)} in all ({args.home_mb} MB each: half random, half text)")
        for homes in (False, True):
            runs = [timed_backup(m, "/root/bench.tar.gz", homes) for _ in range(args.rounds)]
            walls, owns, sizes = zip(*runs)
            print(f"tljh backup{' --homes' if homes else '        '}: wall median {statistics.median(walls):.1f} s "
                  f"(min {min(walls):.1f}, max {max(walls):.1f}), tljh's own {statistics.median(owns):.1f} s, "
                  f"archive {human(statistics.median(sizes))}, n={len(runs)}")
        print(f"load after the backups: {load()}")
        started = time.monotonic()
        out = m.run(TIMESTAMPED.format(command="tljh restore --yes /root/bench.tar.gz"), timeout=3600).stdout
        wall = time.monotonic() - started
        stamps = [(float(t), line) for t, _, line in (raw.partition(" ") for raw in out.splitlines()) if t]
        first = stamps[0][0]
        hub = next(t for t, line in stamps if line.startswith("starting the hub"))
        print(f"tljh restore (homes, onto the same server): wall {wall:.1f} s; checks, saved previous state and "
              f"everything placed {hub - first:.1f} s; installer rerun until the hub answers {stamps[-1][0] - hub:.1f} s")
        print(f"load at the end: {load()}")


if __name__ == "__main__":
    main()
