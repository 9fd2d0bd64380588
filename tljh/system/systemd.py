"""systemd primitives for the installer: unit files and systemctl."""

import os
import subprocess

UNIT_DIR = "/etc/systemd/system"


def write_unit(name, content, unit_dir=UNIT_DIR):
    """Install unit file ``name`` atomically. Returns True if its content changed."""
    path = os.path.join(unit_dir, name)
    try:
        with open(path) as f:
            if f.read() == content:
                return False
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def systemctl(*args, check=True):
    return subprocess.run(["systemctl", *args], check=check, capture_output=True, text=True)


def daemon_reload():
    systemctl("daemon-reload")


def enable(unit):
    systemctl("enable", unit)


def needs_daemon_reload(unit):
    """True if the unit's file changed on disk since systemd loaded it."""
    return systemctl("show", "--property=NeedDaemonReload", "--value", unit, check=False).stdout.strip() == "yes"


def is_active(unit):
    return systemctl("is-active", "--quiet", unit, check=False).returncode == 0


def restart(unit):
    systemctl("restart", unit)


def start(unit):
    systemctl("start", unit)


def stop(unit):
    systemctl("stop", unit)


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


def journal_since(unit, since):
    """What ``unit`` logged since ``since`` (a time.time()); empty if the journal cannot be read."""
    try:
        return _journal(unit, "--since", f"@{int(since)}", timeout=15)
    except (OSError, subprocess.SubprocessError):
        return ""
