"""One simulated person: the requests a browser makes, in the order it makes them.

Log in through the login form, pick a profile in the picker (or post ``user_options`` as the picker's script
can), follow the spawn-pending page's progress stream, load JupyterLab (with JupyterHub's OAuth redirects), open
a notebook's kernel over its websocket (in JupyterLab 4's binary v1 frames, see kernel_protocol), run code for
the session's length, press "Stop My Server". Each person has its own cookie jar and keep-alive connection
pool, as a browser does; nothing is retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from .kernel_protocol import KernelConnection

PHASES = ("login", "spawn", "kernel", "code", "stop")
# A browser opens about six connections per host and keeps them alive.
CONNECTIONS_PER_HOST = 6


class PhaseFailed(Exception):
    pass


@dataclasses.dataclass
class Profile:
    """What the person picks: a profile slug and {option: choice}; ``None`` slug = whatever the form preselects."""

    slug: str | None = None
    options: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, text):
        """``slug`` or ``slug:option=choice,option=choice``."""
        slug, _, rest = text.partition(":")
        options = {}
        for item in filter(None, rest.split(",")):
            option, sep, choice = item.partition("=")
            if not sep or not option or not choice:
                raise ValueError(f"bad profile choice {item!r} in {text!r}: use option=choice")
            options[option] = choice
        if not slug:
            raise ValueError(f"bad profile {text!r}: it starts with the profile's slug")
        return cls(slug, options)

    def form_fields(self):
        """The picker's form fields (KubeSpawner's names)."""
        fields = {"profile": self.slug}
        for option, choice in self.options.items():
            fields[f"profile-option-{self.slug}--{option}"] = choice
        return fields

    def user_options(self):
        return {"profile": self.slug, **self.options}

    def __str__(self):
        return self.slug + (":" + ",".join(f"{k}={v}" for k, v in self.options.items()) if self.options else "")


@dataclasses.dataclass
class Phase:
    ok: bool | None = None  # None = not reached
    started: float | None = None  # seconds since the run's start
    seconds: float | None = None
    error: str | None = None


@dataclasses.dataclass
class UserResult:
    name: str
    profile: str | None = None
    planned_start: float = 0.0
    phases: dict = dataclasses.field(default_factory=lambda: {p: Phase() for p in PHASES})
    # From the spawn's progress events: seconds waiting for a start slot (the hub's start queue), then the
    # server's own start (slot -> JupyterLab served). None when the hub sends no such events.
    queued: float | None = None
    start: float | None = None
    ready_at: float | None = None  # run time at which JupyterLab was served
    executions: list = dataclasses.field(default_factory=list)  # seconds per execute_request
    # The kernel websocket's format: kernel_protocol.V1 (as JupyterLab) or JSON (the server did not accept v1).
    kernel_protocol: str | None = None
    progress: list = dataclasses.field(default_factory=list)  # (run time, message)

    def as_dict(self):
        d = dataclasses.asdict(self)
        d["phases"] = {k: dataclasses.asdict(v) for k, v in self.phases.items()}
        return d


class SimulatedUser:
    def __init__(self, base_url, name, password, *, clock, profile=None, via="form", code="1+1", session=20.0,
                 think=1.0, timeout=600.0, ssl=None, kernel=True):
        """base_url: the hub's public URL (``http://host/`` or with base_url); clock(): seconds since the run began.

        via: ``form`` (the picker's form, or no form when the hub shows none) or ``api`` (POST user_options to
        the REST API with the session cookie, as the hub's own pages do). timeout: longest a person waits for
        one phase. kernel: False = stay ``session`` seconds with JupyterLab open and no notebook (the kernel
        and code phases are not reached).
        """
        self.base = base_url.rstrip("/") + "/"
        self.name = name
        self.password = password
        self.clock = clock
        self.profile = profile
        self.via = via
        self.code = code
        self.session_seconds = session
        self.think = think
        self.timeout = timeout
        self.ssl = ssl
        self.kernel = kernel
        self.result = UserResult(name=name, profile=str(profile) if profile else None)
        self.http = None
        # Called as on_mark(what) at "spawn" (requested), "ready" (JupyterLab served), "kernel" (kernel answered).
        self.on_mark = None

    def mark(self, what):
        if self.on_mark:
            self.on_mark(what)

    # ---- plumbing

    def url(self, path):
        return self.base + path.lstrip("/")

    @property
    def user_prefix(self):
        return f"user/{quote(self.name, safe='')}/"

    def xsrf(self, url):
        cookie = self.http.cookie_jar.filter_cookies(URL(url)).get("_xsrf")
        return cookie.value if cookie else ""

    async def _phase(self, name, coro):
        phase = self.result.phases[name]
        phase.started = self.clock()
        t0 = time.monotonic()
        try:
            value = await asyncio.wait_for(coro, self.timeout)
        except asyncio.TimeoutError:
            phase.ok, phase.error = False, f"no answer within {self.timeout:.0f} s"
            raise PhaseFailed(phase.error) from None
        except (PhaseFailed, aiohttp.ClientError, OSError, ValueError) as e:
            phase.ok, phase.error = False, str(e) or type(e).__name__
            raise PhaseFailed(phase.error) from None
        phase.ok, phase.seconds = True, time.monotonic() - t0
        return value

    # ---- the person's visit

    async def visit(self):
        connector = aiohttp.TCPConnector(limit_per_host=CONNECTIONS_PER_HOST, ssl=self.ssl)
        jar = aiohttp.CookieJar(unsafe=True)  # hubs reached by IP address keep their cookies too
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=None)) as http:
            self.http = http
            try:
                after_login = await self._phase("login", self.login())
                await self._phase("spawn", self.spawn(after_login))
                if self.result.queued is not None:  # the server's own start: its wait in line taken out
                    self.result.start = max(0.0, self.result.phases["spawn"].seconds - self.result.queued)
                if not self.kernel:
                    await asyncio.sleep(self.session_seconds)  # JupyterLab open, no notebook yet
                else:
                    kernel = await self._phase("kernel", self.open_kernel())
                    try:
                        await self._phase("code", self.run_code(kernel))
                    finally:
                        await kernel.close()
            except PhaseFailed:
                pass
            if self.result.phases["spawn"].started is not None:
                try:
                    await self._phase("stop", self.stop())
                except PhaseFailed:
                    pass
        return self.result

    async def login(self):
        async with self.http.get(self.url("hub/login")) as r:
            await r.read()
            if r.status != 200:
                raise PhaseFailed(f"GET hub/login answered {r.status}")
        form = {"username": self.name, "password": self.password, "_xsrf": self.xsrf(self.url("hub/login"))}
        async with self.http.post(self.url("hub/login"), data=form, allow_redirects=False) as r:
            body = await r.text()
            if r.status != 302:
                raise PhaseFailed(f"login refused ({r.status}): {_page_error(body)}")
            return r.headers.get("Location", self.url("hub/"))

    async def spawn(self, after_login):
        t0 = time.monotonic()
        self.mark("spawn")
        if self.via == "api":
            body = self.profile.user_options() if self.profile else {}
            url = self.url(f"hub/api/users/{quote(self.name, safe='')}/server")
            async with self.http.post(url, json=body, headers={"X-XSRFToken": self.xsrf(url)}) as r:
                text = await r.text()
                if r.status not in (201, 202):
                    raise PhaseFailed(f"POST {url} answered {r.status}: {text[:300]}")
            if r.status == 202:
                await self.follow_progress(t0)
            page = self.url(self.user_prefix + "lab")
        else:
            # The browser follows the login's redirect: /hub/ -> /hub/spawn -> (picker) -> spawn-pending or the server.
            page, status, body = await self.get(URL(self.base).join(URL(after_login)).human_repr())
            if _path(page).endswith("/hub/spawn") and status == 200:
                if self.profile is None and "profile" not in body:
                    raise PhaseFailed("GET hub/spawn answered a form that is not the profile picker")
                fields = self.profile.form_fields() if self.profile else {}
                fields["_xsrf"] = self.xsrf(page)
                async with self.http.post(page, data=fields) as r:
                    body = await r.text()
                    page, status = str(r.url), r.status
                if _path(page).endswith("/hub/spawn"):
                    raise PhaseFailed(f"the picker refused the choice ({status}): {_page_error(body)}")
            elif self.profile is not None and not _path(page).startswith(_path(self.url(self.user_prefix))):
                raise PhaseFailed(f"no profile picker was shown (landed on {page}): does this hub have profiles?")
            if "/hub/spawn-pending/" in page:
                await self.follow_progress(t0)
                page = self.url(self.user_prefix + "lab")
            elif status != 200:
                raise PhaseFailed(f"{page} answered {status}: {_page_error(body)}")
        # The server is ready in the hub's eyes: load JupyterLab through the proxy (and OAuth) like the browser.
        page, status, body = await self.get(page)
        if status != 200 or not _path(page).startswith(_path(self.url(self.user_prefix))):
            raise PhaseFailed(f"JupyterLab: {page} answered {status}: {_page_error(body)}")
        self.mark("ready")
        self.result.ready_at = self.clock()

    async def get(self, url):
        async with self.http.get(url, max_redirects=30) as r:
            body = await r.text()
            return str(r.url), r.status, body

    async def follow_progress(self, t0):
        """Read the progress event stream as the spawn-pending page does, until ready or failed."""
        url = self.url(f"hub/api/users/{quote(self.name, safe='')}/server/progress")
        params = {"_xsrf": self.xsrf(url)}
        async with self.http.get(url, params=params, headers={"Accept": "text/event-stream"}) as r:
            if r.status != 200:
                raise PhaseFailed(f"progress stream answered {r.status}: {(await r.text())[:300]}")
            async for raw in r.content:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                message = event.get("message") or ""
                self.result.progress.append((round(self.clock(), 3), message))
                # The hub's start line (tljh.hub.start_queue) says how long this server waited for its turn.
                if event.get("tljh_phase") == "starting" and "tljh_waited" in event:
                    self.result.queued = float(event["tljh_waited"])
                if event.get("failed"):
                    raise PhaseFailed(f"the hub gave up: {message}")
                if event.get("ready"):
                    return
        raise PhaseFailed("progress stream ended before the server was ready")

    async def open_kernel(self):
        """What JupyterLab does when a notebook opens: create a session, connect its kernel's websocket."""
        url = self.url(self.user_prefix + "api/sessions")
        xsrf = self.xsrf(url)
        body = {"path": f"loadtest-{uuid.uuid4().hex[:8]}.ipynb", "type": "notebook", "name": "",
                "kernel": {"name": "python3"}}
        async with self.http.post(url, json=body, headers={"X-XSRFToken": xsrf}) as r:
            text = await r.text()
            if r.status != 201:
                raise PhaseFailed(f"POST api/sessions answered {r.status}: {text[:300]}")
            kernel_id = json.loads(text)["kernel"]["id"]
        ws_url = self.url(self.user_prefix + f"api/kernels/{kernel_id}/channels").replace("http", "ws", 1)
        origin = str(URL(self.base).origin())  # what a browser sends: no default port
        # JupyterLab asks for the binary v1 frames; a server that does not accept them gets JSON frames.
        kernel = await KernelConnection.open(self.http, ws_url, params={"session_id": uuid.uuid4().hex},
                                             origin=origin)
        self.result.kernel_protocol = kernel.protocol
        await kernel.request("kernel_info_request", {}, "kernel_info_reply")
        self.mark("kernel")
        return kernel

    async def run_code(self, kernel):
        deadline = time.monotonic() + self.session_seconds
        while True:
            t0 = time.monotonic()
            reply = await kernel.execute(self.code)
            self.result.executions.append(round(time.monotonic() - t0, 4))
            if reply["content"].get("status") != "ok":
                raise PhaseFailed(f"code failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
            if time.monotonic() + self.think >= deadline:
                return
            await asyncio.sleep(self.think)

    async def stop(self):
        """The hub home page's "Stop My Server": DELETE with the session cookie, then wait until it is gone."""
        url = self.url(f"hub/api/users/{quote(self.name, safe='')}/server")
        headers = {"X-XSRFToken": self.xsrf(url)}
        async with self.http.delete(url, headers=headers) as r:
            text = await r.text()
            if r.status not in (202, 204):
                raise PhaseFailed(f"DELETE server answered {r.status}: {text[:300]}")
            if r.status == 204:
                return
        model_url = self.url(f"hub/api/users/{quote(self.name, safe='')}")
        while True:
            await asyncio.sleep(0.25)
            async with self.http.get(model_url, headers=headers) as r:
                model = await r.json(content_type=None)
                if r.status != 200:
                    raise PhaseFailed(f"GET user answered {r.status}: {model}")
            if not model.get("servers") and not model.get("pending"):
                return


def _path(url):
    return urlsplit(url).path


def _page_error(body):
    """The message a hub page shows (error pages, the login form, the picker), else the page's start."""
    import re

    for pattern in (r'class="[^"]*(?:login_error|spawn-error-msg|error)[^"]*"[^>]*>(.*?)<',
                    r"<title>(.*?)</title>"):
        found = re.search(pattern, body or "", re.S)
        if found and found.group(1).strip():
            return " ".join(found.group(1).split())[:200]
    return " ".join((body or "")[:200].split())
