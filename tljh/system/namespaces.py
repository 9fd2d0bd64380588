"""Mount namespaces: which builds running servers still see, and acting on the host's view.

Each user server runs in its own mount namespace in which the environments' directories are bind mounts of
the builds that were current when it started (see tljh.environments.serving).
"""

from __future__ import annotations

import os
import sys


def _namespace(pid) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def in_host_mount_namespace() -> bool:
    """True unless this process runs in a mount namespace other than PID 1's (e.g. in a user's server)."""
    init = _namespace(1)
    return init is None or init == _namespace("self")


def reexec_in_host_mount_namespace() -> None:
    """As root inside a user's server (an admin's terminal), run this same command again in PID 1's mount
    namespace, so it sees and changes the host's environments and not the server's pinned view."""
    if os.geteuid() != 0 or in_host_mount_namespace():
        return
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    os.execvp("nsenter", ["nsenter", "--mount=/proc/1/ns/mnt", "--", *argv])


def mount_roots(skip_cgroups=()) -> set[str]:
    """The source directory (mountinfo's 'root' field) of every mount in every mount namespace, except those
    of processes whose cgroup path contains one of ``skip_cgroups`` (e.g. a unit name's prefix).

    One process per distinct namespace is read. A path is relative to its filesystem's root, so callers
    match on a suffix. Renamed directories show their current name.
    """
    seen, roots = set(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        ns = _namespace(entry)
        if ns is None or ns in seen or (skip_cgroups and _in_cgroups(entry, skip_cgroups)):
            continue
        seen.add(ns)
        try:
            with open(f"/proc/{entry}/mountinfo") as f:
                for line in f:
                    fields = line.split(" ", 5)
                    if len(fields) > 4:
                        roots.add(_unescape(fields[3]))
        except OSError:
            seen.discard(ns)  # the process ended: read the namespace through another one
    return roots


def _in_cgroups(pid, parts) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return False
    return any(part in text for part in parts)


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return path.encode().decode("unicode_escape") if "\\" in path else path
