"""What the port rules (tljh.system.port_rules) cost loopback traffic. Prints numbers; asserts nothing.

    sudo .venv-test/bin/python benchmarks/port_rules.py [--seconds 5] [--rounds 3]

Runs on this machine, in a network namespace of its own (the machine's own firewall is never touched), with a
cgroup of its own under the cgroup v2 hierarchy standing in for a user's server unit. An echo server runs in
that cgroup as `nobody`; a client as the same uid (the owner, which the rules let in) measures, over loopback:

- round trips per second of 1-byte messages on one connection (a notebook talking to a local database);
- new connections per second (connect, one round trip, close: a web app's short requests).

Each round measures every side one after the other: no table at all (no connection tracking on loopback), the
hub's table protecting no server (loopback connections tracked and marked: the table as it is while no server
runs), and the table protecting the server. Then, as a check that the rules were in force, another uid's
connection attempt (refused). Load at the start and the end.
"""

import argparse
import os
import platform
import pwd
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from tljh.system import port_rules  # noqa: E402

OWNER = pwd.getpwnam("nobody").pw_uid
OTHER = OWNER - 1  # any other uid: needs no account

ECHO_SERVER = r"""
import socket, sys, threading
server = socket.create_server(("127.0.0.1", 0), backlog=512)
print(server.getsockname()[1], flush=True)
def echo(c):
    with c:
        while True:
            data = c.recv(4096)
            if not data:
                return
            c.sendall(data)
while True:
    c, _ = server.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
c = socket.create_connection(("127.0.0.1", port))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n, end = 0, time.perf_counter() + seconds
while time.perf_counter() < end:
    c.sendall(b"x"); c.recv(1); n += 1
c.close()
round_trips = n / seconds
n, end = 0, time.perf_counter() + seconds
while time.perf_counter() < end:
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"x"); c.recv(1)
    n += 1
print(json.dumps({"round_trips": round_trips, "connections": n / seconds}))
"""

ATTEMPT = r"""
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close(); print("connected")
except OSError as e:
    print(type(e).__name__)
"""


def as_uid(uid, code, *args, cgroup=None):
    """argv running ``code`` as ``uid`` (in ``cgroup`` when given)."""
    inner = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-c", code, *args]
    if cgroup:
        return ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sh", *inner]
    return inner


def measure(port, seconds):
    import json

    out = subprocess.run(as_uid(OWNER, CLIENT, str(port), str(seconds)), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespace, cgroup, nft)")
    if not args.in_namespace:
        # A network namespace of its own: its loopback, its ruleset.
        os.execvp("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__),
                              "--in-namespace", "--seconds", str(args.seconds), "--rounds", str(args.rounds)])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    mount = port_rules.cgroup2_mount()
    if mount is None or mount[1] != "/":
        sys.exit("needs the cgroup v2 hierarchy mounted from its root")
    base = os.path.join(mount[0], f"tljh-benchmark-port-rules-{os.getpid()}")
    cgroup = os.path.join(base, "server")
    os.makedirs(cgroup)
    print(f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}; load at start: {os.getloadavg()}")
    server = subprocess.Popen(as_uid(OWNER, ECHO_SERVER, cgroup=cgroup), stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        name = port_rules.nft_name("/" + os.path.relpath(cgroup, mount[0]), mount)
        protected = [port_rules.Server(name, port_rules.depth(os.path.relpath(cgroup, mount[0])), OWNER)]
        print(f"{'round':>5} {'rules':>10} {'round trips/s':>14} {'connections/s':>14}")
        results = {"none": [], "tracked": [], "protected": []}
        for round_ in range(1, args.rounds + 1):
            for label in results:
                if label == "none":
                    port_rules.remove()
                else:
                    port_rules.apply(protected if label == "protected" else [])
                numbers = measure(port, args.seconds)
                results[label].append(numbers)
                print(f"{round_:>5} {label:>10} {numbers['round_trips']:>14.0f} {numbers['connections']:>14.0f}")
        refused = subprocess.run(as_uid(OTHER, ATTEMPT, str(port)), capture_output=True, text=True).stdout.strip()
        print(f"another uid's connection with the rules: {refused}")
        for key in ("round_trips", "connections"):
            medians = {label: sorted(r[key] for r in rs)[len(rs) // 2] for label, rs in results.items()}
            none = medians["none"]
            print(f"median {key.replace('_', ' ')}/s: " + ", ".join(
                f"{label} {value:.0f} ({(value - none) / none * 100:+.1f} %)" for label, value in medians.items()))
    finally:
        port_rules.remove()
        server.kill()
        server.wait()
        time.sleep(0.2)  # the killed server leaves its cgroup
        for directory in (cgroup, base):
            try:
                os.rmdir(directory)
            except OSError:
                pass
    print(f"load at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
