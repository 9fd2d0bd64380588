"""``tljh local-packages``: which users still have Python packages in ``~/.local`` (a report; deletes nothing).

On The Littlest JupyterHub users could ``pip install --user`` into ``~/.local/lib/pythonX.Y/site-packages``,
where packages outlived every session and shadowed the shared environment's. Here every environment is a
virtual environment, which ignores user site-packages, and a user's pip installs into the session instead:
those old packages are never imported, they only take space. The admin decides what to remove.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
from dataclasses import dataclass

from tljh.system import users


@dataclass(frozen=True)
class LocalPackages:
    user: str
    site_packages: str
    packages: list[str]
    size: int


def find(group: str = users.USERS_GROUP) -> list[LocalPackages]:
    """Every member of ``group`` whose ``~/.local/lib/python*/site-packages`` holds a package."""
    try:
        members = set(grp.getgrnam(group).gr_mem)
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return []
    found = []
    for account in sorted(pwd.getpwall(), key=lambda a: a.pw_name):
        if account.pw_name not in members and account.pw_gid != gid:
            continue
        for site in sorted(glob.glob(os.path.join(account.pw_dir, ".local", "lib", "python*", "site-packages"))):
            names = sorted(
                os.path.basename(d).rsplit("-", 1)[0] if d.endswith(".dist-info") else os.path.basename(d)[: -len(".egg-info")]
                for d in glob.glob(os.path.join(site, "*.dist-info")) + glob.glob(os.path.join(site, "*.egg-info"))
            )
            if names:
                found.append(LocalPackages(account.pw_name, site, names, _size(site)))
    return found


def _size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def report(found: list[LocalPackages]) -> list[str]:
    if not found:
        return ["No user has packages in ~/.local/lib/python*/site-packages."]
    lines = [f"{len(found)} user(s) have packages in ~/.local that no server here imports "
             "(environments are virtual environments; user installs last one session):"]
    for entry in found:
        shown = ", ".join(entry.packages[:8]) + (f", ... ({len(entry.packages)} in all)" if len(entry.packages) > 8 else "")
        lines.append(f"  {entry.user}  {entry.size / 2**20:.1f} MB  {entry.site_packages}  {shown}")
    lines.append("Nothing was changed. To free the space of one user: sudo rm -rf <the path above>")
    return lines
