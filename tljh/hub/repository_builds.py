"""Users' builds from a repository, as the hub runs them: look the commit up, use its build or build it once
for everyone who asks, and show the build's log on each waiting person's spawn page.

One :class:`RepositoryBuilds` per hub process. Builds run one at a time in a thread of their own (the builder
holds the environments' lock anyway, and a build is mostly subprocesses in sandboxed units), so a long build
never takes the threads the hub needs for anything else. Two people asking for the same commit share one
build: the second follows the first's log from its beginning. A commit built before starts at once (a stat
and a small JSON read; no fetch, no lock). What a build is, and where it lives: tljh.environments.user_builds.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor

from tornado import web

from tljh.environments import store, user_builds
from tljh.environments.builder import Builder, Outcome, state_of
from tljh.environments.repository import RepositoryError
from tljh.environments.spec import server_packages
from tljh.system import files
from tljh.system.apt import AptError


# Builder lines that are not about this build: the disk budget names the builds it removed (other users'
# repositories): not for the person waiting on the spawn page (admins see them in the journal and `tljh env`).
PRIVATE_LINES = ("disk budget:",)


def spawn_error(status: int, message: str) -> web.HTTPError:
    """An error the spawn page and the REST API show as it is (JupyterHub passes HTTPErrors through, and shows
    ``jupyterhub_message`` on the spawn-pending page once a spawn failed)."""
    error = web.HTTPError(status, message.replace("%", "%%"))
    error.jupyterhub_message = message
    return error


class BuildLog:
    """Lines for people who wait: each follower gets every line from the first, then new ones as they come."""

    def __init__(self):
        self.lines: list[str] = []
        self.done = False
        self._changed = asyncio.Event()

    def add(self, line: str) -> None:
        self.lines.append(line)
        self._notify()

    def finish(self) -> None:
        self.done = True
        self._notify()

    def _notify(self):
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self):
        seen = 0
        while True:
            while seen < len(self.lines):
                seen += 1
                yield self.lines[seen - 1]
            if self.done:
                return
            await self._changed.wait()


class _SharedBuild:
    def __init__(self, spec):
        self.spec = spec
        self.log = BuildLog()
        self.task: asyncio.Task | None = None


class RepositoryBuilds:
    """``pm``: the plugin manager (plugins' server packages go into every build); ``packages``: instead of
    the server packages (tests build with fewer)."""

    def __init__(self, make_builder=Builder, lookup_sandbox=user_builds.lookup_sandbox, pm=None, packages=None):
        self.make_builder = make_builder
        self.lookup_sandbox = lookup_sandbox
        self.pm = pm
        self.packages = packages
        self._building: dict[str, _SharedBuild] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tljh-user-build")

    async def environment_for(self, url: str, ref: str | None, user: str, progress: BuildLog,
                              allow_unsupported=False) -> str:
        """The environment name of ``url`` at ``ref``'s commit, built first if needed. Raises an HTTPError with
        the reason (unreachable, private, unknown ref, failed build) for the person's page."""
        progress.add(f"Looking up {url}" + (f" at {ref}" if ref else ""))
        try:
            commit = await asyncio.to_thread(user_builds.resolve, url, ref, self.lookup_sandbox())
        except (RepositoryError, AptError) as e:
            raise spawn_error(400, str(e)) from None
        packages = self.packages if self.packages is not None else server_packages(self.pm)
        spec = user_builds.spec_for(url, commit, packages, allow_unsupported)
        progress.add(f"Commit {commit}")
        shared = self._building.get(spec.name)
        if shared is None and state_of(spec)[0] == "up to date":
            progress.add("This commit is built already: starting your server in it")
            await asyncio.to_thread(user_builds.record_use, spec.name, user, url=spec.repository, commit=commit)
            return spec.name
        if shared is None:
            shared = self._start(spec, user)
        else:
            progress.add("Someone else asked for this commit a moment ago: following their build")
        async for line in shared.log.follow():
            progress.add(line)
        outcome = await asyncio.shield(shared.task)
        if outcome.state == "failed":
            raise spawn_error(500, f"The build of {url} at {commit[:12]} failed: {outcome.message}")
        if outcome.state == "up to date":
            progress.add("This commit is built already: starting your server in it")
        await asyncio.to_thread(user_builds.record_use, spec.name, user, url=spec.repository, commit=commit)
        return spec.name

    def building(self) -> list[str]:
        """Names of the builds running or waiting in this hub."""
        return list(self._building)

    def _start(self, spec, user) -> _SharedBuild:
        shared = _SharedBuild(spec)
        self._building[spec.name] = shared
        shared.log.add("Building the environment (later starts of this commit will not wait)")
        shared.task = asyncio.ensure_future(self._build(shared, user))
        return shared

    async def _build(self, shared: _SharedBuild, user: str) -> Outcome:
        spec, log = shared.spec, shared.log
        loop = asyncio.get_running_loop()

        def out(line):
            if line.startswith(PRIVATE_LINES):
                return  # about other people's builds
            loop.call_soon_threadsafe(log.add, readable(line, spec.name))

        try:
            builder = self.make_builder(out=out, make_sandbox=user_builds.confined(spec.name))
            outcome = await loop.run_in_executor(self._executor, functools.partial(_build_when_free, builder, spec, out))
            outcome.message = readable(outcome.message, spec.name)
            if outcome.state == "built":
                await asyncio.to_thread(user_builds.record_use, spec.name, user, url=spec.repository,
                                        commit=spec.ref, built=True)
        except Exception as e:  # the builder reports failures as outcomes: anything else is a bug, said as one
            outcome = Outcome(spec.name, "failed", f"the build stopped unexpectedly: {e}")
        finally:
            del self._building[spec.name]
        # The build's lines reach the loop before this (call_soon_threadsafe keeps their order).
        await asyncio.to_thread(_keep_log, spec.name, log.lines, outcome)
        log.finish()
        return outcome


def _build_when_free(builder, spec, out) -> Outcome:
    """The builder waits for any other build (an admin's `tljh env build`, the installer): say so first."""
    with store.environments_lock(wait=False) as free:
        pass
    if not free:
        out("Waiting for another build on this server to finish first")
    return builder.build(spec)


def readable(line: str, name: str) -> str:
    """A builder line without the build's long name (the person knows which repository they asked for), and
    the admin's settings it names for an admin's environment replaced by those of users' builds."""
    line = line.replace(f"set environments.{name}.allow_unsupported true", "an admin can set builds.allow_unsupported true")
    line = line.replace(f"not in environments.{name}.allow_apt", "OS packages are not installed for users' builds")
    # In a path (uv's "environment at: .../.builder/<name>") or a unit's name ("tljh-env-bytecode-<name>:*", in
    # the line saying the bytecode is compiled in the background) the name stays: it is where the build is.
    return re.sub(rf"(?<![/-]){re.escape(name)}", "the environment", line.replace(f"{name}: ", ""))


def _keep_log(name, lines, outcome) -> None:
    """The last build's log, for admins (root-only, next to its usage record)."""
    try:
        os.makedirs(os.path.dirname(user_builds.usage_path(name)), mode=0o700, exist_ok=True)
        files.write_atomic(user_builds.log_path(name), "\n".join([*lines, f"[{outcome.state}] {outcome.message}"]) + "\n")
    except OSError:
        pass
