"""Removing the hub from a server: ``sudo tljh uninstall [--purge]``.

Without ``--purge`` it keeps what people made: users' Unix accounts and homes stay, and config + state
(hub database, passwords, certificates) are saved to a root-only archive first. A reinstall afterwards
finds the homes again. ``--purge`` removes the accounts, homes and groups too and keeps no backup — only those
the hub's account table (tljh.system.unix_accounts) says the hub made or adopted: another ``jupyter-*``
account, or a group the hub did not create, stays.
"""

import os
import pwd
import shutil
import subprocess
import tarfile
import time

from tljh.hub import isolation, server_extensions
from tljh.system import files, paths, port_rules, systemd, unix_accounts, users
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


def hub_accounts():
    """(accounts, groups) the hub made: existing accounts in its table, and the groups it created."""
    if not os.path.exists(paths.UNIX_ACCOUNTS_DB):
        return [], []
    table = unix_accounts.AccountTable()
    try:
        return [a for a in table.owned_accounts() if users.user_exists(a)], table.created_groups()
    finally:
        table.close()


def user_server_units(accounts):
    """Transient units of users' servers: units named jupyter-* that run as one of the hub's accounts."""
    owners = set(accounts) | {str(pwd.getpwnam(a).pw_uid) for a in accounts}
    return [unit for unit in systemd.list_units("jupyter-*") if systemd.property_of(unit, "User") in owners]


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
    accounts, groups = hub_accounts()  # read before the state directory goes
    servers = user_server_units(accounts) + systemd.list_units("tljh-env-*")  # users' servers, environment builds
    for unit in servers + units:
        systemd.stop(unit, check=False)
    say(f"stopped {', '.join(servers + units)}")
    try:
        if port_rules.remove():
            say(f"removed the nftables table {port_rules.TABLE}")
    except port_rules.Unsupported as e:
        say(f"could not remove the nftables table {port_rules.TABLE}: {e}")
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
    for path, marker in ((paths.IPYTHON_KERNEL_CONFIG, isolation.KERNEL_CONFIG_MARKER),
                         (paths.JUPYTER_SERVER_CONFIG, server_extensions.SERVER_CONFIG_MARKER)):
        if files.read_bytes(path).startswith(marker.encode()):  # not an admin's
            os.remove(path)
            system_files.append(path)
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
        for name in accounts:
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        groups = [g for g in groups if users.group_exists(g)]
        for group in groups:
            subprocess.run(["groupdel", group], capture_output=True)
        say(f"removed Unix accounts and homes: {', '.join(accounts) or 'none'}; groups: {', '.join(groups) or 'none'}")
    else:
        say(f"kept {len(accounts)} users' homes and Unix accounts")
