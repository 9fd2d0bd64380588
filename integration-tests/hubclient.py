"""A small JupyterHub client for the integration tests: what a person does in a browser, over HTTP.

Everything goes through the public port (the proxy -> the hub or the user's server), as a
browser's requests would.
"""

import asyncio
import contextlib
import json
import re
import socket
import time
import uuid

import aiohttp
from aiohttp.abc import AbstractResolver


class HubError(Exception):
    pass


async def receive_by(ws, deadline, waiting_for):
    """The websocket's next frame other than a ping, or HubError("no <waiting_for>") once ``deadline`` (a
    time.monotonic() value) has passed.

    aiohttp's own ``receive(timeout=)`` times each read of the socket, and after answering a ping it reads
    again with a fresh timeout: a server that pings more often than the timeout (jupyter-server pings its
    websockets) kept a test waiting for ever on a kernel that never answered. The deadline bounds the whole
    wait instead."""
    remaining = deadline - time.monotonic()
    try:
        if remaining <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(ws.receive(), remaining)
    except asyncio.TimeoutError:
        raise HubError(f"no {waiting_for}") from None


class _StaticResolver(AbstractResolver):
    """Names given in advance resolve to their address; other names through the usual resolver."""

    def __init__(self, hosts):
        self.hosts = hosts
        self.fallback = aiohttp.ThreadedResolver()

    async def resolve(self, host, port=0, family=socket.AF_INET):
        if host in self.hosts:
            return [{"hostname": host, "host": self.hosts[host], "port": port, "family": socket.AF_INET,
                     "proto": 0, "flags": socket.AI_NUMERICHOST}]
        return await self.fallback.resolve(host, port, family)

    async def close(self):
        await self.fallback.close()


class HubClient:
    """One logged-in person. Use as ``async with HubClient(machine.url()) as hub: await hub.login(...)``."""

    def __init__(self, base_url, *, resolve=None, ssl=True):
        """resolve: {name: IP address} consulted before DNS (like curl --resolve), for a hub reached by a
        domain name no DNS server knows; ssl: an ssl.SSLContext trusting the hub's certificate (default:
        the system's trust store)."""
        self.base_url = base_url.rstrip("/") + "/"
        self.resolve = dict(resolve or {})
        self.ssl = ssl
        self.session = None
        self.token = None
        self.username = None

    async def __aenter__(self):
        connector = aiohttp.TCPConnector(resolver=_StaticResolver(self.resolve), ssl=self.ssl)
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector)
        return self

    async def __aexit__(self, *exc):
        await self.session.close()

    def url(self, path):
        return self.base_url + path.lstrip("/")

    def _xsrf(self):
        for cookie in self.session.cookie_jar:
            if cookie.key == "_xsrf":
                return cookie.value
        return None

    async def login(self, username, password):
        """Log in through the form; FirstUse sets the password at the first login."""
        async with self.session.get(self.url("hub/login")) as r:
            if r.status != 200:
                raise HubError(f"GET hub/login: {r.status}")
        data = {"username": username, "password": password, "_xsrf": self._xsrf() or ""}
        async with self.session.post(self.url("hub/login"), data=data, allow_redirects=False) as r:
            if r.status != 302:
                raise HubError(f"login as {username} failed: {r.status} {(await r.text())[:300]}")
        self.username = username
        # A token of the user's own, so API calls work the way scripts use them.
        async with self.session.post(
            self.url(f"hub/api/users/{username}/tokens"),
            json={"note": "integration test"},
            headers={"X-XSRFToken": self._xsrf() or ""},
        ) as r:
            if r.status != 201:
                raise HubError(f"token for {username}: {r.status} {(await r.text())[:300]}")
            self.token = (await r.json())["token"]

    def _auth(self):
        return {"Authorization": f"token {self.token}"}

    async def api(self, method, path, expect=(200,), **kwargs):
        async with self.session.request(method, self.url(path), headers=self._auth(), **kwargs) as r:
            body = await r.text()
            if r.status not in expect:
                raise HubError(f"{method} {path}: {r.status} {body[:300]}")
            return json.loads(body) if body else None

    async def create_users(self, *names):
        """As an admin: add hub users (FirstUse only lets in users that exist, like TLJH's default)."""
        await self.api("POST", "hub/api/users", expect=(201, 409), json={"usernames": list(names)})

    def server_path(self, name=""):
        """The user's server URL path: user/<name>/ or user/<name>/<server>/ for a named server."""
        return f"user/{self.username}/{name + '/' if name else ''}"

    def _server_api(self, name=""):
        return f"hub/api/users/{self.username}/{'servers/' + name if name else 'server'}"

    async def start_server(self, timeout=60, *, name="", user_options=None, follow_progress=False):
        """Start the user's default (or named) server, with user_options if given (a profile's choices), and
        wait until it is ready; returns seconds taken.

        follow_progress: wait on the hub's progress event stream, as the spawn page in a browser does, instead
        of asking every 0.1 s: benchmarks use it, so a start is timed without the polls' 100 ms steps."""
        started = time.monotonic()
        kwargs = {} if user_options is None else {"json": user_options}
        await self.api("POST", self._server_api(name), expect=(201, 202) if user_options else (201, 202, 400),
                       **kwargs)
        if follow_progress:
            await self._follow_progress(name, started + timeout)
            while time.monotonic() - started < timeout:
                if await self._served(name):
                    return time.monotonic() - started
                await asyncio.sleep(0.01)
            raise HubError(f"server {name!r} of {self.username} ready but not served after {timeout} s")
        while time.monotonic() - started < timeout:
            model = await self.api("GET", f"hub/api/users/{self.username}")
            server = model.get("servers", {}).get(name)
            # Ready in the hub's eyes; also wait until the proxy serves it.
            if server and server.get("ready") and await self._served(name):
                return time.monotonic() - started
            await asyncio.sleep(0.1)
        raise HubError(f"server {name!r} of {self.username} not ready after {timeout} s")

    async def _served(self, name):
        """Whether the server answers its API through the proxy (with this user's token)."""
        async with self.session.get(self.url(self.server_path(name) + "api/status"), headers=self._auth()) as r:
            return r.status == 200

    async def _follow_progress(self, name, deadline):
        """Read the spawn's progress events until the hub says the server is ready (HubError if it failed)."""
        path = self._server_api(name) + "/progress"
        remaining = max(deadline - time.monotonic(), 0.1)
        timeout = aiohttp.ClientTimeout(total=remaining)
        async with self.session.get(self.url(path), headers=self._auth(), timeout=timeout) as r:
            if r.status != 200:
                raise HubError(f"GET {path}: {r.status} {(await r.text())[:300]}")
            async for line in r.content:
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise HubError(f"server {name!r} of {self.username} failed: {event.get('message')}")
                if event.get("ready"):
                    return
        raise HubError(f"progress of {name!r} of {self.username} ended without ready")

    async def stop_server(self, timeout=60, *, name=""):
        await self.api("DELETE", self._server_api(name), expect=(202, 204))
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            model = await self.api("GET", f"hub/api/users/{self.username}")
            if name not in model.get("servers", {}):
                return
            await asyncio.sleep(0.2)
        raise HubError(f"server {name!r} of {self.username} did not stop after {timeout} s")

    async def run_code(self, code, *, name=""):
        """Run code in a new kernel of the (running) server and return what it printed or returned."""
        model = await self.api("POST", self.server_path(name) + "api/kernels", expect=(201,), json={"name": "python3"})
        kernel = await self.open_kernel(model["id"], name=name)
        try:
            return await kernel.execute(code)
        finally:
            await kernel.close()

    async def lab_page(self, *, name=""):
        """GET /user/<name>/lab like a browser (token auth), returning the status code."""
        async with self.session.get(self.url(self.server_path(name) + "lab"), headers=self._auth()) as r:
            await r.read()
            return r.status

    async def check_one_plus_one(self):
        """The smoke test a person does: start the server, run 1+1 in a kernel, stop the server."""
        await self.start_server()
        kernel = await self.open_kernel()
        result = await kernel.execute("1+1")
        await kernel.close()
        await self.stop_server()
        if result != "2":
            raise HubError(f"1+1 gave {result!r}")

    async def start_kernel(self, name="python3"):
        """Start a kernel of kernelspec ``name`` in the user's server; returns its id."""
        model = await self.api("POST", f"user/{self.username}/api/kernels", expect=(201,), json={"name": name})
        return model["id"]

    async def open_kernel(self, kernel_id=None, *, name=""):
        """A kernel websocket, as JupyterLab opens it. Returns a Kernel."""
        kernel_id = kernel_id or await self.start_kernel()
        ws_url = self.url(self.server_path(name) + f"api/kernels/{kernel_id}/channels").replace("http", "ws", 1)
        ws = await self.session.ws_connect(ws_url, headers=self._auth(), heartbeat=None)
        return Kernel(ws)

    async def open_terminal(self):
        """A new terminal, as JupyterLab opens one. Returns a Terminal."""
        model = await self.api("POST", f"user/{self.username}/api/terminals")
        ws_url = self.url(f"user/{self.username}/terminals/websocket/{model['name']}").replace("http", "ws", 1)
        ws = await self.session.ws_connect(ws_url, headers=self._auth(), heartbeat=None)
        return Terminal(ws)


    async def run_in_terminal(self, command, timeout=30):
        """Type ``command`` into a new JupyterLab terminal (the user's shell, as in a browser); returns what it
        printed up to the end marker."""
        name = (await self.api("POST", f"user/{self.username}/api/terminals", expect=(200, 201)))["name"]
        ws_url = self.url(f"user/{self.username}/terminals/websocket/{name}").replace("http", "ws", 1)
        marker = uuid.uuid4().hex
        output = ""
        async with self.session.ws_connect(ws_url, headers=self._auth(), heartbeat=None) as ws:
            # The marker is printed by the shell (split in the typed line, so the echo does not match).
            await ws.send_json(["stdin", f"{command}; echo {marker[:8]}''{marker[8:]}\r"])
            deadline = time.monotonic() + timeout
            while marker not in output:
                msg = await receive_by(
                    ws, deadline, f"end of {command!r} in the terminal within {timeout} s: {output[-500:]!r}"
                )
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise HubError(f"terminal closed: {msg}")
                kind, *data = json.loads(msg.data)
                if kind == "stdout":
                    output += data[0]
        await self.api("DELETE", f"user/{self.username}/api/terminals/{name}", expect=(204,))
        return output.split(marker)[0]


class Kernel:
    def __init__(self, ws):
        self.ws = ws
        self.session_id = uuid.uuid4().hex

    async def execute(self, code, timeout=30):
        """Run ``code``; return its result's text/plain (or stdout). Raises if the socket closed."""
        msg_id = uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msg_id,
                "username": "test",
                "session": self.session_id,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": "",
            },
            "parent_header": {},
            "metadata": {},
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False},
            "channel": "shell",
            "buffers": [],
        }
        await self.ws.send_str(json.dumps(msg))
        output = []
        deadline = time.monotonic() + timeout
        while True:
            frame = await receive_by(self.ws, deadline, f"result for {code!r} within {timeout} s")
            if frame.type != aiohttp.WSMsgType.TEXT:
                raise HubError(f"kernel websocket closed: {frame.type} {frame.data!r}")
            reply = json.loads(frame.data)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply["msg_type"]
            if kind == "execute_result":
                return reply["content"]["data"]["text/plain"]
            if kind == "stream":
                output.append(reply["content"]["text"])
            if kind == "display_data":
                # IRkernel sends a cell's value as display_data, not execute_result.
                output.append(reply["content"]["data"].get("text/plain", ""))
            if kind == "error":
                raise HubError(f"kernel error: {reply['content']['ename']}: {reply['content']['evalue']}")
            if kind == "status" and reply["content"]["execution_state"] == "idle" and output:
                return "".join(output)

    async def stay_open_while(self, awaitable):
        """Await ``awaitable`` with the socket read meanwhile, as an open browser tab reads it.

        aiohttp answers the server's pings only while something reads the socket, and jupyter-server closes
        a kernel websocket whose pings go unanswered; a browser always answers, so a test that waits
        without reading would see a close no user sees. Raises if the socket closed meanwhile (after the
        awaitable finished, so nothing is left running)."""

        async def read():
            while True:
                frame = await self.ws.receive()
                if frame.type != aiohttp.WSMsgType.TEXT:
                    return f"kernel websocket closed: {frame.type} {frame.data!r}"

        reader = asyncio.ensure_future(read())
        try:
            result = await awaitable
        finally:
            closed = reader.done() and reader.result()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if closed:
            raise HubError(closed)
        return result

    async def close(self):
        await self.ws.close()


class Terminal:
    """A JupyterLab terminal: a login shell on the user's server, over its websocket."""

    def __init__(self, ws):
        self.ws = ws

    async def run(self, command, timeout=300):
        """Type ``command`` and Enter; return what the terminal printed until it finished (ANSI codes removed)."""
        marker = uuid.uuid4().hex[:12]
        await self.ws.send_str(json.dumps(["stdin", f"{command}; echo {marker}-$?-end\r"]))
        output = ""
        deadline = time.monotonic() + timeout
        while True:
            frame = await receive_by(self.ws, deadline, f"end of {command!r} in the terminal within {timeout} s")
            if frame.type != aiohttp.WSMsgType.TEXT:
                raise HubError(f"terminal websocket closed: {frame.type} {frame.data!r}")
            kind, *data = json.loads(frame.data)
            if kind == "stdout":
                output += data[0]
                # The echoed command line shows "$?" literally; only the finished command prints digits there.
                done = re.search(rf"{marker}-(\d+)-end", output)
                if done:
                    text = re.sub(r"\x1b\][^\x07]*\x07|\x1b\[[0-9;?]*[A-Za-z]|\r", "", output[: done.start()])
                    return text.split(f"{marker}-$?-end\n", 1)[-1]

    async def close(self):
        await self.ws.close()
