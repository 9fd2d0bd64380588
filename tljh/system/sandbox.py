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

import os
import pwd
import secrets
import subprocess
from dataclasses import dataclass, field

from . import paths, systemd

# Variables a build passes on from whoever started it: proxies and certificate settings an admin may need.
PASSED_VARIABLES = (
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL",
)


@dataclass
class Result:
    returncode: int
    lines: list[str] = field(default_factory=list)

    def tail(self, n=15) -> str:
        return "\n".join(self.lines[-n:])


class Sandbox:
    """Run commands as ``user``, each in a transient unit ``<unit>:<id>``, writing only ``writable`` (and reading
    ``readable`` even inside homes); ``properties``: more unit properties (e.g. a lower priority)."""

    def __init__(self, unit: str, writable, readable=(), env=None, user=paths.BUILDER_USER, properties=None):
        self.unit = unit
        self.writable = [os.path.abspath(p) for p in writable]
        self.readable = [os.path.abspath(p) for p in readable]
        self.env = dict(env or {})
        self.user = user
        self.properties = dict(properties or {})

    def command(self, argv, cwd="/", wait=True) -> list[str]:
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
        unit = f"{self.unit}:{secrets.token_hex(4)}"  # ':' never occurs in the names units are made from
        cmd = ["systemd-run", "--quiet", *(["--wait", "--pipe"] if wait else []), "--collect", "--service-type=exec",
               f"--unit={unit}"]
        cmd += [f"--property={k}={v}" for k, v in props.items()]
        env = {k: os.environ[k] for k in PASSED_VARIABLES if k in os.environ}
        env.update(self.env)
        env.setdefault("HOME", "/nonexistent")
        cmd += [f"--setenv={k}={v}" for k, v in sorted(env.items())]
        return [*cmd, "--", *argv]

    def run(self, argv, on_line=None, cwd="/") -> Result:
        """Run ``argv`` in ``cwd``; every line it prints goes to ``on_line`` as it comes. Never raises."""
        return _stream(self.command(argv, cwd), None, on_line)

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
    """The same interface without systemd, as the calling (non-root) user: development and unit tests."""

    def run(self, argv, on_line=None, cwd="/") -> Result:
        env = {**os.environ, **self.env}
        return _stream(list(argv), env, on_line, cwd)

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


def sandbox(unit, writable, readable=(), env=None, properties=None) -> Sandbox:
    """A Sandbox on a systemd server run as root; as anyone else, commands already run without root."""
    if _systemd_root():
        return Sandbox(unit, writable, readable, env, properties=properties)
    return Unsandboxed(unit, writable, readable, env, properties=properties)


def owner_ids() -> tuple[int, int]:
    """(uid, gid) that sandboxed commands run as: what must own the directories they write."""
    if _systemd_root():
        entry = pwd.getpwnam(paths.BUILDER_USER)
        return entry.pw_uid, entry.pw_gid
    return os.geteuid(), os.getegid()


def _stream(cmd, env, on_line, cwd=None) -> Result:
    result = Result(0)
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            result.lines.append(line)
            if on_line:
                on_line(line)
    finally:
        proc.stdout.close()
        result.returncode = proc.wait()
    return result
