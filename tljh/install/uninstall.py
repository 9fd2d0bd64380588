"""Removing the hub from a server: ``sudo tljh uninstall [--purge]``.

Without ``--purge`` it keeps what people made: users' Unix accounts and homes stay, and config + state
(hub database, passwords, certificates) are saved to a root-only archive first. A reinstall afterwards
finds the homes again. ``--purge`` removes the accounts, homes and groups too and keeps no backup.
"""

import glob
import os
import pwd
import shutil
import subprocess
import tarfile
import time

from tljh.system import paths, systemd, users
from tljh.system.paths import (
    CACHE_DIR,
    HUB_UNIT,
    OLD_ROUTER_UNIT,
    PROFILE_SCRIPT,
    PROXY_ADMIN_UNIT,
    PROXY_UNIT,
    SUDOERS_FILE,
    UNINSTALL_BACKUP_DIR,
)

LINKS = [os.path.join(paths.COMMAND_DIR, command) for command in paths.COMMANDS]


def user_server_units():
    """Transient units of running users' servers (named after their Unix accounts)."""
    return systemd.list_units("jupyter-*")


def hub_accounts():
    return [p.pw_name for p in pwd.getpwall() if p.pw_name.startswith("jupyter-")]


def backup(now=None):
    """Archive config and state (the proxy's certificates too) to /var/backups/tljh-<time>.tar.gz (root-only).
    Returns its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    os.makedirs(UNINSTALL_BACKUP_DIR, exist_ok=True)
    target = os.path.join(UNINSTALL_BACKUP_DIR, f"tljh-{stamp}.tar.gz")
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path in (paths.CONFIG_DIR, paths.STATE_DIR, paths.PROXY_DATA_DIR):
            if os.path.exists(path):
                tar.add(path, arcname=os.path.relpath(path, "/"))
    return target


def uninstall(purge=False, say=print):
    units = [paths.BACKUP_TIMER, paths.BACKUP_UNIT, HUB_UNIT, PROXY_UNIT, PROXY_ADMIN_UNIT]
    if os.path.exists(os.path.join(paths.UNIT_DIR, OLD_ROUTER_UNIT)):  # installed by an earlier release
        units.append(OLD_ROUTER_UNIT)
    servers = user_server_units() + systemd.list_units("tljh-env-*")  # users' servers, environment builds
    for unit in servers + units:
        systemd.stop(unit, check=False)
    say(f"stopped {', '.join(servers + units)}")
    for unit in units:
        systemd.disable(unit)
        path = os.path.join(paths.UNIT_DIR, unit)
        if os.path.exists(path):
            os.remove(path)
    systemd.daemon_reload()
    say("removed the systemd units")

    if not purge:
        say(f"saved config and state to {backup()}")

    system_files = [SUDOERS_FILE, PROFILE_SCRIPT, paths.SESSIONS_TMPFILES]
    for path in LINKS + system_files:
        if os.path.lexists(path):
            os.remove(path)
    for path in (paths.INSTALL_PREFIX, CACHE_DIR, paths.PROXY_DATA_DIR, paths.RUNTIME_DIR):
        shutil.rmtree(path, ignore_errors=True)
    say(f"removed {paths.INSTALL_PREFIX}, {CACHE_DIR}, {paths.PROXY_DATA_DIR}, {paths.RUNTIME_DIR}, "
        f"{', '.join(system_files)} and {', '.join(LINKS)}")
    if users.user_exists(paths.PROXY_USER):
        subprocess.run(["userdel", paths.PROXY_USER], capture_output=True)
        if users.group_exists(paths.PROXY_GROUP):
            subprocess.run(["groupdel", paths.PROXY_GROUP], capture_output=True)
        say(f"removed the proxy's system account {paths.PROXY_USER}")
    if users.user_exists(paths.BUILDER_USER):
        subprocess.run(["userdel", paths.BUILDER_USER], capture_output=True)
        say(f"removed the system user {paths.BUILDER_USER} (it built the environments)")

    if purge:
        accounts = hub_accounts()
        for name in accounts:
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        for group in (users.USERS_GROUP, users.ADMINS_GROUP):
            if users.group_exists(group):
                subprocess.run(["groupdel", group], capture_output=True)
        say(f"removed Unix accounts and homes: {', '.join(accounts) or 'none'}; groups {users.USERS_GROUP}, {users.ADMINS_GROUP}")
    else:
        homes = sorted(glob.glob("/home/jupyter-*"))
        say(f"kept {len(homes)} users' homes and Unix accounts")
