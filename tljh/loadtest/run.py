"""`tljh loadtest`: simulated people use this hub the way a class does, and the hub's numbers are reported.

Order of a run: checks (a test hub: dummy or FirstUse login, no users but admins and earlier load-test
users, unless --allow-real-users), a short admin token, idle sampling, a few single-user visits one after the
other (the spawn median and CPU per start of this machine, in this run), then every simulated person on
their schedule, then the hub's log and metrics, then the simulated people's hub users and Unix accounts are
removed. Prints the report; writes JSON and a PNG timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import secrets
import statistics
import sys
import time
from urllib.parse import quote

import aiohttp

from tljh.hub import accounts
from tljh.system import paths, systemd

from . import report as reporting
from .options import add_arguments
from .client import Profile, SimulatedUser
from .sampler import Sampler

# Authenticators through whose login form a simulated person can get in.
SIMULATABLE = {"DummyAuthenticator", "FirstUseAuthenticator"}
TOKEN_SCOPES = ["admin:users", "admin:servers", "read:metrics"]
TOKEN_NOTE = "tljh loadtest"
# JupyterHub logs every event-loop stall of at least a second (JupyterHub.event_loop_interval_log_threshold).
STALL_LINE = re.compile(r"Event loop was unresponsive for at least ([0-9.]+)s")


class Refused(Exception):
    """The one line `tljh loadtest` prints when it will not run."""


# ---- the hub, as root on its server


def local_settings():
    from tljh.settings.effective import load_settings

    settings = load_settings()
    return settings.config, settings.base_url


def default_url(config, base_url):
    if config["https"]["enabled"]:
        raise Refused("this hub serves HTTPS: give its public address, e.g. --url https://hub.example.org/")
    port = config["http"]["port"]
    return f"http://127.0.0.1{'' if port == 80 else f':{port}'}{base_url}"


def authenticator(config):
    """The name of the authenticator class a simulated person can log in through, else of the hub's own."""
    from tljh.settings.authenticators import resolve_authenticator

    cls = resolve_authenticator(config["auth"]["type"])
    for base in cls.__mro__:
        if base.__name__ in SIMULATABLE:
            return base.__name__
    return cls.__name__


def _hub_db():
    from jupyterhub import orm

    return orm, orm.new_session_factory("sqlite:///" + paths.HUB_DATABASE)()


def admin_token(seconds):
    """(admin name, token, token id): a short-lived API token of one of the hub's admins, made the way
    `jupyterhub token` makes it. Revoked through the API afterwards (never by editing the hub's database
    under it: the hub keeps tokens it has seen in its session)."""
    orm, db = _hub_db()
    try:
        admin = db.query(orm.User).filter(orm.User.admin.is_(True)).order_by(orm.User.id).first()
        if admin is None:
            raise Refused("the hub has no admin user yet: log in once as the admin given to the installer")
        scopes = [*TOKEN_SCOPES, f"tokens!user={admin.name}"]
        token = admin.new_api_token(scopes=scopes, note=TOKEN_NOTE, expires_in=int(seconds))
        db.commit()
        row = db.query(orm.APIToken).filter(orm.APIToken.user_id == admin.id,
                                            orm.APIToken.note == TOKEN_NOTE).order_by(orm.APIToken.id.desc()).first()
        # The REST API names a token by its api_id ("a<id>"), not by its row id.
        return admin.name, token, row.api_id
    finally:
        db.close()


class HubAdmin:
    """The admin side of a run, over the REST API."""

    def __init__(self, url, token):
        self.url = url
        self.headers = {"Authorization": f"token {token}"}
        self.http = None

    async def __aenter__(self):
        self.http = aiohttp.ClientSession(headers=self.headers)
        return self

    async def __aexit__(self, *exc):
        await self.http.close()

    async def call(self, method, path, expect=(200,), **kwargs):
        async with self.http.request(method, self.url + "hub/api/" + path, **kwargs) as r:
            text = await r.text()
            if r.status not in expect:
                raise RuntimeError(f"{method} hub/api/{path}: {r.status} {text[:300]}")
            return json.loads(text) if text else None

    async def users(self):
        found, offset = [], 0
        while True:
            page = await self.call("GET", f"users?offset={offset}&limit=200",
                                   headers={"Accept": "application/jupyterhub-pagination+json"})
            found += page["items"]
            following = (page.get("_pagination") or {}).get("next")
            if not following:
                return found
            offset = following["offset"]

    async def create(self, names):
        for i in range(0, len(names), 100):
            await self.call("POST", "users", expect=(201,), json={"usernames": names[i:i + 100]})

    # The hub refuses to delete a user whose server is stopping (400): ask again after this many seconds,
    # for at most stopping_wait seconds.
    retry_pause = 1.0
    stopping_wait = 600.0

    async def delete(self, name):
        deadline = time.monotonic() + self.stopping_wait
        while True:
            try:
                return await self.call("DELETE", f"users/{quote(name, safe='')}", expect=(204, 404))
            except RuntimeError as e:
                if ": 400 " not in str(e) or "stopping" not in str(e) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(self.retry_pause)

    async def revoke(self, owner, token_id):
        try:
            await self.call("DELETE", f"users/{quote(owner, safe='')}/tokens/{token_id}", expect=(204,))
        except (RuntimeError, aiohttp.ClientError) as e:
            say(f"warning: the run's admin token was not revoked ({e}); it expires by itself")

    async def metrics(self):
        async with self.http.get(self.url + "hub/metrics") as r:
            return await r.text() if r.status == 200 else ""


def check_population(users, admin_names, prefix):
    """Refuse when the hub has people who are not simulated (admins aside)."""
    real = sorted(u["name"] for u in users if u["name"] not in admin_names and not u["name"].startswith(prefix)
                  and not u.get("admin"))
    if real:
        shown = ", ".join(real[:5]) + (f" and {len(real) - 5} more" if len(real) > 5 else "")
        raise Refused(f"this hub has {len(real)} real users ({shown}): they would feel the load. Run it on a test "
                      "hub, or add --allow-real-users")


def metric_value(text, name, labels=""):
    for line in text.splitlines():
        if line.startswith(name + (labels or "")) and (labels or line[len(name):len(name) + 1] in (" ", "{")):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def event_loop_over(text, seconds=1.0):
    """How many measured event-loop intervals exceeded ``seconds`` (JupyterHub's histogram)."""
    total = metric_value(text, "jupyterhub_event_loop_interval_seconds_count")
    within = metric_value(text, "jupyterhub_event_loop_interval_seconds_bucket", f'{{le="{seconds:.1f}"}}')
    return None if total is None or within is None else total - within


def hub_log(since):
    lines = systemd.journal_since(paths.HUB_UNIT, since).splitlines()
    errors = [line for line in lines if line.startswith(("[E ", "[C "))]
    stalls = [float(m.group(1)) for m in map(STALL_LINE.search, lines) if m]
    return {"errors": len(errors), "first_errors": errors[:10], "stalls": len(stalls),
            "max_stall": max(stalls) if stalls else None}


def uptime():
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return f"{datetime.datetime.now():%H:%M:%S} load average: {load}"


# ---- the run


class Run:
    def __init__(self, args, url, password, sampler):
        self.args = args
        self.url = url
        self.password = password
        self.sampler = sampler
        self.t0 = time.monotonic()
        self.profiles = [Profile.parse(p) for p in args.profile]

    def clock(self):
        return time.monotonic() - self.t0

    def person(self, name, i, session, kernel=True):
        profile = self.profiles[i % len(self.profiles)] if self.profiles else None
        return SimulatedUser(self.url, name, self.password, clock=self.clock, profile=profile, via=self.args.via,
                             code=self.args.code, session=session, think=self.args.think, timeout=self.args.timeout,
                             kernel=kernel)

    def hub_and_proxy_cpu(self):
        cpu = [self.sampler.unit_cpu(u) for u in (self.sampler.hub_unit, *self.sampler.proxy_units)]
        return sum(c for c in cpu if c is not None)

    async def single(self, names):
        """One person at a time: spawn seconds and the CPU one start costs (hub, proxy and the server's unit)."""
        results, measures = [], []
        for i, name in enumerate(names):
            before_units = set(self.sampler.cgroups.units(self.sampler.server_units))
            marks = {}

            def mark(what, marks=marks, before_units=before_units):
                new = set(self.sampler.cgroups.units(self.sampler.server_units)) - before_units
                unit = next(iter(new)) if len(new) == 1 else None
                marks[what] = (self.hub_and_proxy_cpu(), self.sampler.unit_cpu(unit) if unit else None)

            person = self.person(name, i, session=min(2.0, self.args.session))
            person.on_mark = mark
            result = await person.visit()
            results.append(result)
            if {"spawn", "ready", "kernel"} <= marks.keys() and marks["ready"][1] is not None:
                hub = marks["ready"][0] - marks["spawn"][0]
                server = marks["ready"][1]
                kernel = (marks["kernel"][1] or server) - server
                measures.append((hub, server, kernel))
        spawns = [r.phases["spawn"].seconds for r in results if r.phases["spawn"].ok]
        if not measures:
            return {"spawns": len(names), "spawn_median": statistics.median(spawns) if spawns else None,
                    "cpu_per_start": None, "cpu_server": None, "cpu_hub_proxy": None, "cpu_per_kernel": None,
                    "visits": [r.as_dict() for r in results]}
        hub, server, kernel = (statistics.median(m[k] for m in measures) for k in range(3))
        return {"spawns": len(names), "spawn_median": statistics.median(spawns) if spawns else None,
                "cpu_per_start": hub + server, "cpu_server": server, "cpu_hub_proxy": hub, "cpu_per_kernel": kernel,
                "visits": [r.as_dict() for r in results]}

    async def load(self, names):
        n = len(names)

        async def one(i, name):
            await asyncio.sleep(self.args.ramp * i / n if n > 1 else 0)
            person = self.person(name, i, self.args.session, kernel=self.args.kernel)
            person.result.planned_start = round(self.clock(), 3)
            return await person.visit()

        return await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))


async def execute(args):
    config, base_url = local_settings()
    url = (args.url.rstrip("/") + "/") if args.url else default_url(config, base_url)
    auth = authenticator(config)
    if auth not in SIMULATABLE:
        raise Refused(f"this hub logs people in with {auth}: simulated people can only log in through "
                      "DummyAuthenticator or FirstUseAuthenticator. Run it on a test hub "
                      "(sudo tljh-config set auth.type dummy)")
    if auth == "DummyAuthenticator":
        password = (config["auth"].get("DummyAuthenticator") or {}).get("password") or "loadtest"
    else:
        password = secrets.token_urlsafe(12)

    single = [f"{args.prefix}single-{i + 1}" for i in range(args.single)]
    width = len(str(args.users))
    names = [f"{args.prefix}{i + 1:0{width}d}" for i in range(args.users)]
    expected = args.single * 30 + args.ramp + args.session + args.timeout * 3 + 600
    admin_name, token, token_id = admin_token(expected)
    sampler = Sampler(interval=args.interval)
    machine = sampler.cgroups.machine()
    report = {
        "parameters": {"users": args.users, "ramp": args.ramp, "session": args.session, "kernel": args.kernel,
                       "think": args.think,
                       "code": args.code, "profiles": args.profile, "via": args.via, "single": args.single,
                       "url": url, "prefix": args.prefix, "authenticator": auth},
        "machine": {"cpus": sampler.cgroups.cpus(), "memory_total": machine.memory_total,
                    "uptime_before": uptime(), "started": datetime.datetime.now().isoformat(timespec="seconds")},
    }
    created, sampling = False, None
    async with HubAdmin(url, token) as hub:
        try:
            existing = await hub.users()
            if not args.allow_real_users:
                check_population(existing, {admin_name}, args.prefix)
            leftovers = [u["name"] for u in existing if u["name"].startswith(args.prefix)]
            await remove_people(hub, leftovers)
            await hub.create(single + names)
            created = True
            run = Run(args, url, password, sampler)
            say(f"{uptime()}: sampling the idle hub")
            sampling = asyncio.create_task(sampler.run(run.clock))
            await asyncio.sleep(max(3 * args.interval, 3))
            idle_end = run.clock()
            since = time.time()
            metrics_before = await hub.metrics()
            if single:
                say(f"{uptime()}: {len(single)} single-user visits")
                report_single = await run.single(single)
            else:
                report_single = None
            load_start = run.clock()
            say(f"{uptime()}: {args.users} people over {args.ramp:g} s")
            results = await run.load(names)
            load_end = run.clock()
            await asyncio.sleep(2 * args.interval)
            sampling.cancel()
            metrics_after = await hub.metrics()
            report["machine"]["uptime_after"] = uptime()
        finally:
            if sampling is not None:
                sampling.cancel()
            if created and not args.keep_users:
                say("removing the simulated people")
                await remove_people(hub, single + names)
            await hub.revoke(admin_name, token_id)
    users = [r.as_dict() for r in results]
    samples = sampler.samples
    phases = reporting.phase_summary(users)
    all_running = reporting.all_running(users)
    cpu_floor = None
    if report_single and report_single["cpu_per_start"]:
        cpu_floor = args.users * report_single["cpu_per_start"] / report["machine"]["cpus"]
    over_before, over_after = event_loop_over(metrics_before), event_loop_over(metrics_after)
    report["results"] = {
        "single": report_single,
        "phases": phases,
        "kernel_protocols": reporting.kernel_protocols(users),
        "all_running": all_running,
        "cpu_floor": cpu_floor,
        "work_until_all_running": reporting.work_until_all_running(
            users, samples, report["machine"]["cpus"], (report_single or {}).get("cpu_per_start")),
        "idle": reporting.resources(samples, (0, idle_end)),
        "load": reporting.resources(samples, (load_start, load_end + 2 * args.interval)),
        "per_server_memory": reporting.per_server_memory(samples, sampler.server_peaks),
        "hub_files_limit": sampler.hub_files_limit,
        "hub_log": hub_log(since),
        "hub_metrics": ({"event_loop_over_1s": over_after - over_before}
                        if over_before is not None and over_after is not None else {}),
        "windows": {"idle": [0, idle_end], "load": [load_start, load_end]},
    }
    report["users"] = users
    report["samples"] = samples
    return report


async def remove_people(hub, names):
    """Hub users (their servers stop first) and their Unix accounts; a few at a time. A person who cannot
    be removed is reported, not raised: the run's report matters more than its cleanup (rerunning removes
    earlier simulated people first)."""
    limit = asyncio.Semaphore(8)

    async def one(name):
        async with limit:
            await hub.delete(name)
            await accounts.remove(name)

    results = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
    failed = [(n, r) for n, r in zip(names, results) if isinstance(r, Exception)]
    if failed:
        say(f"warning: {len(failed)} simulated people were not removed (first: {failed[0][0]}: {failed[0][1]}); "
            "the next run removes them first")


def say(line):
    print(line, file=sys.stderr, flush=True)


def main(args):
    """Run from `tljh loadtest`; returns the exit code (0: every person got through every phase)."""
    if args.users < 1 or args.ramp < 0 or args.session < 0 or args.single < 0 or args.interval <= 0:
        print("tljh loadtest: --users must be at least 1; --ramp, --session, --single at least 0", file=sys.stderr)
        return 2
    try:
        for p in args.profile:
            Profile.parse(p)
    except ValueError as e:
        print(f"tljh loadtest: {e}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(execute(args))
    except Refused as e:
        print(f"tljh loadtest: {e}", file=sys.stderr)
        return 2
    from tljh.system.files import write_atomic

    write_atomic(args.json, json.dumps(report, indent=1), mode=0o644)
    print("\n".join(reporting.text(report)))
    print(f"report: {os.path.abspath(args.json)}")
    if args.png != "none":
        from .plot import render

        problem = render(args.json, args.png)
        print(f"timeline: {os.path.abspath(args.png)}" if problem is None else f"timeline: not drawn ({problem})")
    phases = report["results"]["phases"]
    return 0 if all(phases[p]["failed"] == 0 for p in phases if "failed" in phases[p]) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tljh.loadtest.run")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
