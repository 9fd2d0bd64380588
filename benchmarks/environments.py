"""Environment builds on a fresh machine. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/environments.py [--os debian-12] [--runs 5]

1. No-change build: `tljh env build` when every environment is up to date (what the installer's rerun and a
   repeated command cost), N runs: median and max of the whole command (process start to exit).
2. A 10-package environment (a typical teaching set), built three ways in the same run:
   - first build, the packages not yet in the builders' uv cache (downloads from PyPI);
   - the same environment removed and built again, every package in the cache ("warm cache");
   - one more package added to it (an incremental rebuild: a copy of the current build plus the difference).
   Each is the time of `tljh env build NAME` from start to exit: resolve + install + switch, when the build
   serves. Its bytecode is compiled after that in the background: the time from the command's exit until
   that compile has finished is printed beside it (each build's compile is waited for before the next step,
   so no step runs beside the previous one's compile).
3. No-change `tljh env build` again, now with two environments; then what a chown walk of the 10-package
   build to root costs (would served builds be root's rather than the builder's).
"""

import argparse
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration-tests"))

from machine import Machine  # noqa: E402

TEN = ["numpy", "pandas", "matplotlib", "scipy", "seaborn", "scikit-learn", "requests", "beautifulsoup4",
       "openpyxl", "sympy"]


def timed(m, command, timeout=1800):
    """Seconds ``command`` takes, measured inside the machine (no nsenter/systemd-run overhead), and its output."""
    script = f's=$(date +%s%N); {command} > /tmp/bench.out 2>&1; rc=$?; e=$(date +%s%N); echo $(( (e - s) / 1000000 )) $rc'
    millis, rc = m.run(["bash", "-c", script], timeout=timeout).stdout.split()
    output = m.run("cat /tmp/bench.out").stdout
    if rc != "0":
        raise SystemExit(f"{command} failed:\n{output}")
    return int(millis) / 1000, output


def bytecode_done(m, name, timeout=1800):
    """Seconds from now until the background compile of ``name``'s current build has finished (its marker
    holds the build id), polled inside the machine every 0.1 s."""
    prefix = f"/opt/tljh/envs/{name}"
    script = (
        f"b=$(python3 -c \"import json; print(json.load(open('{prefix}/tljh-environment.json'))['build'])\"); "
        f"s=$(date +%s%N); until grep -qx \"$b\" {prefix}/tljh-bytecode.txt 2>/dev/null; do sleep 0.1; done; "
        "e=$(date +%s%N); echo $(( (e - s) / 1000000 ))"
    )
    return int(m.run(["bash", "-c", script], timeout=timeout).stdout.strip()) / 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--os", default="debian-12")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, host {platform.platform()}; guest {args.os}; "
          f"host load average at start {os.getloadavg()[0]:.1f}")
    with Machine.boot(args.os) as m:
        m.install_tljh("--admin", "admin:benchmark-password")
        times = [timed(m, "tljh env build")[0] for _ in range(args.runs)]
        print(f"no-change `tljh env build` ({args.runs} runs): median {statistics.median(times):.2f} s, "
              f"max {max(times):.2f} s")
        m.run("tljh-config set environments.bench.packages '[" + ", ".join(TEN) + "]'")
        cold, _ = timed(m, "tljh env build bench")
        cold_bytecode = bytecode_done(m, "bench")
        m.run("tljh env remove bench")
        m.run("tljh-config set environments.bench.packages '[" + ", ".join(TEN) + "]'")
        warm, out = timed(m, "tljh env build bench")
        warm_bytecode = bytecode_done(m, "bench")
        m.run("tljh-config add-item environments.bench.packages tabulate")
        incremental, _ = timed(m, "tljh env build bench")
        incremental_bytecode = bytecode_done(m, "bench")
        times = [timed(m, "tljh env build")[0] for _ in range(args.runs)]
        print(f"no-change `tljh env build` with two environments, after the builds ({args.runs} runs): "
              f"median {statistics.median(times):.2f} s, max {max(times):.2f} s")
        count = m.run("grep -c '==' /opt/tljh/envs/bench/tljh-lock.txt").stdout.strip()
        files = m.run("find /opt/tljh/envs/bench -name '*.py' | wc -l").stdout.strip()
        print(f"10-package environment ({', '.join(TEN)}; {count} packages with the server's, {files} .py files):")
        print("  `tljh env build bench` until it serves; then until its bytecode is compiled in the background:")
        print(f"  first build, packages downloaded: {cold:.1f} s; bytecode {cold_bytecode:.1f} s later")
        print(f"  rebuilt from scratch with a warm cache: {warm:.1f} s; bytecode {warm_bytecode:.1f} s later")
        print(f"  one package added (incremental): {incremental:.1f} s; bytecode {incremental_bytecode:.1f} s later")
        for line in out.splitlines():
            if "Installed" in line or "Resolved" in line or "Prepared" in line:
                print("   ", line.strip())
        # What giving a served build to root would cost at each switch (its files are hard links into the
        # builder's uv cache, so this also changes the cache's copies: measured last, on a build no longer needed).
        entries = m.run("find /opt/tljh/envs/bench | wc -l").stdout.strip()
        walk, _ = timed(m, "chown -R --no-dereference root:root /opt/tljh/envs/bench")
        print(f"  a chown walk of that build ({entries} entries) to root: {walk:.2f} s")
        print(f"host load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
