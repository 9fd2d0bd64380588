"""Wall time of the integration suite with different numbers of parallel workers. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/integration_workers.py [--os debian-12] [--workers 1 4] [-- PYTEST ARGS]

Runs `./test.sh --integration --workers N` once per N, one after another, and prints each run's wall time and
test outcome counts, with the host's load while it ran (1-minute load average and the number of
systemd-nspawn processes, sampled every 10 s: other people's machines slow a run down).
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sample_load(samples, stop):
    while not stop.wait(10):
        load = float(Path("/proc/loadavg").read_text().split()[0])
        nspawn = sum(1 for p in Path("/proc").glob("[0-9]*/comm") if _read(p) == "systemd-nspawn\n")
        samples.append((load, nspawn))


def _read(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def run(os_name, workers, pytest_args):
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_load, args=(samples, stop), daemon=True)
    sampler.start()
    started = time.monotonic()
    result = subprocess.run(
        ["./test.sh", "--integration", "--os", os_name, "--workers", str(workers), "--", *pytest_args],
        cwd=REPO, capture_output=True, text=True,
    )
    wall = time.monotonic() - started
    stop.set()
    summary = [line for line in result.stdout.splitlines() if re.match(r"=+ .*(passed|failed|error).* in ", line)]
    loads = [s[0] for s in samples] or [0.0]
    nspawns = [s[1] for s in samples] or [0]
    print(f"workers {workers}: {wall / 60:.1f} min wall, exit {result.returncode}; "
          f"{summary[-1].strip('= ') if summary else 'no pytest summary'}; "
          f"host load average {sum(loads) / len(loads):.1f} (max {max(loads):.1f}), "
          f"systemd-nspawn processes {sum(nspawns) / len(nspawns):.0f} (max {max(nspawns)})", flush=True)


def main():
    argv = sys.argv[1:]
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the integration suite boots machines")
    print(f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GB,"
          f" {platform.platform()}; guest {args.os}", flush=True)
    for workers in args.workers:
        run(args.os, workers, pytest_args)


if __name__ == "__main__":
    main()
