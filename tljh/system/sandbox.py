"""Running a build's commands without root: as the ``tljh-builder`` system user, in a transient systemd unit
that can write only the directories the build needs.

Package builds run code from the packages (sdist build backends) and talk to the network. In the unit they
cannot write the system, the hub's environment or its cache, cannot read the configuration, the state or
anyone's home, and cannot gain privileges. Each command gets a unit of its own, named after what it builds
(``tljh-env-build-data:<id>``), so a later run can stop what a killed run left behind. Not one fixed name: systemd
frees a name only once it has removed the finished unit's cgroup, which can take long or never happen (seen in
test machines, whose cgroups systemd cannot remove), and a second unit of the name is refused.
"""

from __future__ import annotations

import math
import os
import pwd
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field

from . import paths, systemd

# Variables a build passes on from whoever started it: proxies and certificate settings an admin may need.
PASSED_VARIABLES = (
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL",
)


# A command still running at its time limit is sent SIGTERM, then SIGKILL this many seconds later (systemd's
# default, 90 s, would let a build that ignores SIGTERM run well past its limit).
STOP_GRACE_SECONDS = 10


@dataclass(frozen=True)
class Limits:
    """What a sandboxed command may use: ``memory`` bytes (RAM, no swap) and the time until ``deadline``
    (time.monotonic()), which commands of one build share; ``seconds`` is that budget, for the message."""

    memory: int | None = None
    seconds: int | None = None
    deadline: float | None = None

    @classmethod
    def starting_now(cls, memory=None, seconds=None) -> "Limits":
        return cls(memory, seconds, time.monotonic() + seconds if seconds else None)

    def remaining(self) -> int | None:
        """Whole seconds left (at least 0), None without a time limit."""
        return None if self.deadline is None else max(0, math.ceil(self.deadline - time.monotonic()))

    def describe_memory(self) -> str:
        size = self.memory or 0
        return f"{size // 2**30}G" if size % 2**30 == 0 else f"{math.ceil(size / 2**20)}M"


class LimitExceeded(Exception):
    """A sandboxed command was stopped by its limit: ``kind`` "time" or "memory". The message says which,
    plainly; ``lines`` is what the command printed."""

    def __init__(self, kind, message, lines=()):
        super().__init__(message)
        self.kind = kind
        self.lines = list(lines)


@dataclass
class Result:
    returncode: int
    lines: list[str] = field(default_factory=list)

    def tail(self, n=15) -> str:
        return "\n".join(self.lines[-n:])


class Sandbox:
    """Run commands as ``user``, each in a transient unit ``<unit>:<id>``, writing only ``writable`` (and reading
    ``readable`` even inside homes); ``properties``: more unit properties (e.g. a lower priority); ``limits``:
    the memory and time its commands may use (Limits; none if not given)."""

    def __init__(self, unit: str, writable, readable=(), env=None, user=paths.BUILDER_USER, properties=None,
                 limits=None):
        self.unit = unit
        self.writable = [os.path.abspath(p) for p in writable]
        self.readable = [os.path.abspath(p) for p in readable]
        self.env = dict(env or {})
        self.user = user
        self.properties = dict(properties or {})
        self.limits = limits or Limits()

    def command(self, argv, cwd="/", wait=True, unit=None) -> list[str]:
        props = {
            "User": self.user,
            "Group": self.user,
            "UMask": "0022",
            "WorkingDirectory": cwd,
            "ProtectSystem": "strict",
            "ProtectHome": "tmpfs",
            "PrivateTmp": "yes",
            "PrivateDevices": "yes",
            "NoNewPrivileges": "yes",
            "RestrictSUIDSGID": "yes",
            "ProtectKernelTunables": "yes",
            "ProtectKernelModules": "yes",
            "ProtectControlGroups": "yes",
            "ReadWritePaths": " ".join(self.writable),
            "InaccessiblePaths": f"-{paths.CONFIG_DIR} -{paths.STATE_DIR}",
        }
        if self.readable:
            props["BindReadOnlyPaths"] = " ".join(self.readable)
        props.update(self.properties)
        if self.limits.memory:
            # No swap: past its limit a build stops at once with a clear reason instead of crawling.
            props.update(MemoryMax=str(self.limits.memory), MemorySwapMax="0")
        remaining = self.limits.remaining()
        if remaining is not None:
            props.update(RuntimeMaxSec=str(max(1, remaining)), TimeoutStopSec=str(STOP_GRACE_SECONDS))
        unit = unit or self._unit_name()
        if wait:
            # No --collect: a unit that failed stays loaded until run() has read why (Result), then reset-failed
            # unloads it; one that succeeded is unloaded by systemd as usual.
            cmd = ["systemd-run", "--quiet", "--wait", "--pipe", "--service-type=exec", f"--unit={unit}"]
        else:  # started in the background: nobody waits to read its result
            cmd = ["systemd-run", "--quiet", "--collect", "--service-type=exec", f"--unit={unit}"]
        cmd += [f"--property={k}={v}" for k, v in props.items()]
        env = {k: os.environ[k] for k in PASSED_VARIABLES if k in os.environ}
        env.update(self.env)
        env.setdefault("HOME", "/nonexistent")
        cmd += [f"--setenv={k}={v}" for k, v in sorted(env.items())]
        return [*cmd, "--", *argv]

    def _unit_name(self) -> str:
        return f"{self.unit}:{secrets.token_hex(4)}"  # ':' never occurs in the names units are made from

    def run(self, argv, on_line=None, cwd="/") -> Result:
        """Run ``argv`` in ``cwd``; every line it prints goes to ``on_line`` as it comes. Raises LimitExceeded
        if the command was stopped by its time or memory limit (only then)."""
        self._check_time()
        unit = self._unit_name()
        result = _stream(self.command(argv, cwd, unit=unit), None, on_line)
        if result.returncode != 0:
            # systemd-run exits 1 whatever stopped the unit: the unit's Result says whether a limit did.
            values = dict(
                line.partition("=")[::2]
                for line in systemd.systemctl("show", "--property=Result,ExecMainStatus", unit, check=False)
                .stdout.splitlines()
            )
            systemd.systemctl("reset-failed", unit, check=False)
            self._check_stopped(values.get("Result", ""), values.get("ExecMainStatus", ""), result)
        return result

    def _check_time(self) -> None:
        if self.limits.remaining() == 0:
            raise LimitExceeded("time", f"timed out after {self.limits.seconds} s")

    def _check_stopped(self, unit_result: str, status: str, result: Result) -> None:
        if unit_result == "timeout" or (self.limits.deadline is not None and self.limits.remaining() == 0):
            raise LimitExceeded("time", f"timed out after {self.limits.seconds} s", result.lines)
        if self.limits.memory and systemd.killed_for_memory(unit_result, status):
            raise LimitExceeded("memory", f"ran out of memory (limit {self.limits.describe_memory()})", result.lines)

    def start(self, argv, cwd="/") -> bool:
        """Start ``argv`` in the background (its output goes to the journal); False if it could not start."""
        return subprocess.run(self.command(argv, cwd, wait=False), capture_output=True).returncode == 0

    def running(self) -> bool:
        """True while a command of this sandbox runs (started here or by an earlier run)."""
        result = systemd.systemctl("list-units", "--state=active,activating", "--plain", "--no-legend",
                                   f"{self.unit}:*", check=False)
        return bool(result.stdout.strip())

    def stop(self) -> None:
        """Stop what a killed earlier run may still be doing (every unit of this name's pattern)."""
        stop([self.unit])


def stop(units) -> None:
    """Stop every command run by sandboxes of the base names ``units``: two systemctl calls, however many."""
    if not _systemd_root():  # commands ran unsandboxed (Unsandboxed): they are the caller's own processes
        return
    patterns = [f"{unit}:*" for unit in units]
    systemd.systemctl("stop", *patterns, check=False)
    systemd.systemctl("reset-failed", *patterns, check=False)


class Unsandboxed(Sandbox):
    """The same interface without systemd, as the calling (non-root) user: development and unit tests. The time
    limit is kept (the command's process group is killed at the deadline); memory is not limited."""

    def run(self, argv, on_line=None, cwd="/") -> Result:
        self._check_time()
        env = {**os.environ, **self.env}
        result = _stream(list(argv), env, on_line, cwd, timeout=self.limits.remaining())
        if result.returncode != 0:
            self._check_stopped("", "", result)
        return result

    def start(self, argv, cwd="/") -> bool:
        env = {**os.environ, **self.env}
        subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        return True

    def running(self) -> bool:
        return False  # nothing records what it started: callers start again (a compile skips what is done)

    def stop(self) -> None:
        pass


def _systemd_root() -> bool:
    return os.geteuid() == 0 and os.path.isdir("/run/systemd/system")


def sandbox(unit, writable, readable=(), env=None, properties=None, limits=None) -> Sandbox:
    """A Sandbox on a systemd server run as root; as anyone else, commands already run without root."""
    if _systemd_root():
        return Sandbox(unit, writable, readable, env, properties=properties, limits=limits)
    return Unsandboxed(unit, writable, readable, env, properties=properties, limits=limits)


def owner_ids() -> tuple[int, int]:
    """(uid, gid) that sandboxed commands run as: what must own the directories they write."""
    if _systemd_root():
        entry = pwd.getpwnam(paths.BUILDER_USER)
        return entry.pw_uid, entry.pw_gid
    return os.geteuid(), os.getegid()


def _stream(cmd, env, on_line, cwd=None, timeout=None) -> Result:
    result = Result(0)
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=timeout is not None,
    )
    if timeout is not None:
        # Unsandboxed only (systemd enforces the limit of a sandboxed unit): the whole process group, as
        # systemd stops the whole unit.
        import threading

        timer = threading.Timer(timeout, lambda: _kill_group(proc))
        timer.daemon = True
        timer.start()
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            result.lines.append(line)
            if on_line:
                on_line(line)
    finally:
        proc.stdout.close()
        result.returncode = proc.wait()
        if timeout is not None:
            timer.cancel()
    return result


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
