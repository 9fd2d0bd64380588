"""systemd primitives: the one wrapper around systemctl and journalctl, and the units the installer writes.

Everything in tljh that asks systemd something or tells it to do something comes through here.
"""

from __future__ import annotations

import os
import subprocess
from importlib import resources

from . import files, paths
from .paths import INSTALL_PREFIX, UNIT_DIR

# A systemctl call that takes longer than this is stuck (a unit's own start/stop timeouts are shorter).
SYSTEMCTL_TIMEOUT = 120


def systemctl(*args, check=True, timeout=SYSTEMCTL_TIMEOUT):
    """Run ``systemctl ARGS``; a CompletedProcess (text). ``check``: raise CalledProcessError on failure.

    With ``check=False`` it never raises: a missing or stuck systemctl is returned as exit status 127.
    """
    try:
        return subprocess.run(["systemctl", *args], check=check, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise
        return subprocess.CompletedProcess(["systemctl", *args], 127, "", str(e))


def daemon_reload():
    systemctl("daemon-reload")


def enable(unit):
    systemctl("enable", unit)


def disable(unit):
    """Disable ``unit`` if it is enabled; never raises."""
    return systemctl("disable", unit, check=False)


def is_enabled(unit):
    """What ``systemctl is-enabled`` says (exit status 0: enabled, static, alias, ...)."""
    return systemctl("is-enabled", "--quiet", unit, check=False).returncode == 0


def needs_daemon_reload(unit):
    """True if the unit's file changed on disk since systemd loaded it."""
    return systemctl("show", "--property=NeedDaemonReload", "--value", unit, check=False).stdout.strip() == "yes"


def is_active(unit):
    return systemctl("is-active", "--quiet", unit, check=False).returncode == 0


def state(unit):
    """systemd's word for the unit's state: active, activating, failed, inactive, ... ('' if unknown)."""
    return systemctl("is-active", unit, check=False).stdout.strip()


def active_seconds(unit):
    """How long ``unit`` has been active, in seconds (None if it is not active).

    From its monotonic activation time and /proc/uptime (the same clock), so the host's time zone and wall-clock
    changes do not matter."""
    result = systemctl("show", "--property=ActiveState,ActiveEnterTimestampMonotonic", unit, check=False)
    values = dict(line.partition("=")[::2] for line in result.stdout.splitlines() if "=" in line)
    if values.get("ActiveState") != "active" or not values.get("ActiveEnterTimestampMonotonic", "0").isdigit():
        return None
    try:
        with open("/proc/uptime") as f:
            now = float(f.read().split()[0])
    except OSError:
        return None
    return max(0.0, now - int(values["ActiveEnterTimestampMonotonic"]) / 1e6)


def restart(unit, check=True):
    return systemctl("restart", unit, check=check)


def stop(unit, check=True):
    return systemctl("stop", unit, check=check)


def list_units(pattern):
    """Names of the service units matching ``pattern`` (loaded, in any state)."""
    result = systemctl(
        "list-units", "--type=service", "--all", "--plain", "--no-legend", "--no-pager", pattern, check=False
    )
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


_SELF_CONNECT = (
    "import socket\n"
    "server = socket.create_server(('127.0.0.1', 0))\n"
    "client = socket.socket(); client.settimeout(2)\n"
    "try:\n"
    "    client.connect(server.getsockname()); print('connected')\n"
    "except OSError:\n"
    "    print('blocked')\n"
)


def ip_address_deny_enforced(python="/usr/bin/python3"):
    """Whether systemd enforces IPAddressDeny= here (it needs cgroup BPF, and silently ignores the setting
    without it: some containers, old kernels). A throwaway unit denied 127.0.0.0/8 connects to itself."""
    result = subprocess.run(
        ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--property=IPAddressDeny=127.0.0.0/8",
         "--property=DynamicUser=yes", python, "-c", _SELF_CONNECT],
        capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    return result.stdout.strip() == "blocked"


def property_of(unit, name):
    """One systemd property of ``unit`` (blocking: for the installer and the CLI)."""
    return systemctl("show", f"--property={name}", "--value", unit, check=False).stdout.strip()


def killed_for_memory(result: str, main_status: str) -> bool:
    """Whether a unit with a memory limit that stopped with ``Result`` and ``ExecMainStatus`` was stopped for
    using too much. On cgroup v2 systemd says so (oom-kill); on v1 the kernel's SIGKILL is all there is: the
    main process killed (signal 9), or a shell whose child was (exit status 128 + 9)."""
    result, main_status = result.strip(), main_status.strip()
    return result == "oom-kill" or (result == "signal" and main_status == "9") or (
        result == "exit-code" and main_status == "137"
    )


async def systemctl_output(*args):
    """(exit status, standard output) of ``systemctl ARGS``, without blocking the event loop (for the hub)."""
    import asyncio  # only the hub process needs it

    proc = await asyncio.create_subprocess_exec(
        "systemctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def properties(unit, *names):
    """{name: value} of systemd properties of ``unit``, without blocking the event loop (for the hub)."""
    _, out = await systemctl_output("show", "--property=" + ",".join(names), unit)
    values = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    return {name: values.get(name, "") for name in names}


def _journal(unit, *selection, timeout=None):
    result = subprocess.run(
        ["journalctl", "--unit", unit, "--no-pager", "--output", "cat", *selection],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.stdout


def journal_tail(unit, lines=20):
    """The last log lines of ``unit``, to show an admin why it failed."""
    return _journal(unit, "--lines", str(lines)).strip()


def journal_since(unit, since, lines=None):
    """What ``unit`` logged since ``since`` (a time.time()), the last ``lines`` of it if given; empty if the
    journal cannot be read."""
    selection = ["--since", f"@{int(since)}"] + (["--lines", str(lines)] if lines else [])
    try:
        return _journal(unit, *selection, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return ""


def unit_content(unit, prefix=INSTALL_PREFIX, jupyterhub_config=None):
    """The unit file the installer writes for ``unit``: tljh/systemd-units/<unit> with the install prefix, the
    path of the hub's configuration file and the proxy's facts (tljh.system.paths) filled in."""
    template = resources.files("tljh").joinpath("systemd-units", unit).read_text()
    if jupyterhub_config is None:
        jupyterhub_config = str(resources.files("tljh").joinpath("jupyterhub_config.py"))
    facts = {
        "{install_prefix}": prefix,
        "{jupyterhub_config}": jupyterhub_config,
        # the proxy's config file moves with the prefix, like the rest of the state
        "{proxy_config_file}": paths.PROXY_CONFIG_FILE.replace(paths.INSTALL_PREFIX, prefix, 1),
        "{proxy_user}": paths.PROXY_USER,
        "{proxy_group}": paths.PROXY_GROUP,
        "{proxy_state_directory}": paths.PROXY_STATE_DIRECTORY,
        "{proxy_data_dir}": paths.PROXY_DATA_DIR,
        "{proxy_admin_socket}": paths.PROXY_ADMIN_SOCKET,
        "{proxy_unit}": paths.PROXY_UNIT,
        "{proxy_admin_unit}": paths.PROXY_ADMIN_UNIT,
    }
    for placeholder, value in facts.items():
        template = template.replace(placeholder, value)
    return template


def write_unit(name, content, unit_dir=UNIT_DIR):
    """Install unit file ``name`` atomically. Returns True if its content changed."""
    path = os.path.join(unit_dir, name)
    if files.read_bytes(path) == content.encode():
        return False
    files.write_atomic(path, content, mode=0o644)
    return True
