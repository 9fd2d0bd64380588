"""What a user's server needs to run from an environment: the interface the spawner uses.

A server sees every environment as it was when the server started. Its systemd unit gets a private, read-only
/opt/tljh (TemporaryFileSystem) into which everything of the real /opt/tljh is bound back, each environment's
directory bound to the build that is current at the start. systemd resolves a bind's source when the unit
starts and the mount point lives in the unit's own tmpfs, which the host never renames: when a new build is
switched in, or the environment removed, the running server keeps the build it started with — its own
environment's and those of the kernels it offers from the others. Retired builds are deleted once no mount
namespace has them (tljh.environments.store.collect).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..settings.environments import DEFAULT
from ..system import paths
from . import store
from .builder import KERNELS_SUBDIR, START_SCRIPT


class EnvironmentNotReady(Exception):
    """The environment cannot serve yet; the message is for the person waiting on the spawn page."""


@dataclass(frozen=True)
class ServerEnvironment:
    name: str
    build: str
    prefix: str  # the path the environment has inside the server: its kernels' sys.prefix
    extra_paths: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    unit_properties: dict[str, str] = field(default_factory=dict)
    start: str | None = None  # the repository's start script, which runs the server's command

    @property
    def bin_dir(self) -> str:
        return os.path.join(self.prefix, "bin")

    @property
    def python(self) -> str:
        return os.path.join(self.bin_dir, "python")

    def command(self, cmd: list[str]) -> list[str]:
        """The spawner's command with any environment's bin/ (e.g. /opt/tljh/user/bin/) swapped for this one's,
        run through the environment's start script if it has one (replacing the one an earlier start of the
        same spawner, in any environment, put in front)."""
        if cmd and is_start_script(cmd[0]):
            cmd = cmd[1:]
        cmd = retarget_command(cmd, self.bin_dir)
        return [self.start, *cmd] if self.start else cmd


def _bin_pattern():
    return re.compile("^(?:%s|%s/[^/]+)/bin(?=/|$)" % (re.escape(paths.USER_ENV_PREFIX), re.escape(paths.ENVIRONMENTS_DIR)))


def is_start_script(path) -> bool:
    """True for an environment's copy of a repository's start script (START_SCRIPT)."""
    return isinstance(path, str) and path.endswith("/" + START_SCRIPT) and is_environment_bin(os.path.dirname(path))


def is_environment_bin(path: str) -> bool:
    """True for the bin/ directory of an environment (what ServerEnvironment.extra_paths replaces)."""
    return bool(_bin_pattern().match(path)) and path.rstrip("/").endswith("/bin")


def retarget_command(cmd: list[str], bin_dir: str | None = None) -> list[str]:
    """``cmd`` with programs of an environment's bin/ taken from ``bin_dir`` (default: the default's)."""
    bin_dir = bin_dir or os.path.join(paths.USER_ENV_PREFIX, "bin")
    pattern = _bin_pattern()
    return [pattern.sub(bin_dir, c, count=1) if isinstance(c, str) and c.startswith("/") else c for c in cmd]


def server_environment(name: str, offered: list[str] | None = None) -> ServerEnvironment:
    """What a server of environment ``name`` runs from; ``offered``: the environments whose kernels every
    server lists (hub/configurer: ``UserCreatingSpawner.environment_kernels``). Raises EnvironmentNotReady."""
    prefix = paths.environment_prefix(name)
    build = store.read(prefix)
    if build is None and not (name == DEFAULT and os.path.exists(os.path.join(prefix, "bin", "python"))):
        raise EnvironmentNotReady(
            f"The environment {name!r} is not built yet. An admin builds it with: sudo tljh env build {name}"
        )
    kernels = [n for n in (offered or []) if _offers_kernel(n)]
    binds = [prefix] + [paths.environment_prefix(n) for n in kernels if n != name]
    environment = {"TLJH_ENVIRONMENT": name}
    if kernels:
        environment["JUPYTER_PATH"] = ":".join(os.path.join(paths.environment_prefix(n), KERNELS_SUBDIR) for n in kernels)
    return ServerEnvironment(
        name=name,
        build=build.build if build else store.LEGACY_BUILD,
        prefix=prefix,
        extra_paths=[os.path.join(prefix, "bin")],
        environment=environment,
        unit_properties=pinning_properties(binds),
        start=os.path.join(prefix, START_SCRIPT) if build and _has_start(build) else None,
    )


def _has_start(build) -> bool:
    return bool(((build.record.get("spec") or {}).get("repository") or {}).get("start"))


def pinning_properties(environment_prefixes: list[str]) -> dict[str, str]:
    """systemd properties giving a unit a private /opt/tljh with everything bound back as it is, and each of
    ``environment_prefixes`` bound to its current build (space-separated values: systemdspawner formats them)."""
    hidden = {os.path.normpath(paths.USER_ENV_PREFIX), os.path.normpath(paths.ENVIRONMENTS_DIR)}
    # The session layers' directory is bound back even if it does not exist yet: the spawner creates the
    # server's layer in it after this is computed, before the unit starts (systemd resolves binds then).
    entries = {os.path.join(paths.INSTALL_PREFIX, e) for e in os.listdir(paths.INSTALL_PREFIX)} | {paths.SESSIONS_DIR}
    others = []
    for path in sorted(entries):
        if os.path.normpath(path) not in hidden:
            others.append("-" + path)  # "-": fine if it disappeared meanwhile
    return {
        "TemporaryFileSystem": f"{paths.INSTALL_PREFIX}:ro",
        "BindPaths": " ".join([*others, *environment_prefixes]),
    }


def _offers_kernel(name: str) -> bool:
    return os.path.isdir(os.path.join(paths.environment_prefix(name), KERNELS_SUBDIR, "kernels", name))
